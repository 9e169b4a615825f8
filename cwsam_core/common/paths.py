"""Guarding what the user gave: no output may be an input, or another output, of the same command.

Checked before any work by every command that writes (classification, training), so that
``cwsam classify s.tif --output s.tif`` stops with one line instead of replacing the scene. Paths are
compared as the files they name: through symbolic links, ``..`` and other spellings, and (for files
that exist) hard links. An output counts with the files written beside it (``.qml``, ``.aux.xml``,
``.run.json``, ``.state.pt``, ...), and an input raster with its GDAL ``.aux.xml`` (it can hold band
descriptions and nodata that the raster is read with).
"""

from __future__ import annotations

import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from ..errors import OutputConflictError

PathLike = Union[str, os.PathLike]
MODEL_SUFFIX = ".cwsam.pt"
_VERSION = re.compile(r"^(?P<base>.+)\.v(?P<number>\d+)$")


def _key(path: PathLike) -> str:
    """A canonical spelling of ``path``: user folder expanded, links and ``..`` resolved."""
    return os.path.normcase(os.path.realpath(os.path.expanduser(os.fspath(path))))


def same_file(a: PathLike, b: PathLike) -> bool:
    """Whether ``a`` and ``b`` name the same file (links and spellings resolved, hard links too)."""
    if _key(a) == _key(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:  # either does not exist (yet)
        return False


def raster_input_files(path: PathLike) -> List[Path]:
    """A raster and the GDAL PAM sidecar it is read with."""
    path = Path(path)
    return [path, path.with_name(path.name + ".aux.xml")]


def class_raster_files(path: PathLike) -> List[Path]:
    """A class raster and everything written beside it (style, category names, run record)."""
    path = Path(path)
    return [path, path.with_name(path.name + ".aux.xml"), path.with_suffix(".qml"), path.with_suffix(".run.json")]


def model_output_files(path: PathLike) -> List[Path]:
    """A model file being trained and the files written beside it (training state, log)."""
    path = Path(path)
    return [path, path.with_name(path.name + ".state.pt"), path.with_name(path.name + ".log.csv")]


Files = Sequence[Tuple[str, Sequence[Optional[PathLike]]]]


@contextmanager
def previous_kept_until_done(paths: Iterable[Optional[PathLike]]) -> Iterator[None]:
    """Several outputs replaced as one: the files at ``paths`` are moved aside first; if the block fails or is
    interrupted, whatever it wrote at those paths is removed and the previous files come back whole; once
    it succeeds the previous files go."""
    targets = list(dict.fromkeys(Path(p) for p in paths if p))
    moved: List[Tuple[Path, Path]] = []
    try:
        for path in targets:
            if path.is_file():
                backup = path.with_name(f".{path.name}.{os.getpid()}.previous")
                os.replace(path, backup)
                moved.append((path, backup))
        yield
    except BaseException:
        for path in targets:
            if path.is_file():
                path.unlink()
        for path, backup in moved:
            os.replace(backup, path)
        raise
    for _, backup in moved:
        backup.unlink()


def check_outputs(inputs: Files, outputs: Files) -> None:
    """Raise ``OutputConflictError`` when an output would overwrite an input or another output.

    ``inputs`` and ``outputs`` are (role, files) pairs: what the user calls a file ("SAR raster",
    "output") and the files it stands for, the named file first (e.g. ``class_raster_files(path)``).
    Roles without files, and empty paths, are skipped.
    """
    taken: List[Tuple[str, Path, Path, bool]] = []  # (role, file, the file the user named, is an input)
    for role, files in inputs:
        files = [Path(f) for f in files if f]
        taken += [(role, f, files[0], True) for f in files]
    for role, files in outputs:
        files = [Path(f) for f in files if f]
        for file in files:
            for other_role, other, other_named, is_input in taken:
                if same_file(file, other):
                    raise OutputConflictError(_conflict(role, files[0], file, other_role, other_named, other, is_input))
        taken += [(role, f, files[0], False) for f in files]


def _conflict(role: str, named: Path, file: Path, other_role: str, other_named: Path, other: Path,
              is_input: bool) -> str:
    what = f"the {role} {named}"
    if file != named:
        what += f" (with its {file.name[len(named.stem):] or file.name})"
    target = f"the {other_role} {other_named}" if other == other_named else \
        f"the {other_role} {other_named} (its {other.name})"
    verb = "would overwrite" if is_input else "is the same file as"
    advice = "choose another output file name: inputs are never overwritten" if is_input else \
        "give each output its own file name"
    return f"{what} {verb} {target}; {advice}"


def output_file_problem(path: PathLike, what: str, example: str) -> Optional[str]:
    """Why a file called ``what`` cannot be written at ``path`` (its folder missing or read-only, or a folder
    in its place; ``example`` is a file name to suggest), or None."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        return f"{what} folder does not exist: {folder}"
    if not os.access(folder, os.W_OK):
        return f"cannot write the {what} in {folder}: permission denied; choose another folder"
    if path.is_dir():
        return f"{what} path is a folder: {path}; give a file name such as {example}"
    return None


def describe_non_model(path: PathLike) -> Optional[str]:
    """What a file that is not a PyTorch file is, from its first bytes (None when it may be one)."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return None
    kinds: Dict[bytes, str] = {
        b"II*\x00": "a TIFF/GeoTIFF raster", b"MM\x00*": "a TIFF/GeoTIFF raster", b"II+\x00": "a BigTIFF raster",
        b"MM\x00+": "a BigTIFF raster", b"\x89PNG": "a PNG image", b"\xff\xd8\xff": "a JPEG image",
        b"GPKG": "a GeoPackage", b"SQLite f": "a SQLite database or GeoPackage", b"%PDF": "a PDF document",
        b"\x1f\x8b": "a gzip archive",
    }
    for magic, kind in kinds.items():
        if head.startswith(magic):
            return kind
    if head.startswith(b"PK") or head[:1] == b"\x80":  # zip (torch.save) or legacy pickle: may be a torch file
        return None
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON or text file"
    return "not a PyTorch checkpoint (a file written by torch.save)"


_SHA256_CACHE: Dict[Tuple[str, int, int], str] = {}


def file_sha256(path: Path | str) -> str:
    """SHA-256 of a file, cached per (path, size, mtime) for this process (SAM files are large)."""
    stat = os.stat(path)
    key = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _SHA256_CACHE:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 22), b""):
                digest.update(chunk)
        _SHA256_CACHE[key] = digest.hexdigest()
    return _SHA256_CACHE[key]


