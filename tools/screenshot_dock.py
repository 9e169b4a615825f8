"""Render the CWSAM dock's Classify tab in use, offscreen, to docs/dock_classify.png.

The whole workflow on one real Sentinel-1 chip (or a simulated scene when ../shared/data is absent):
training polygons are drawn from the chip's hand labels (cells of one class, in EPSG:3857 while the
raster is in EPSG:4326), the Fine-tune tab trains a small model with them, its "Classify with this
model" hands the model to the Classify tab, which classifies the chip; the dock is grabbed then
(and after training too with --with-train; tools/screenshot_train.py makes docs/dock_train.png).
Takes one to a few minutes on a 2-core CPU.

Usage: .venv/bin/python tools/screenshot_dock.py [--out docs] [--with-train] [--raster S1.tif --labels L.tif]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
for _variable in ("PROJ_LIB", "PROJ_DATA"):  # rasterio brings its own PROJ (ENVIRONMENT.md, pitfall 7)
    os.environ.pop(_variable, None)
REPO = Path(__file__).resolve().parents[1]
CHIP = REPO.parent / "shared" / "data" / "sen1floods11_s1hand"
sys.path[:0] = [str(REPO), str(REPO / "tests")]


def wait(app, done, timeout: float = 600.0) -> None:
    started = time.monotonic()
    while not done():
        app.processEvents()
        time.sleep(0.02)
        if time.monotonic() - started > timeout:
            raise SystemExit("timed out waiting for a task")


def training_polygons(labels_path: Path, cell: int = 32, purity: float = 0.95):
    """A memory polygon layer in EPSG:3857 with one square per label cell of (almost) one class."""
    import numpy as np
    import rasterio
    from qgis.core import (
        QgsCoordinateReferenceSystem, QgsCoordinateTransform, QgsFeature, QgsField, QgsGeometry, QgsProject,
        QgsRectangle, QgsVectorLayer,
    )
    from qgis.PyQt.QtCore import QVariant

    layer = QgsVectorLayer("Polygon?crs=EPSG:3857", "training polygons", "memory")
    layer.dataProvider().addAttributes([QgsField("class", QVariant.Int)])
    layer.updateFields()
    with rasterio.open(labels_path) as src:
        labels, transform, crs = src.read(1), src.transform, src.crs.to_wkt()
    to_layer = QgsCoordinateTransform(QgsCoordinateReferenceSystem.fromWkt(crs), layer.crs(), QgsProject.instance())
    features = []
    for row in range(0, labels.shape[0] - cell + 1, cell):
        for col in range(0, labels.shape[1] - cell + 1, cell):
            values, counts = np.unique(labels[row:row + cell, col:col + cell], return_counts=True)
            best = int(values[counts.argmax()])
            if best < 0 or counts.max() < purity * cell * cell:
                continue
            x0, y0 = transform * (col, row)
            x1, y1 = transform * (col + cell, row + cell)
            geometry = QgsGeometry.fromRect(QgsRectangle(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
            geometry.transform(to_layer)
            feature = QgsFeature(layer.fields())
            feature.setGeometry(geometry)
            feature.setAttribute("class", best)
            features.append(feature)
    layer.dataProvider().addFeatures(features)
    layer.updateExtents()
    return layer


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--raster", type=Path, default=CHIP / "S1Hand" / "Pakistan_849790_S1Hand.tif")
    parser.add_argument("--labels", type=Path, default=CHIP / "LabelHand" / "Pakistan_849790_LabelHand.tif")
    parser.add_argument("--with-train", action="store_true", help="also write dock_train.png after training")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cwsam-screenshot-"))
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(work / "profile")

    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer

    app = QgsApplication([], True, str(work / "profile"))
    app.setPrefixPath("/usr", True)
    app.initQgis()
    from qgis_interface import HeadlessInterface

    real = args.raster.is_file()
    if not real:  # no real data here: a simulated dual-pol scene with its labels
        from cwsam_core.simulate import simulate_scene, write_scene

        scene = simulate_scene(384, 384, seed=3)
        args.raster, args.labels = write_scene(scene, work / "scene.tif", work / "scene_labels.tif")

    import cwsam_qgis

    iface = HeadlessInterface()
    plugin = cwsam_qgis.classFactory(iface)
    plugin.initGui()
    plugin.show_dock(True)
    dock = plugin.dock
    dock.resize(470, 900)
    raster = QgsRasterLayer(str(args.raster), args.raster.stem)
    polygons = training_polygons(args.labels)
    QgsProject.instance().addMapLayers([raster, polygons])

    train = dock.train_panel
    dock.tabs.setCurrentWidget(train)
    train.raster_combo.setLayer(raster)
    train.polygon_combo.setLayer(polygons)
    train.field_combo.setField("class")
    from qgis.PyQt.QtGui import QColor

    from cwsam_qgis.widgets.train_panel import CLASS_VALUE, COLOUR, NAME

    names = {0: ("not water", "#c8b88a"), 1: ("water", "#1f5fff")} if real else {}  # Sen1Floods11's classes
    for row in range(train.class_table.rowCount()):
        value = int(train.class_table.item(row, CLASS_VALUE).data(0))
        if value in names:
            train.class_table.item(row, NAME).setText(names[value][0])
            train.class_table.cellWidget(row, COLOUR).setColor(QColor(names[value][1]))
    train.backbone_combo.setCurrentIndex(train.backbone_combo.findData("vit_nano"))
    train.tile_spin.setValue(128)
    train.epochs_spin.setValue(6)
    train.steps_spin.setValue(15)
    train.batch_spin.setValue(8)
    train.lr_spin.setValue(1e-3)
    train.device_combo.setCurrentText("cpu")
    train.output_widget.setFilePath(str(work / "water_nano.cwsam.pt"))
    if not train.start_training():
        raise SystemExit(f"training did not start: {train.status_label.text()}")
    wait(app, lambda: train.task is None)
    print("Fine-tune:", train.status_label.text())
    args.out.mkdir(parents=True, exist_ok=True)
    if args.with_train:
        dock.grab().save(str(args.out / "dock_train.png"))

    train.offer_classification()  # as the "Classify with this model" button does
    classify = dock.classify_panel
    classify.device_combo.setCurrentText("cpu")
    classify.confidence_check.setChecked(True)
    classify.output_widget.setFilePath(str(work / f"{args.raster.stem}_classes.tif"))
    if classify.start() is None:
        raise SystemExit(f"classification did not start: {classify.status_label.text()}")
    wait(app, lambda: classify.task is None)
    print("Classify:", classify.status_label.text())
    print(classify.summary.toPlainText())
    dock.grab().save(str(args.out / "dock_classify.png"))
    print(f"wrote {args.out / 'dock_classify.png'} (work files in {work})")
    plugin.unload()
    QgsProject.instance().clear()
    os._exit(0)  # never exitQgis() (ENVIRONMENT.md, pitfall 5)


if __name__ == "__main__":
    sys.exit(main())
