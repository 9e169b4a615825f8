"""The jobs the worker process runs for the QGIS plugin: each one calls the engine function the command line
calls, with arguments read from JSON (``common.plain`` data) and a result written back the same way.

A job is ``job(args, progress, should_cancel) -> result``. Each imports what it needs when it runs, so a
worker of the light install (no PyTorch) classifies ONNX exports and checks the environment.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from ..common.card import ClassInfo

Progress = Callable[..., None]
ShouldCancel = Callable[[], bool]

# What the engine imports, and the pip requirement of each (the Setup tab's check).
ENGINE_MODULES = ("torch", "torchvision", "segment_anything", "onnxruntime", "rasterio", "pyogrio", "shapely",
                  "numpy", "cwsam_core")


def _optional_path(value: Optional[str]) -> Optional[Path]:
    return Path(value) if value else None


def check(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Dict[str, Any]:
    """Which engine modules import in this environment (module -> one-line error for those that do not), their
    versions, and where models would run."""
    missing: Dict[str, str] = {}
    versions: Dict[str, str] = {}
    for name in args.get("modules") or ENGINE_MODULES:
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - a broken install (DLL, ABI) counts as missing
            missing[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        else:
            versions[name] = str(getattr(module, "__version__", ""))
    report: Dict[str, Any] = {"missing": missing, "versions": versions, "python": sys.version.split()[0],
                              "executable": sys.executable, "device": None, "onnx": None}
    if "torch" not in missing:
        from ..engine.devices import describe_device  # torch: only where the check found it

        device, reason = describe_device(args.get("device") or "auto")
        report["device"] = f"Runs on {reason}" if device is not None else f"Cannot run: {reason}"
    if "onnxruntime" not in missing:
        import onnxruntime

        names = {"CUDAExecutionProvider": "CUDA GPU", "CPUExecutionProvider": "CPU"}
        places = [names[p] for p in onnxruntime.get_available_providers() if p in names]
        report["onnx"] = (f"ONNX models run with ONNX Runtime {onnxruntime.__version__} on: "
                          f"{', '.join(places) or 'nothing usable'}")
    return report


def fit(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Dict[str, Any]:
    """How a raster would be read for a model: its bands, the scale its values look like, the bands used
    (``radiometry.SarReader`` on a small sample, as classification reads it), notes, or the problem."""
    import rasterio

    from ..errors import RadiometryError
    from ..model.card_reader import read_card
    from ..raster.radiometry import SarReader

    answer: Dict[str, Any] = {"count": 0, "descriptions": [], "dtype": "", "source_scale": None,
                              "band_indexes": None, "notes": [], "problem": None}
    with rasterio.open(args["raster"]) as dataset:
        answer.update(count=dataset.count, descriptions=list(dataset.descriptions), dtype=dataset.dtypes[0])
        if not args.get("model"):
            return answer
        card = read_card(args["model"])
        notes: List[str] = []
        try:
            reader = SarReader(dataset, card.bands, card.input_scale, input_scale=args.get("input_scale") or "auto",
                               band_indexes=args.get("band_indexes"),
                               normalization=card.normalization or {"mean": [0, 0, 0], "std": [1, 1, 1]},
                               sample_pixels=int(args.get("sample_pixels") or 200_000), warn=notes.append)
        except RadiometryError as exc:
            answer["problem"] = str(exc)
        else:
            answer.update(source_scale=reader.source_scale, band_indexes=list(reader.band_indexes), notes=notes)
    return answer


def classify(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Any:
    """``engine.inference.classify_file`` with the plugin's options (``args``: the request's fields)."""
    from ..engine.inference import classify_file

    bounds = args.get("bounds")
    return classify_file(
        args["input"], args["output"], args["model"], sam_checkpoint=_optional_path(args.get("sam_checkpoint")),
        tile_size=args.get("tile_size"), device=args.get("device") or "auto",
        confidence_path=_optional_path(args.get("confidence")), overlap=float(args.get("overlap", 0.25)),
        batch_size=args.get("batch_size"), input_scale=args.get("input_scale") or "auto",
        band_indexes=args.get("band_indexes"), bounds=tuple(bounds) if bounds else None,
        progress=progress, should_cancel=should_cancel)


def vectorize(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Any:
    """``vector.vectorize.vectorize_file``: a class raster's polygons."""
    from ..vector.vectorize import vectorize_file

    return vectorize_file(args["class_raster"], args["output"], confidence=_optional_path(args.get("confidence")),
                          min_area=float(args.get("min_area") or 0.0), simplify=float(args.get("simplify") or 0.0),
                          progress=progress, should_cancel=should_cancel)


