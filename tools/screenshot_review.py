"""Render the dock's Review tab after one real round of corrections, offscreen: docs/dock_review.png.

The bundled demo model (trained on summer scenes) classifies the demo landscape simulated in winter
(``simulate_scene(512, 512, seed=15, season="winter")``), which it gets partly wrong; *Start review*
adds the correction layer, six polygons are drawn over the largest wrong regions (found from the
reference, as ``bench/bench_review_loop.py`` draws them) with the class chosen in *Class to draw*,
and *Retrain from corrections* runs with the tab's defaults for ``--minutes`` of training time. The
tab is grabbed with the new map's summary. Work files go to a temporary folder.

Usage: nice .venv/bin/python tools/screenshot_review.py [--minutes 1] [--out docs]
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
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "bench"), str(REPO / "tools")]

from screenshot_dock import grab, wait  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=1.0, help="Training time of the round (default 1)")
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=980)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a shared machine)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cwsam-review-shot-"))
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(work / "profile")
    shutil.copy(REPO / "resources" / "demo" / "model.cwsam.pt", work / "model.cwsam.pt")

    import numpy as np
    import rasterio
    import torch
    from qgis.core import QgsApplication, QgsGeometry, QgsProject, QgsRasterLayer, QgsVectorLayerUtils

    from cwsam_core.simulate import simulate_scene, write_scene

    from qgis.PyQt.QtCore import QSettings

    for form in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):  # settings in the work profile
        QSettings.setPath(form, QSettings.Scope.UserScope, str(work / "profile"))
    app = QgsApplication([], True, str(work / "profile"))
    app.setPrefixPath("/usr", True)
    app.initQgis()
    from bench_review_loop import wrong_patches
    from qgis_interface import HeadlessInterface

    import cwsam_qgis

    torch.set_num_threads(args.threads)
    winter = simulate_scene(512, 512, seed=15, season="winter")
    image, _ = write_scene(winter, work / "winter.tif", work / "winter_reference.tif")
    iface = HeadlessInterface()
    plugin = cwsam_qgis.classFactory(iface)
    plugin.initGui()
    while plugin.report is None:  # the load-time engine check runs in a background task
        QgsApplication.processEvents()
        time.sleep(0.02)
    plugin.show_dock(True)
    dock = plugin.dock
    scene = QgsRasterLayer(str(image), "winter", "gdal")
    QgsProject.instance().addMapLayer(scene)
    classify = dock.classify_panel
    classify.layer_combo.setLayer(scene)
    classify.model_widget.setFilePath(str(work / "model.cwsam.pt"))
    classify.output_widget.setFilePath(str(work / "winter_classes.tif"))
    classify.confidence_check.setChecked(False)
    classify.polygons_check.setChecked(False)
    if classify.start() is None:
        raise SystemExit(f"classification did not start: {classify.status_label.text()}")
    wait(app, lambda: classify.task is None)

    review = dock.review_panel
    dock.tabs.setCurrentWidget(review)
    corrections = review.start_review()
    with rasterio.open(work / "winter_classes.tif") as src:
        prediction = src.read(1).astype(np.int64)
    covered = np.zeros(prediction.shape, dtype=bool)
    for polygon, value in wrong_patches(prediction, winter.labels.astype(np.int64), covered, winter.transform, 6,
                                        patch=64):
        review.set_class_to_draw(value)
        feature = QgsVectorLayerUtils.createFeature(corrections, QgsGeometry.fromWkt(polygon.wkt), {},
                                                    corrections.createExpressionContext())
        corrections.addFeature(feature)
    review.time_spin.setValue(args.minutes)
    if review.retrain() is None:
        raise SystemExit(f"retraining did not start: {review.status_label.text()}")
    wait(app, lambda: review.task is None)
    print("Review:", review.status_label.text())
    print(review.summary.toPlainText())
    args.out.mkdir(parents=True, exist_ok=True)
    grab(app, dock, args.out / "dock_review.png", args.width, args.height)
    print(f"work files in {work}")
    plugin.unload()
    QgsProject.instance().clear()
    os._exit(0)  # never exitQgis() (ENVIRONMENT.md, pitfall 5)


if __name__ == "__main__":
    sys.exit(main())
