"""Render the dock's Change tab after one real comparison, offscreen: docs/dock_change.png.

The demo landscape simulated in summer and in winter (``simulate_scene(512, 512, seed=15, season=...)``, the
same place on two dates) is loaded as two SAR layers; the Change tab compares them with the bundled demo model
(*Model*: both scenes classified first), adds the transition layer and charts the hectares each class gained
and lost; the tab is grabbed. Work files go to a temporary folder.

Usage: nice .venv/bin/python tools/screenshot_change.py [--out docs]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
for _variable in ("PROJ_LIB", "PROJ_DATA"):  # rasterio brings its own PROJ (ENVIRONMENT.md, pitfall 7)
    os.environ.pop(_variable, None)
REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tools")]

from screenshot_dock import grab, wait  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs")
    parser.add_argument("--width", type=int, default=480)
    parser.add_argument("--height", type=int, default=760)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="cwsam-change-shot-"))
    os.environ["QGIS_CUSTOM_CONFIG_PATH"] = str(work / "profile")
    from qgis.core import QgsApplication, QgsProject, QgsRasterLayer
    from qgis.PyQt.QtCore import QSettings

    from cwsam_core.simulate import simulate_scene, write_scene

    for form in (QSettings.Format.NativeFormat, QSettings.Format.IniFormat):  # settings in the work profile
        QSettings.setPath(form, QSettings.Scope.UserScope, str(work / "profile"))
    app = QgsApplication([], True, str(work / "profile"))
    app.setPrefixPath("/usr", True)
    app.initQgis()
    from qgis_interface import HeadlessInterface

    import cwsam_qgis

    iface = HeadlessInterface()
    plugin = cwsam_qgis.classFactory(iface)
    plugin.initGui()
    wait(app, lambda: plugin.report is not None)  # the load-time engine check runs in a background task
    plugin.show_dock(True)
    dock = plugin.dock
    layers = []
    for season in ("summer", "winter"):
        image, _ = write_scene(simulate_scene(512, 512, seed=15, season=season), work / f"{season}.tif",
                               work / f"{season}_reference.tif")
        layers.append(QgsRasterLayer(str(image), season, "gdal"))
    QgsProject.instance().addMapLayers(layers)
    panel = dock.change_panel
    dock.tabs.setCurrentWidget(panel)
    panel.before_combo.setLayer(layers[0])
    panel.after_combo.setLayer(layers[1])
    panel.model_widget.setFilePath(str(REPO / "resources" / "demo" / "model.cwsam.pt"))
    if panel.start() is None:
        raise SystemExit(f"the comparison did not start: {panel.status_label.text()}")
    wait(app, lambda: panel.task is None)
    if panel.last_task.result is None:
        raise SystemExit(f"the comparison failed: {panel.status_label.text()}")
    panel.chart.canvas.draw()
    args.out.mkdir(parents=True, exist_ok=True)
    grab(app, dock, args.out / "dock_change.png", args.width, args.height)
    print(f"work files in {work}")
    plugin.unload()
    os._exit(0)  # never exitQgis(): it crashes at interpreter exit (ENVIRONMENT.md, pitfall 5)


if __name__ == "__main__":
    sys.exit(main())
