"""Render the dock's Fine-tune tab after a real training run to docs/dock_train.png.

The run is ``tools/screenshot_dock.py``'s: vit_tiny with every default of the dock on the bundled
demo scene and ``resources/demo/labels.gpkg``, for ``--minutes`` of training time. That script
writes both screenshots from one run (dock_train.png, then dock_classify.png after "Classify scene
with this model"); this one is kept for its name and passes its arguments on.

Usage: nice .venv/bin/python tools/screenshot_train.py [--minutes 4] [--out docs]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from screenshot_dock import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