def version_base(path: Path | str) -> tuple:
    """(folder, name without version and suffix, suffix): ``a/lc.v3.cwsam.pt`` -> (a, "lc", ".cwsam.pt")."""
    path = Path(path)
    suffix = MODEL_SUFFIX if path.name.endswith(MODEL_SUFFIX) else path.suffix
    stem = path.name[: len(path.name) - len(suffix)] if suffix else path.name
    match = _VERSION.match(stem)
    return path.parent, (match.group("base") if match else stem), suffix


def version_number(path: Path | str) -> int:
    """1 for an unversioned file, N for ``name.vN.cwsam.pt``."""
    path = Path(path)
    suffix = version_base(path)[2]
    match = _VERSION.match(path.name[: len(path.name) - len(suffix)] if suffix else path.name)
    return int(match.group("number")) if match else 1


def next_version_path(parent: Path | str) -> Path:
    """The next free version beside ``parent``: one above the highest version of the same name there."""
    folder, base, suffix = version_base(parent)
    highest = version_number(parent)
    pattern = re.compile(re.escape(base) + r"\.v(\d+)" + re.escape(suffix) + "$")
    for item in folder.iterdir() if folder.is_dir() else []:
        match = pattern.match(item.name)
        if match:
            highest = max(highest, int(match.group(1)))
    return folder / f"{base}.v{highest + 1}{suffix}"
