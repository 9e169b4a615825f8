"""ONNX models for the tests of the light install (ONNX Runtime, no PyTorch), made with the full install.

``.venv/bin/python tools/make_light_test_models.py OUT_DIR`` writes ``OUT_DIR/nano.onnx`` (the export of the
plugin tests' vit_nano model: tests/plugin_helpers.write_model) and ``OUT_DIR/demo.onnx`` (the export of the
bundled demo model). `make test-newest-qgis` runs it, then the plugin tests in a Debian sid chroot whose
environment has the light install only, with CWSAM_LIGHT_TEST_MODELS=OUT_DIR.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from plugin_helpers import DEMO_MODEL, DEMO_ONNX_NAME, LIGHT_MODEL_NAME, write_model  # noqa: E402

from cwsam_core.engine.onnx_export import export_onnx  # noqa: E402


def main(out_dir: Path) -> int:
    out_dir.mkdir(parents=True, exist_ok=True)
    nano = write_model(out_dir / "nano.cwsam.pt")
    for source, target in ((nano, out_dir / LIGHT_MODEL_NAME), (DEMO_MODEL, out_dir / DEMO_ONNX_NAME)):
        result = export_onnx(source, target)
        print(f"{result.path} ({result.path.stat().st_size / 1e6:.1f} MB) from {source.name}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
