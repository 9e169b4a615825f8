"""The plugin loads the way QGIS loads it and its metadata satisfies the plugin manager."""

from __future__ import annotations

import configparser
from pathlib import Path

from plugin_helpers import wait_for_check
from qgis_interface import HeadlessInterface

REPO = Path(__file__).resolve().parents[1]
REQUIRED_FIELDS = [
    "name", "qgisMinimumVersion", "description", "about", "version", "author", "email",
    "repository", "tracker", "category", "tags", "icon", "experimental",
]


def test_metadata_has_every_required_field():
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt")
    general = parser["general"]
    for field in REQUIRED_FIELDS:
        assert general.get(field, "").strip(), f"metadata.txt lacks {field}"
    assert general["qgisMinimumVersion"] == "3.22"
    assert general["category"] == "Raster"
    assert (REPO / general["icon"]).is_file()
    import cwsam_core

    assert general["version"] == cwsam_core.__version__


def test_class_factory_init_gui_and_unload(qgis_app):
    import cwsam_qgis

    iface = HeadlessInterface()
    plugin = cwsam_qgis.classFactory(iface)
    plugin.initGui()
    assert plugin.report is None and plugin.check_task is not None  # the check runs in the background
    wait_for_check(plugin)
    assert plugin.report.ok
    assert [a.text() for a in iface.raster_menus["CWSAM"].actions()] == [
        "CWSAM SAR classification", "About CWSAM / check dependencies"]
    assert [a.text() for a in iface.toolbar.actions()] == ["CWSAM SAR classification"]
    message = plugin.show_status()
    assert "all dependencies found" in message
    plugin.unload()
    assert "CWSAM" not in iface.raster_menus
    assert iface.toolbar.actions() == []
    assert plugin.actions == []
