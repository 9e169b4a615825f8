"""Build the installable QGIS plugin zip: ``dist/cwsam_qgis-<version>.zip``.

Layout (one top folder, as the QGIS plugin manager expects)::

    cwsam_qgis/                 the plugin (metadata.txt, resources/icon.svg, Python files)
    cwsam_qgis/libs/cwsam_core  the engine, put on sys.path by the plugin at load
    cwsam_qgis/requirements.txt what the Python environment needs for the full install (torch & co, not
                                bundled: too big and platform-specific), used by the commands the Setup tab shows
    cwsam_qgis/requirements-classify.txt  the light install: classification with ONNX models (onnxruntime,
                                no torch; about 300 MB), offered first by the Setup tab when torch is missing
    cwsam_qgis/LICENSE, README.md

Usage: python tools/package_plugin.py [--output dist/cwsam_qgis-0.1.0.zip]
"""

from __future__ import annotations

import argparse
import configparser
import sys
import zipfile
from pathlib import Path
from typing import Iterator, Tuple

REPO = Path(__file__).resolve().parents[1]
TOP = "cwsam_qgis"
# Lines of requirements.txt that only the tests need.
TEST_ONLY = ("pytest", "pytest-qt", "import-linter")


def version() -> str:
    parser = configparser.ConfigParser()
    parser.read(REPO / "metadata.txt")
    return parser["general"]["version"]


def _tree(folder: Path, prefix: str) -> Iterator[Tuple[Path, str]]:
    """(file, name in the zip) for every file under ``folder``, symlinks followed, caches left out."""
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if path.is_dir() or "__pycache__" in relative.parts or path.suffix in (".pyc", ".pyo"):
            continue
        yield path, f"{prefix}/{relative.as_posix()}"


def _resolved_tree(folder: Path, prefix: str) -> Iterator[Tuple[Path, str]]:
    """Like ``_tree`` but descends into symlinked folders (rglob does not follow them)."""
    for entry in sorted(folder.iterdir()):
        name = f"{prefix}/{entry.name}"
        if entry.name == "__pycache__" or entry.suffix in (".pyc", ".pyo"):
            continue
        if entry.is_dir():
            yield from _resolved_tree(entry, name)
        elif entry.is_file():
            yield entry, name


def runtime_requirements() -> str:
    lines = []
    for line in (REPO / "requirements.txt").read_text().splitlines():
        name = line.split("#")[0].strip().split("=")[0].split("<")[0].split(">")[0].strip()
        if name in TEST_ONLY:
            continue
        lines.append(line)
    return "\n".join(lines).strip() + "\n"


def build(output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".partial")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, name in _resolved_tree(REPO / "cwsam_qgis", TOP):
            if name.startswith(f"{TOP}/libs/"):
                continue  # a stale copy from an earlier layout never travels
            if name.startswith(f"{TOP}/resources/demo/"):
                continue  # the demo scene and model belong to the repository's `make demo`, not the plugin
            archive.write(path, name)
        for path, name in _tree(REPO / "cwsam_core", f"{TOP}/libs/cwsam_core"):
            archive.write(path, name)
        archive.writestr(f"{TOP}/requirements.txt", runtime_requirements())
        archive.write(REPO / "requirements-classify.txt", f"{TOP}/requirements-classify.txt")
        for extra in ("LICENSE", "README.md"):
            if (REPO / extra).is_file():
                archive.write(REPO / extra, f"{TOP}/{extra}")
    temporary.replace(output)
    return output


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=REPO / "dist" / f"{TOP}-{version()}.zip")
    args = parser.parse_args(argv)
    path = build(args.output)
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    print(f"{path} ({path.stat().st_size / 1024:.0f} KiB, {len(names)} files)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
