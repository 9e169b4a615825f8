"""Every error ``cwsam_core`` raises on purpose, in one place, on one base class.

Each message is meant for the user: one line that says what is wrong and what to do. The shells (the CLI, the
QGIS tasks, Processing) catch ``CwsamError`` and show its message; ``Cancelled`` is the user's own stop, after
which nothing is left at the output paths. The built-in classes beside the base (``ValueError``,
``RuntimeError``) are kept for callers that caught those before.
"""

from __future__ import annotations


class CwsamError(Exception):
    """An error of input, set-up or environment that the user can act on."""


class Cancelled(CwsamError):
    """The user cancelled; nothing was left at the output paths."""


# Files and paths
class OutputConflictError(CwsamError, ValueError):
    """An output path that would overwrite an input or another output of the same command."""


class ClassSpecError(CwsamError, ValueError):
    """A class list that cannot be read, with what is wrong and the expected form."""


class ModelFileError(CwsamError, ValueError):
    """A model file that cannot be used, with what to do about it."""


class CheckpointError(CwsamError, ValueError):
    """A checkpoint that cannot be used, with what to do about it."""


class CheckpointWriteError(CheckpointError):
    """A model file or training state that could not be written (full disk, file size limit, permissions);
    the previous file at that path is intact."""


class AuthorsImportError(CwsamError, ValueError):
    """A checkpoint of the authors' code that cannot be imported as given, with what to do about it."""


# Rasters
class RadiometryError(CwsamError, ValueError):
    """A raster that cannot be prepared for the model as set up, with what to do about it."""


class SceneError(CwsamError, ValueError):
    """Scene files that cannot be read together, with what is wrong."""


class QuicklookError(CwsamError, ValueError):
    """A quick-look that cannot be drawn, with what to do about it."""


# Classification, export, polygons
class ClassificationError(CwsamError, RuntimeError):
    """A classification that cannot run, with what to do about it."""


class ClassificationCancelled(Cancelled, RuntimeError):
    """The user cancelled a classification; nothing was left at the output path."""


class ExportError(CwsamError, RuntimeError):
    """An export that cannot be made, with what to do about it."""


class VectorizeError(CwsamError, ValueError):
    """A vectorisation that cannot run, with what to do about it."""


class VectorizeCancelled(Cancelled, RuntimeError):
    """The user cancelled a vectorisation; nothing was left at the output path."""


# Training
class TrainingDataError(CwsamError, ValueError):
    """Training data that cannot be used, with what is wrong and what to do."""


class RetrainError(TrainingDataError):
    """A warm start or review step that cannot run (or publish), with what to do; nothing was written."""


class RetrainCancelled(RetrainError, Cancelled):
    """The user cancelled: no version was written, the current one stays."""


class ChangeError(CwsamError, ValueError):
    """Two class maps that cannot be compared, with what to do about it; nothing was written."""


class ChangeCancelled(ChangeError, Cancelled):
    """The user cancelled a comparison; nothing was left at the output path."""
