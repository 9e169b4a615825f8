"""Development install: link the checkout's plugin into a QGIS profile and enable it there.

Usage: python3 tools/install_plugin.py [PROFILE_DIR]
(default ~/.local/share/QGIS/QGIS3/profiles/default). Creates
PROFILE_DIR/python/plugins/cwsam_qgis -> <checkout>/cwsam_qgis (a symlink: edits show up after a
plugin reload) and sets [PythonPlugins] cwsam_qgis=true in PROFILE_DIR/QGIS/QGIS3.ini, written with
Qt's own QSettings so the rest of the file keeps Qt's format.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PROFILE = Path.home() / ".local" / "share" / "QGIS" / "QGIS3" / "profiles" / "default"


def install(profile: Path) -> Path:
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "cwsam_qgis"
    target = REPO / "cwsam_qgis"
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.is_dir():
        raise SystemExit(f"{link} is a folder (an installed zip?): remove it or uninstall the plugin first")
    link.symlink_to(target, target_is_directory=True)

    from PyQt5.QtCore import QSettings

    ini = profile / "QGIS" / "QGIS3.ini"
    ini.parent.mkdir(parents=True, exist_ok=True)
    settings = QSettings(str(ini), QSettings.IniFormat)
    settings.setValue("PythonPlugins/cwsam_qgis", True)
    settings.sync()
    if settings.status() != QSettings.NoError:
        raise SystemExit(f"could not write {ini}")
    return link


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    profile = Path(args[0]).expanduser() if args else DEFAULT_PROFILE
    link = install(profile)
    print(f"{link} -> {link.resolve()}; enabled in {profile / 'QGIS' / 'QGIS3.ini'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
