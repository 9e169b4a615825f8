"""SAR radiometry: turning windows of a SAR raster into the model's normalised 3-channel input.

The steps, in order, for every window: read the model's bands (matched by band description, by
order, or chosen by the user), mask nodata, convert to the model's scale (dB, linear power or
amplitude), map the bands to 3 channels, and normalise with one set of statistics. Those come from
the model file or, when it stores none, from a decimated read of the WHOLE raster, computed once:
statistics per tile would stretch each tile differently and leave seams in the class map.

Scales: ``linear`` is power intensity (sigma0, gamma0, beta0 or DN squared), ``amplitude`` is its
square root, ``db`` is ``10 * log10(power)``.

Only numpy and rasterio: no torch, Qt or QGIS.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from ..common.card import INPUT_SCALES
from ..errors import RadiometryError
from .class_names import read_class_names
from .windows import clip_window

AUTO = "auto"

# A channel with (near) constant values must not divide by zero when normalised.
STD_EPSILON = 1e-6

# Scale detection thresholds, see detect_scale.
_DB_NEGATIVE_FRACTION = 0.1
_LINEAR_MAX_MEDIAN = 0.5

# Polarisations a band description may name: one the model does not use stops taking bands in order.
_POLARISATIONS = ("hh", "hv", "vh", "vv")

_LOG = logging.getLogger("cwsam")


def _check_scale(scale: str, what: str = "scale") -> str:
    if scale not in INPUT_SCALES:
        raise RadiometryError(f"unknown {what} {scale!r}: use one of {', '.join(INPUT_SCALES)}")
    return scale


# --- scales -------------------------------------------------------------------------------------


def _to_power(data: np.ndarray, source: str) -> np.ndarray:
    """Any scale -> linear power, float64 (integers squared in float: uint16 DN would overflow)."""
    values = np.asarray(data, dtype=np.float64)
    if source == "db":
        return np.power(10.0, values / 10.0)
    if source == "amplitude":
        # Amplitude is non-negative by definition: a negative value is not a squared-away sign.
        return np.where(values >= 0, values * values, np.nan)
    return values


def _from_power(power: np.ndarray, target: str) -> np.ndarray:
    """Linear power -> any scale; values without a value in the target scale become NaN."""
    with np.errstate(divide="ignore", invalid="ignore"):
        if target == "db":
            return np.where(power > 0, 10.0 * np.log10(np.where(power > 0, power, 1.0)), np.nan)
        if target == "amplitude":
            return np.where(power >= 0, np.sqrt(np.where(power >= 0, power, 0.0)), np.nan)
    return power


def convert_scale(data: np.ndarray, source: str, target: str) -> np.ndarray:
    """``data`` (any shape) from scale ``source`` to scale ``target``, as a new float32 array.

    Non-positive linear/amplitude values have no dB value and become NaN (masked later), as do
    negative values converted to amplitude.
    """
    _check_scale(source, "source scale")
    _check_scale(target, "target scale")
    if source == target:
        return np.array(data, dtype=np.float32)  # a copy: callers may write into it
    return _from_power(_to_power(data, source), target).astype(np.float32)


def detect_scale(sample: np.ndarray) -> str:
    """Guess the scale of ``sample`` (any shape, nodata already NaN) from its finite values.

    The rule:

    * at least 10% negative values -> ``"db"``: power and amplitude cannot be negative (a few
      negatives do occur in noise-subtracted linear products, hence a fraction, not "any");
    * else median below 0.5 -> ``"linear"``: calibrated backscatter power (sigma0 is mostly 0.001-0.3);
    * else -> ``"amplitude"``: large non-negative values, such as digital numbers in the hundreds.

    Calibrated amplitude (median about 0.1-0.5) reads as linear and DN squared as amplitude: such
    rasters need the input scale set explicitly.
    """
    values = np.asarray(sample, dtype=np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise RadiometryError("cannot detect the input scale: the sample has no valid value (all NaN or nodata)")
    if np.count_nonzero(values < 0) >= _DB_NEGATIVE_FRACTION * values.size:
        return "db"
    if float(np.median(values)) < _LINEAR_MAX_MEDIAN:
        return "linear"
    return "amplitude"


# Backscatter in dB (1st and 99th percentiles of a band) never leaves this range: beyond it, values are not dB.
DB_PLAUSIBLE = (-100.0, 100.0)


# --- bands --------------------------------------------------------------------------------------


def _names_band(description: Optional[str], name: str) -> bool:
    """Whether ``description`` contains ``name`` as a token (bounded by non-alphanumerics), any case."""
    if not description:
        return False
    pattern = r"(?<![0-9a-z])" + re.escape(name.lower()) + r"(?![0-9a-z])"
    return re.search(pattern, description.lower()) is not None


def _list_bands(descriptions: Sequence[Optional[str]]) -> str:
    return ", ".join(f"{i}: {d or '(no description)'}" for i, d in enumerate(descriptions, start=1))


def _band_error(descriptions: Sequence[Optional[str]], expected: Sequence[str], problem: str) -> RadiometryError:
    example = ",".join(str(i) for i in range(1, len(expected) + 1))
    return RadiometryError(
        f"{problem}. The raster has {len(descriptions)} band(s) ({_list_bands(descriptions)}); the model expects "
        f"{', '.join(expected)}. Choose the raster bands to use, in the model's order, with --bands "
        f"(1-based indexes, e.g. --bands {example})"
    )


def _match_by_description(descriptions: Sequence[Optional[str]], name: str) -> List[int]:
    """1-based indexes of the bands described as ``name``; an exact description wins over a token match."""
    exact = [i for i, d in enumerate(descriptions, 1) if d and d.strip().lower() == name.lower()]
    return exact or [i for i, d in enumerate(descriptions, 1) if _names_band(d, name)]


def _generic_band(name: str, count: int) -> List[int]:
    """A model band named "band N" (a model trained on bands without descriptions) is raster band N."""
    found = re.fullmatch(r"\s*band\s*(\d+)\s*", name, flags=re.IGNORECASE)
    return [int(found.group(1))] if found and 1 <= int(found.group(1)) <= count else []


def _check_named_order(descriptions: Sequence[Optional[str]], expected: Sequence[str], indexes: List[int]) -> None:
    """Refuse band indexes whose bands are all named after model bands, but in another order (``--bands 2,1``
    on bands named VV, VH): the model would read VH as VV."""
    named = [_match_by_description(descriptions, name) for name in expected]
    if not all(len(m) == 1 for m in named) or len({m[0] for m in named}) != len(expected):
        return  # the names do not identify every model band: the user's order stands
    by_name = [m[0] for m in named]
    if sorted(by_name) == sorted(indexes) and by_name != indexes:
        misread = ", ".join(f"band {i} ({descriptions[i - 1]}) as {name}" for name, i in zip(expected, indexes)
                            if i != by_name[expected.index(name)])
        raise _band_error(descriptions, expected, f"--bands {','.join(map(str, indexes))} would read {misread}, "
                          f"against the raster's band names: leave out --bands (bands are matched by name) or give "
                          f"{','.join(map(str, by_name))}")


def match_bands(
    descriptions: Sequence[Optional[str]], expected: Sequence[str], override: Optional[Sequence[int]] = None
) -> List[int]:
    """The 1-based raster band indexes to read, one per ``expected`` band name, in that order.

    ``override`` (1-based indexes, e.g. from ``--bands``) wins when given. Else each name is
    looked up in the band descriptions, case-insensitively, as a token: "VV", "Sigma0_VV_db" and
    "VV polarisation" name VV, "VVH" does not. Else, when the raster has exactly as many bands as
    the model expects, bands are taken in order, unless a description says otherwise: one naming
    a model band at another position, or a polarisation the model does not use (VV, VH bands are
    not fed to an HH, HV model by order). Anything else raises ``RadiometryError`` listing the
    bands found and expected.
    """
    count, wanted = len(descriptions), len(expected)
    if wanted == 0:
        raise RadiometryError("the model names no input band")
    if override is not None:
        indexes = list(override)
        if len(indexes) != wanted:
            raise _band_error(descriptions, expected, f"--bands gives {len(indexes)} band(s), not {wanted}")
        bad = [i for i in indexes if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or not 1 <= i <= count]
        if bad:
            raise _band_error(descriptions, expected, f"--bands {', '.join(map(str, bad))} out of range 1..{count}")
        indexes = [int(i) for i in indexes]
        twice = sorted({i for i in indexes if indexes.count(i) > 1})
        if twice:
            raise _band_error(descriptions, expected, f"--bands uses band {', '.join(map(str, twice))} for several "
                                                      "model bands: each model band needs a band of its own")
        _check_named_order(descriptions, expected, indexes)
        return indexes

    matches = {name: _match_by_description(descriptions, name) or _generic_band(name, count) for name in expected}
    ambiguous = [f"{n} (bands {', '.join(map(str, m))})" for n, m in matches.items() if len(m) > 1]
    if ambiguous:
        raise _band_error(descriptions, expected, f"several bands match {'; '.join(ambiguous)}")
    found = {name: m[0] for name, m in matches.items() if m}
    if len(found) == wanted and len(set(found.values())) == wanted:
        return [found[name] for name in expected]

    missing = [n for n in expected if n not in found]
    problem = (f"no band description names {', '.join(missing)}" if missing
               else "the band descriptions name the same band for several model bands")
    if count != wanted:
        raise _band_error(descriptions, expected, problem + f" (the raster has {count} band(s), the model {wanted})")
    by_index = list(range(1, wanted + 1))
    if any(found[n] != by_index[k] for k, n in enumerate(expected) if n in found):
        raise _band_error(descriptions, expected, problem + ", and taking bands in order would contradict the descriptions")
    wanted_names = {n.lower() for n in expected}
    others = sorted({pol.upper() for d in descriptions for pol in _POLARISATIONS
                     if pol not in wanted_names and _names_band(d, pol)})
    if others:
        raise _band_error(descriptions, expected, problem + f"; the descriptions name {', '.join(others)} instead")
    return by_index


def to_model_channels(bands: np.ndarray, scale: str) -> np.ndarray:
    """Map K x H x W bands, already in the model's ``scale``, to the model's 3 x H x W float32 channels.

    * 1 band: replicated into the 3 channels;
    * 2 bands (co-pol, cross-pol, e.g. VV, VH): ``[b0, b1, co/cross ratio]``; in dB the ratio is
      ``b0 - b1``, in linear or amplitude scale ``b0 / b1`` (NaN where ``b1 <= 0``);
    * 3 bands (e.g. a Pauli composite or HH, HV, VV): as they are.
    """
    _check_scale(scale)
    bands = np.asarray(bands, dtype=np.float32)
    if bands.ndim != 3 or bands.shape[0] not in (1, 2, 3):
        raise RadiometryError(f"expected 1, 2 or 3 bands of shape K x H x W, got an array of shape {bands.shape}")
    if bands.shape[0] == 1:
        return np.repeat(bands, 3, axis=0)
    if bands.shape[0] == 3:
        return bands.copy()
    co, cross = bands[0], bands[1]
    if scale == "db":
        ratio = co - cross
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(cross > 0, co / np.where(cross > 0, cross, 1.0), np.nan).astype(np.float32)
    return np.stack([co, cross, ratio])


def valid_mask(bands: np.ndarray, nodata: Optional[float]) -> np.ndarray:
    """H x W bool for K x H x W raw values: False where any band equals ``nodata``, is NaN or +-inf."""
    bands = np.asarray(bands)
    valid = np.ones(bands.shape[-2:], dtype=bool)
    if np.issubdtype(bands.dtype, np.floating):
        valid &= np.isfinite(bands).all(axis=0)
    if nodata is not None and not math.isnan(nodata):
        valid &= ~(bands == nodata).any(axis=0)
    return valid


# --- normalisation ------------------------------------------------------------------------------


@dataclass
class NormalizationStats:
    """Per-channel mean and standard deviation of the model input (3 values each, std > 0)."""

    mean: List[float]
    std: List[float]

    def __post_init__(self) -> None:
        self.mean = [float(v) for v in self.mean]
        self.std = [float(v) for v in self.std]
        if len(self.mean) != 3 or len(self.std) != 3:
            raise RadiometryError(f"normalisation needs 3 means and 3 stds, got {len(self.mean)} and {len(self.std)}")
        if not all(math.isfinite(v) for v in self.mean) or not all(math.isfinite(s) and s > 0 for s in self.std):
            raise RadiometryError(f"normalisation needs finite means and positive stds, got {self.mean}, {self.std}")

    def to_dict(self) -> Dict[str, List[float]]:
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: Dict[str, Sequence[float]]) -> "NormalizationStats":
        try:
            return cls(mean=list(d["mean"]), std=list(d["std"]))
        except (KeyError, TypeError) as exc:
            raise RadiometryError(f"normalisation must be {{'mean': [3 values], 'std': [3 values]}}, got {d!r}") from exc


def normalize(channels: np.ndarray, stats: NormalizationStats) -> np.ndarray:
    """3 x H x W channels -> 3 x H x W float32 ``(channels - mean) / std``, per channel."""
    mean = np.asarray(stats.mean, dtype=np.float32)[:, None, None]
    scale = 1.0 / np.asarray(stats.std, dtype=np.float32)[:, None, None]
    out = np.subtract(channels, mean, dtype=np.float32)  # a new array: the input is left as it was
    out *= scale
    return out


def channel_stats(channels: np.ndarray, valid: np.ndarray) -> NormalizationStats:
    """Mean and std (std floored at ``STD_EPSILON``) of 3 x H x W ``channels`` over the H x W ``valid`` pixels."""
    if not valid.any():
        raise RadiometryError("no valid pixel to compute normalisation statistics from")
    values = channels[:, valid].astype(np.float64)
    return NormalizationStats(
        mean=values.mean(axis=1).tolist(), std=np.maximum(values.std(axis=1), STD_EPSILON).tolist()
    )


# --- reading ------------------------------------------------------------------------------------


def refuse_class_map(dataset: rasterio.io.DatasetReader, band_indexes: Sequence[int]) -> None:
    """A ``RadiometryError`` when the bands to read are a class map, not SAR: a colour table, or class names (band
    tags, category names, an attribute table). A class map given as the image would train a model on its own
    labels (validation mIoU 1.0) or classify classes."""
    interpretation = getattr(dataset, "colorinterp", None)  # a scene of several files has none of its own
    palette = [b for b in band_indexes
               if interpretation and interpretation[b - 1] == rasterio.enums.ColorInterp.palette]
    names = read_class_names(dataset.name)[0] if 1 in band_indexes and getattr(dataset, "files", None) else {}
    if not palette and not names:
        return
    named = f" (it names the classes {', '.join(list(names.values())[:5])})" if names else " (it has a colour table)"
    raise RadiometryError(f"{Path(str(dataset.name)).name} is a class map{named}, not a SAR image: choose the SAR "
                          "image as the image, and the class map as the labels")


class SarReader:
    """Reads windows of an open rasterio dataset as normalised 3-channel model input.

    Attributes: ``band_indexes`` (1-based, in the model's band order), ``source_scale`` (the
    raster's scale, given or detected), ``model_scale``, ``stats`` (``NormalizationStats``) and
    ``nodata`` (the dataset's nodata value or None).
    """

    def __init__(
        self,
        dataset: rasterio.io.DatasetReader,
        bands: Sequence[str],
        model_scale: str,
        input_scale: str = AUTO,
        band_indexes: Optional[Sequence[int]] = None,
        normalization: Optional[Union[dict, NormalizationStats]] = None,
        sample_pixels: int = 1_000_000,
        warn: Callable[[str], None] = _LOG.warning,
        trained_scale: Optional[str] = None,
    ) -> None:
        self.dataset = dataset
        self.model_scale = _check_scale(model_scale, "model input scale")
        if input_scale != AUTO:
            _check_scale(input_scale, "input scale")
        if not 1 <= len(bands) <= 3:
            raise RadiometryError(f"the model must expect 1 to 3 bands, it names {len(bands)}: {', '.join(bands)}")
        self.nodata: Optional[float] = dataset.nodata
        self.band_indexes = match_bands(dataset.descriptions, bands, band_indexes)
        refuse_class_map(dataset, self.band_indexes)

        # Detecting the scale, or checking a given one, needs far fewer pixels than statistics.
        sample = self._read_sample(sample_pixels if normalization is None else min(sample_pixels, 100_000))
        if not valid_mask(sample, self.nodata).any():
            raise RadiometryError(
                f"{dataset.name} is all nodata (nodata value {self.nodata}) in bands "
                f"{', '.join(map(str, self.band_indexes))}: check the bands and the nodata value"
            )
        detected = self._detect(sample)
        if input_scale == AUTO:
            self.source_scale = detected
            if trained_scale and detected != trained_scale:
                warn(
                    f"the raster's values look like {detected} scale, but the model was trained on {trained_scale} "
                    f"data: reading them as {detected} (if that is wrong, set the input scale explicitly, e.g. "
                    f"--input-scale {trained_scale})"
                )
            elif self.source_scale != self.model_scale:
                warn(
                    f"the raster's values look like {self.source_scale} scale: converting them from "
                    f"{self.source_scale} to the model's {self.model_scale} scale (if that is wrong, set the input "
                    "scale explicitly, e.g. --input-scale db)"
                )
        else:
            self.source_scale = input_scale  # the user's word is trusted, but a plain contradiction is said
            if (input_scale == "db") != (detected == "db"):
                warn(
                    f"the input scale is set to {input_scale}, but the raster's values look like {detected} scale "
                    + ("(no negative values, which dB backscatter has)" if input_scale == "db" else
                       "(many negative values, which power and amplitude cannot have)")
                    + f": reading them as {input_scale} as asked"
                )

        if normalization is not None:
            self.stats = (normalization if isinstance(normalization, NormalizationStats)
                          else NormalizationStats.from_dict(normalization))
        else:
            channels, valid = self._prepare(sample)
            if not valid.any():
                raise RadiometryError(
                    f"{dataset.name} has no pixel with a value in the model's {self.model_scale} scale "
                    f"(all nodata or non-positive once converted from {self.source_scale}): check the input scale"
                )
            self.stats = channel_stats(channels, valid)
        self._check_plausible(sample)

    def _check_plausible(self, sample: np.ndarray) -> None:
        """Refuse values that no SAR product can have: a band of one value only, or dB values far outside
        what backscatter takes (scaled dB, such as dB x 100 stored as integers)."""
        valid = valid_mask(sample, self.nodata)
        name = Path(self.dataset.name).name
        for k, band in enumerate(self.band_indexes):
            values = sample[k][valid & np.isfinite(sample[k])].astype(np.float64)
            if values.size and values.min() == values.max():
                raise RadiometryError(f"{name}: band {band} holds the value {values.min():g} wherever it has data: "
                                      "a constant image is not SAR backscatter; check the file and its bands")
            if self.source_scale == "db" and values.size:
                low, high = np.percentile(values, [1, 99])
                if low < DB_PLAUSIBLE[0] or high > DB_PLAUSIBLE[1]:
                    raise RadiometryError(
                        f"{name}: band {band} runs from {low:g} to {high:g}, which backscatter in dB cannot (it lies "
                        f"within about {DB_PLAUSIBLE[0]:g} to {DB_PLAUSIBLE[1]:g} dB): scaled dB, e.g. dB x 100 in an "
                        "integer product? Rescale the raster to dB, or set the input scale it is in")

    def _read_sample(self, sample_pixels: int) -> np.ndarray:
        """K x h x w raw values of the whole raster, decimated (nearest) to about ``sample_pixels`` pixels."""
        height, width = self.dataset.height, self.dataset.width
        factor = min(1.0, math.sqrt(max(sample_pixels, 1) / float(height * width)))
        out_shape = (len(self.band_indexes), max(1, round(height * factor)), max(1, round(width * factor)))
        return self.dataset.read(self.band_indexes, out_shape=out_shape, resampling=Resampling.nearest)

    def _detect(self, sample: np.ndarray) -> str:
        if all(self.dataset.dtypes[i - 1] == "uint8" for i in self.band_indexes):
            return "amplitude"  # 8-bit: a display product or digital numbers, never dB or calibrated power
        values = sample.astype(np.float64)
        values[:, ~valid_mask(sample, self.nodata)] = np.nan  # nodata must not vote
        return detect_scale(values)

    def _prepare(self, raw: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """K x h x w raw values -> (3 x h x w channels in the model's scale, h x w valid)."""
        valid = valid_mask(raw, self.nodata)  # on raw values: nodata compares exactly before any cast
        channels = to_model_channels(convert_scale(raw, self.source_scale, self.model_scale), self.model_scale)
        valid &= np.isfinite(channels).all(axis=0)  # no dB value, or a ratio over a zero cross-pol
        return channels, valid

    def read(self, window: Window) -> Tuple[np.ndarray, np.ndarray]:
        """(3 x h x w float32 normalised image, h x w bool valid) for ``window``, which may extend past the edges.

        Only the part of the window inside the raster is read (rasterio's boundless reads go
        through a VRT and need a fill value that an integer raster without nodata lacks);
        pixels outside the raster, nodata pixels and pixels with no value in the model's scale
        are invalid and 0.0 in the image.
        """
        (height, width), part = clip_window(window, self.dataset.height, self.dataset.width)
        image = np.zeros((3, height, width), dtype=np.float32)
        valid = np.zeros((height, width), dtype=bool)
        if part is None:
            return image, valid
        raw = self.dataset.read(self.band_indexes, window=part.inside)
        channels, inside_valid = self._prepare(raw)
        inside = normalize(channels, self.stats)
        np.copyto(inside, 0.0, where=~inside_valid)  # broadcast over channels; NaN-safe, unlike a product
        if part.whole:
            return inside, inside_valid  # the window lies inside the raster: no padding to add
        rows, cols = part.rows, part.cols
        image[:, rows, cols] = inside
        valid[rows, cols] = inside_valid
        return image, valid
