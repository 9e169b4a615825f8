"""Render the CWSAM dock from one real run, offscreen: docs/dock_train.png and docs/dock_classify.png.

The newcomer's path on the bundled demo: ``resources/demo/scene.tif`` (simulated Sentinel-1 VV/VH,
512 x 512 px) and ``resources/demo/labels.gpkg`` (four small polygons per class, text field
``landcover``) are added to an empty project with the dock open; the Fine-tune tab trains with its
defaults (vit_tiny from scratch, class field, colours, learning rate, tile size and output chosen by
the dock) for ``--minutes`` of training time; the tab is grabbed (dock_train.png); then "Classify scene
with this model" classifies the scene and the Classify tab is grabbed (dock_classify.png).

The inputs are copied to a work folder first, so the model and class map land beside the copies,
not in the repository. A few minutes on a 2-core CPU; run it with ``nice`` on a shared machine.

Usage: nice .venv/bin/python tools/screenshot_dock.py [--minutes 4] [--out docs]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
for _variable in ("PROJ_LIB", "PROJ_DATA"):  # rasterio brings its own PROJ (ENVIRONMENT.md, pitfall 7)
    os.environ.pop(_variable, None)
REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "resources" / "demo"
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def wait(app, done, timeout: float = 1800.0) -> None:
    started = time.monotonic()
    while not done():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - started > timeout:
            raise SystemExit("timed out waiting for a task")


def grab(app, dock, path: Path, width: int, height: int) -> None:
    dock.setFloating(True)  # its own size, whatever the (offscreen) main window's
    dock.resize(width, height)
    dock.show()
    for _ in range(5):
        app.processEvents()
        time.sleep(0.05)
    dock.train_panel.plot.canvas.draw()
    app.processEvents()
    if not dock.grab().save(str(path)):
        raise SystemExit(f"could not write {path}")
    print(f"wrote {path}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=4.0, help="Training time of the run (default 4)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=1000, help="dock height in px of the Classify tab")
    parser.add_argument("--train-height", type=int, default=1240,
                        help="dock height in px of the Fine-tune tab (the whole tab, plot included)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    parser.add_argument("--classify-only", action="store_true", help="write only dock_classify.png")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cwsam-screenshot-"))
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(work / "profile")
    for name in ("scene.tif", "labels.gpkg"):
        shutil.copy(DEMO / name, work / name)

    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer, QgsVectorLayer

    from qgis.PyQt.QtCore import QSettings

    for form in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):  # settings in the work profile
        QSettings.setPath(form, QSettings.Scope.UserScope, str(work / "profile"))
    app = QgsApplication([], True, str(work / "profile"))
    app.setPrefixPath("/usr", True)
    app.initQgis()
    import torch
    from qgis_interface import HeadlessInterface

    import cwsam_qgis
    from cwsam_qgis.tasks.train_task import history_lines

    torch.set_num_threads(args.threads)
    iface = HeadlessInterface()
    plugin = cwsam_qgis.classFactory(iface)
    plugin.initGui()
    while plugin.report is None:  # the load-time engine check runs in a background task
        QgsApplication.processEvents()
        time.sleep(0.02)
    plugin.show_dock(True)
    dock = plugin.dock
    train = dock.train_panel
    dock.tabs.setCurrentWidget(train)
    scene = QgsRasterLayer(str(work / "scene.tif"), "scene", "gdal")
    labels = QgsVectorLayer(f"{work / 'labels.gpkg'}|layername=labels", "labels", "ogr")
    QgsProject.instance().addMapLayers([scene, labels])
    print("class field:", train.field_combo.currentField())

    train.time_spin.setValue(args.minutes)
    if not train.start_training():
        raise SystemExit(f"training did not start: {train.last_message}")
    wait(app, lambda: train.task is None)
    outcome = train.last_outcome
    if outcome is None or outcome.result is None:
        raise SystemExit(f"training failed: {train.last_message}")
    print("Fine-tune:", train.status_label.text())
    for line in history_lines(outcome.result):
        print("  ", line)
    for note in train.notes:
        print("  note:", note)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.classify_only:
        grab(app, dock, args.out / "dock_train.png", args.width, args.train_height)

    classify = dock.classify_panel
    if dock.classify_with(str(outcome.model_path), scene.id()) is None:  # as "Classify scene with this model"
        raise SystemExit(f"classification did not start: {classify.status_label.text()}")
    wait(app, lambda: classify.task is None)
    print("Classify:", classify.status_label.text())
    print(classify.summary.toPlainText())
    grab(app, dock, args.out / "dock_classify.png", args.width, args.height)
    print(f"work files in {work}")
    plugin.unload()
    QgsProject.instance().clear()
    os._exit(0)  # never exitQgis() (ENVIRONMENT.md, pitfall 5)


if __name__ == "__main__":
    sys.exit(main())
