"""The plugin's code base runs on QGIS 3.22 (Qt5) through QGIS 4.x (Qt6): the static check finds no Qt5-only
form in cwsam_qgis, and it does find each kind of Qt5-only form when one is written; the plugin manager of
QGIS 4 accepts metadata.txt."""

from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))
import check_qt6  # noqa: E402

sys.path.remove(str(REPO / "tools"))


def messages(source: str) -> list:
    return [f.message for f in check_qt6.check_source(source)]


def test_the_plugin_has_no_qt5_only_form():
    findings = check_qt6.check_paths([REPO / "cwsam_qgis"])
    assert findings == [], "\n".join(map(str, findings))


def test_the_command_line_check_fails_on_a_file_with_an_unscoped_enum(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from qgis.core import Qgis\nlevel = Qgis.Info\n")
    good = tmp_path / "good.py"
    good.write_text("from qgis.core import Qgis\nlevel = Qgis.MessageLevel.Info\n")
    run = subprocess.run([sys.executable, str(REPO / "tools" / "check_qt6.py"), str(bad), str(good)],
                         capture_output=True, text=True)
    assert run.returncode == 1
    assert f"{bad}:2: unscoped enum Qgis.Info: write Qgis.MessageLevel.Info" in run.stdout
    assert str(good) not in run.stdout
    assert subprocess.run([sys.executable, str(REPO / "tools" / "check_qt6.py"), str(good)]).returncode == 0


@pytest.mark.parametrize("source, expected", [
    ("from qgis.PyQt.QtCore import Qt\nx = Qt.Checked\n", "unscoped enum Qt.Checked: write Qt.CheckState.Checked"),
    ("from qgis.PyQt.QtCore import Qt\nx = Qt.ItemIsEnabled | Qt.ItemFlag.ItemIsEditable\n",
     "unscoped enum Qt.ItemIsEnabled: write Qt.ItemFlag.ItemIsEnabled"),
    ("from qgis.core import QgsTask\nflags = QgsTask.CanCancel\n", "unscoped enum QgsTask.CanCancel"),
    ("from qgis.core import QgsProcessingParameterNumber as N\nt = N.Double\n", "unscoped enum N.Double"),
    ("from qgis.PyQt.QtWidgets import QSizePolicy\np = QSizePolicy.Expanding\n", "unscoped enum QSizePolicy.Expanding"),
    ("from qgis.gui import QgsFileWidget\nm = QgsFileWidget.SaveFile\n", "unscoped enum QgsFileWidget.SaveFile"),
    ("from qgis.PyQt.QtCore import QVariant\nt = QVariant.Int\n", "QVariant.Int: QVariant types are removed"),
    ("from qgis.PyQt.QtWidgets import QDialog\nQDialog().exec_()\n", "exec_() is removed in PyQt6"),
    ("class D:\n    def exec_(self):\n        pass\n", "exec_ is removed in PyQt6"),
    ("from PyQt5.QtCore import Qt\n", "import from PyQt5.QtCore: import Qt through qgis.PyQt"),
    ("from matplotlib.backends.backend_qt5agg import FigureCanvasQTAgg\n", "backend_qt5agg is Qt5-only"),
    ("from qgis.PyQt.QtCore import QRegExp\n", "QRegExp is removed in Qt6"),
    ("from qgis.PyQt.QtWidgets import qApp\nqApp.quit()\n", "qApp is removed in Qt6"),
    ("from qgis.PyQt.QtCore import Qt\nb = Qt.MidButton\n", "Qt.MidButton is renamed in Qt6: use Qt.MouseButton.MiddleButton"),
    ("combo.activated[str].connect(f)\n", "activated[str] is removed in Qt6"),
    ("w = label.fontMetrics().width('x')\n", "QFontMetrics.width() is removed in Qt6"),
    ("from . import resources_rc\n", "compiled Qt resources"),
    ("from qgis.PyQt.QtWidgets import QApplication\nr = QApplication.desktop().screenGeometry()\n",
     "desktop() (QDesktopWidget) is removed in Qt6"),
])
def test_each_qt5_only_form_is_found(source, expected):
    found = messages(source)
    assert any(expected in m for m in found), found


@pytest.mark.parametrize("source", [
    "from qgis.PyQt.QtCore import Qt\nx = Qt.CheckState.Checked\n",
    "from qgis.PyQt.QtCore import Qt\nx = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsEditable\n",
    "from qgis.core import Qgis, QgsTask\nx = (Qgis.MessageLevel.Info, QgsTask.Flag.CanCancel)\n",
    "from qgis.PyQt.QtCore import QMetaType, QVariant\nt = QMetaType.Type.Int\nnull = QVariant().isNull()\n",
    "from qgis.PyQt.QtWidgets import QDialog\nQDialog().exec()\n",
    "from qgis.core import QgsRasterLayer\nlayer = QgsRasterLayer('x.tif', 'x')\nlayer.isValid()\n",
    "from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg\n",
    "from qgis.PyQt.QtCore import QVariant\nt = QVariant.Int  # qt6-compat: QGIS 3.22 wants a QVariant type\n",
])
def test_qt6_forms_pass(source):
    assert messages(source) == []


def test_only_the_compatibility_module_uses_the_exemption():
    users = [p.relative_to(REPO).as_posix() for p in check_qt6.iter_python_files([REPO / "cwsam_qgis"])
             if check_qt6.ALLOW_PRAGMA in p.read_text(encoding="utf-8")]
    assert users == ["cwsam_qgis/compat.py"]


def test_the_compatibility_module_resolves_every_name_in_this_qgis():
    from qgis.core import Qgis, QgsField
    from qgis.PyQt.QtCore import QMetaType

    from cwsam_qgis import compat

    assert compat.LayerFilter.RasterLayer != compat.LayerFilter.PolygonLayer
    assert int(compat.NUMBER_DOUBLE) != int(compat.NUMBER_INTEGER)
    field = compat.new_field("class", QMetaType.Type.Int)
    assert isinstance(field, QgsField) and field.name() == "class"
    assert field.type() == QMetaType.Type.Int and field.type() != QMetaType.Type.QString
    assert compat.FIELD_TAKES_METATYPE == (Qgis.QGIS_VERSION_INT >= 33800)


def test_qgis_plugin_manager_accepts_the_metadata_from_3_22_to_4_x():
    if "/usr/share/qgis/python" not in sys.path:
        sys.path.append("/usr/share/qgis/python")
    from pyplugin_installer.version_compare import isCompatible

    general = configparser.ConfigParser()
    general.read(REPO / "metadata.txt")
    low, high = general["general"]["qgisMinimumVersion"], general["general"].get("qgisMaximumVersion")
    assert high == "4.99"
    for version in ("3.22.16", "3.44.15", "4.0.0", "4.2.3", "4.99.0"):
        assert isCompatible(version, low, high), version
    assert not isCompatible("3.16.0", low, high) and not isCompatible("5.0.0", low, high)
    # Without the maximum, QGIS assumes <major of the minimum>.99 and QGIS 4 refuses the plugin.
    assert not isCompatible("4.0.0", low, low.split(".")[0] + ".99")
