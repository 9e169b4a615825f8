"""``cwsam export``: a model file as one ONNX file."""

from __future__ import annotations

import argparse

from ..errors import CheckpointError, ExportError, ModelFileError
from .common import CliError, is_model_output, refuse_to_replace, warn_unused_sam_checkpoint


def run(args: argparse.Namespace) -> int:
    from ..engine.onnx_export import export_onnx  # torch and onnx: the full install

    warn_unused_sam_checkpoint(args.model, args.sam_checkpoint)
    refuse_to_replace(args.output, "--output", is_model_output, "an ONNX export", args.overwrite,
                      [args.model, args.sam_checkpoint])
    try:
        result = export_onnx(args.model, args.output, sam_checkpoint=args.sam_checkpoint, int8=args.int8,
                             tile_size=args.tile_size)
    except (ExportError, ModelFileError, CheckpointError) as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        raise CliError("interrupted; nothing was written") from None
    export = result.export
    print(f"ONNX export written to {result.path} ({result.bytes / 2**20:.1f} MB, {export['precision']}, "
          f"{export['tile_size']} px tiles); largest logit difference to PyTorch on a test batch: "
          f"{export.get('max_abs_logit_difference_int8', export['max_abs_logit_difference']):.2g}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export", help="write a model file as one ONNX file, to classify with ONNX Runtime (no PyTorch)",
        description="Export a CWSAM model file to ONNX for one tile size, frozen SAM weights included (the file "
        "stands alone), with the model card in its metadata. `cwsam classify --model MODEL.onnx` runs it with "
        "ONNX Runtime, as do the QGIS dock and cwsam:classify.")
    parser.add_argument("model", metavar="MODEL_FILE", help="a CWSAM model file (.cwsam.pt)")
    parser.add_argument("--sam-checkpoint", help="the SAM checkpoint the model was fine-tuned from (if it needs one)")
    parser.add_argument("--output", required=True, help="ONNX file to write (.onnx)")
    parser.add_argument("--overwrite", action="store_true", help="replace a file at --output that cwsam did not write")
    parser.add_argument("--tile-size", type=int, help="the tile size the export runs at, a multiple of 16 "
                        "(default: the model's)")
    parser.add_argument("--int8", action="store_true", help="dynamic int8 quantisation of the linear layers "
                        "(smaller, faster on CPUs; class maps agree with float32 on most pixels)")
    parser.set_defaults(func=run)