def train(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Any:
    """``training.loop.train``: ``args`` holds the sources' fields and the ``TrainConfig`` (as plain data)."""
    from ..training.config import TrainConfig
    from ..training.datasets import TrainingSource
    from ..training.loop import train as run  # torch: training needs the full install

    def source(fields: Dict[str, Any]) -> TrainingSource:
        return TrainingSource(**{k: Path(v) if k in ("image", "labels", "polygons") and v else v
                                 for k, v in fields.items()})

    config = dict(vars(args["config"]))
    config["classes"] = [ClassInfo(**vars(c)) for c in config["classes"]]
    config["replay_extra"] = [source(vars(s)) for s in config.get("replay_extra") or []]
    return run([source(s) for s in args["sources"]], TrainConfig(**config), resume=bool(args.get("resume")),
               progress=progress, should_cancel=should_cancel)


def retrain(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Any:
    """``training.retrain.retrain``: the next version of a model from correction polygons."""
    from ..training.retrain import retrain as run  # torch: training needs the full install

    options = dict(args)
    model, image, corrections, class_field = (options.pop(k) for k in ("model", "image", "corrections", "class_field"))
    return run(model, image, corrections, class_field, progress=progress, should_cancel=should_cancel, **options)


def compare(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Any:
    """``training.retrain.compare_maps``: the areas of two class maps of one scene and the pixels that changed."""
    from ..training.retrain import compare_maps  # torch: retrain's module (a review step has the full install)

    return compare_maps(args["before"], args["after"])


def evaluate(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Dict[str, Any]:
    """``training.evaluation.evaluate`` of one image and its labels: the scores and the per-class rows."""
    from ..training.evaluation import evaluate as run

    metrics, card = run(args["model"], [(Path(args["image"]), Path(args["labels"]))],
                        sam_checkpoint=_optional_path(args.get("sam_checkpoint")),
                        ignore_values=args.get("ignore_values") or (), device=args.get("device") or "auto",
                        progress=progress, band_indexes=args.get("band_indexes"),
                        input_scale=args.get("input_scale") or "auto")
    return {"miou": metrics.miou, "overall_accuracy": metrics.overall_accuracy, "fwiou": metrics.fwiou,
            "kappa": metrics.kappa, "pixels": metrics.pixels, "classes": card.classes,
            "per_class": metrics.per_class([c.value for c in card.classes], [c.name for c in card.classes])}


def change(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Any:
    """``engine.change.compare_dates``: the transitions of two class maps, or of two scenes and a model."""
    from ..engine.change import compare_dates

    return compare_dates(args["before"], args["after"], args["output"], model=_optional_path(args.get("model")),
                         sam_checkpoint=_optional_path(args.get("sam_checkpoint")),
                         device=args.get("device") or "auto", progress=progress, should_cancel=should_cancel)


def class_list(args: Dict[str, Any], progress: Progress, should_cancel: ShouldCancel) -> Dict[str, Any]:
    """The classes a class raster names (value, name, colour), for numbering new classes as it does."""
    from ..raster.class_names import read_class_list, read_class_names

    return {"classes": read_class_list(args["path"]), "where": read_class_names(args["path"])[1]}


JOBS: Dict[str, Callable[[Dict[str, Any], Progress, ShouldCancel], Any]] = {
    "check": check, "fit": fit, "classify": classify, "vectorize": vectorize, "train": train, "retrain": retrain,
    "compare": compare, "evaluate": evaluate, "class_list": class_list, "change": change,
}
