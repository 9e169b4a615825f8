"""Render the dock's Fine-tune tab after a short real training run to a PNG (docs/dock_train.png).

A simulated dual-pol scene (EPSG:32633) and training squares drawn from its land cover as a memory
layer in EPSG:4326 (a text field of class names) go through the real dock, task and engine
(vit_nano, a few epochs on the CPU); the tab is then grabbed offscreen.

Usage: QT_QPA_PLATFORM=offscreen .venv/bin/python tools/screenshot_train.py [output.png]
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ["QGIS_CUSTOM_CONFIG_PATH"] = tempfile.mkdtemp(prefix="cwsam-screenshot-profile-")
for _var in ("PROJ_LIB", "PROJ_DATA"):  # rasterio bundles its own PROJ
    os.environ.pop(_var, None)

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from qgis.core import (  # noqa: E402
    QgsApplication, QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsGeometry, QgsPointXY,
    QgsProject, QgsRasterLayer, QgsVectorLayer,
)

SQUARE = 16  # px side of a training square
PER_CLASS = 12


def training_squares(scene, rng) -> QgsVectorLayer:
    """Squares of uniform land cover, as a memory layer in EPSG:4326 with the class name as text."""
    layer = QgsVectorLayer("Polygon?crs=EPSG:4326&field=landcover:string", "training squares", "memory")
    to_wgs84 = QgsCoordinateTransform(QgsCoordinateReferenceSystem(scene.crs),
                                      QgsCoordinateReferenceSystem("EPSG:4326"), QgsProject.instance())
    height, width = scene.shape
    features = []
    for c in scene.classes:
        found, side = 0, SQUARE
        for attempt in range(6000):
            if attempt and attempt % 2000 == 0:
                side = max(4, side // 2)  # narrow classes (rivers, streets) need smaller squares
            row, col = int(rng.integers(0, height - side)), int(rng.integers(0, width - side))
            if not (scene.labels[row:row + side, col:col + side] == c.value).all():
                continue
            corners = [scene.transform * (x, y) for y, x in
                       ((row, col), (row, col + side), (row + side, col + side), (row + side, col))]
            feature = QgsFeature(layer.fields())
            feature.setGeometry(QgsGeometry.fromPolygonXY([[to_wgs84.transform(QgsPointXY(*p)) for p in corners]]))
            feature.setAttributes([c.name])
            features.append(feature)
            found += 1
            if found == PER_CLASS:
                break
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    return layer


def main(output: Path) -> None:
    app = QgsApplication([], True)
    app.setPrefixPath("/usr", True)
    app.initQgis()

    import numpy as np
    import torch
    from qgis.PyQt.QtCore import QEventLoop, QTimer
    from qgis.PyQt.QtGui import QColor
    from qgis_interface import HeadlessInterface

    from cwsam_core.simulate import simulate_scene, write_scene
    from cwsam_qgis.dock import CwsamDock
    from cwsam_qgis.tasks.train_task import history_lines

    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="cwsam-screenshot-"))
    scene = simulate_scene(320, 320, seed=4)
    image, _ = write_scene(scene, folder / "S1_simulated_VV_VH.tif", folder / "labels.tif")
    raster = QgsRasterLayer(str(image), "S1_simulated_VV_VH", "gdal")
    polygons = training_squares(scene, np.random.default_rng(0))
    QgsProject.instance().addMapLayers([raster, polygons])

    iface = HeadlessInterface()
    dock = CwsamDock(iface)
    panel = dock.train_panel
    dock.tabs.setCurrentWidget(panel)
    panel.raster_combo.setLayer(raster)
    panel.polygon_combo.setLayer(polygons)
    panel.field_combo.setField("landcover")
    colours = {c.name: c.color for c in scene.classes}
    for row in range(panel.class_table.rowCount()):  # the user's colours: those of the simulated classes
        panel.class_table.cellWidget(row, 4).setColor(QColor(colours[panel.class_table.item(row, 3).text()]))
    panel.backbone_combo.setCurrentIndex(panel.backbone_combo.findData("vit_nano"))
    panel.epochs_spin.setValue(8)
    panel.steps_spin.setValue(20)
    panel.batch_spin.setValue(4)
    panel.lr_spin.setValue(0.01)
    panel.val_spin.setValue(0.25)
    panel.tile_spin.setValue(64)
    panel.device_combo.setCurrentText("cpu")
    panel.output_widget.setFilePath(str(folder / "simulated.cwsam.pt"))

    loop = QEventLoop()
    panel.training_finished.connect(lambda _: loop.quit())
    QTimer.singleShot(600_000, loop.quit)
    if not panel.start_training():
        raise SystemExit(f"training did not start: {panel.last_message}")
    loop.exec_()
    if panel.last_outcome is None or panel.last_outcome.result is None:
        raise SystemExit(f"training failed: {panel.last_message}")
    print(panel.last_message)
    for line in history_lines(panel.last_outcome.result):
        print(line)

    dock.resize(480, 1180)
    dock.show()
    app.processEvents()
    panel.plot.canvas.draw()
    app.processEvents()
    output.parent.mkdir(parents=True, exist_ok=True)
    if not dock.grab().save(str(output)):
        raise SystemExit(f"could not write {output}")
    print(f"wrote {output}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "docs" / "dock_train.png")
