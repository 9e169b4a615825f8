"""Polygons out: ``cwsam_core.vector.vectorize`` and ``cwsam vectorize`` on class rasters written like the engine's."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from pyogrio.raw import read as read_vector
from rasterio.features import sieve
from rasterio.transform import from_origin

from cwsam_core.cli import main
from cwsam_core.common.card import PALETTE, ClassInfo
from cwsam_core.errors import VectorizeCancelled, VectorizeError
from cwsam_core.raster.output import CLASS_NODATA, category_names_aux_xml, colormap
from cwsam_core.simulate import simulate_scene
from cwsam_core.vector import vectorize as engine
from cwsam_core.vector.vectorize import vectorize_file

PIXEL = 10.0
CLASSES = [ClassInfo(0, "water", "#1f78b4"), ClassInfo(1, "bare soil", "#c8a064"),
           ClassInfo(2, "cropland", "#f0e442"), ClassInfo(3, "forest", "#1b7837"), ClassInfo(4, "urban", "#d7191c")]


def write_class_raster(path: Path, labels: np.ndarray, classes=CLASSES, crs="EPSG:32633",
                       transform=None) -> Path:
    """A class raster as ``classify`` writes one: uint8, nodata 255, colour table, category names in .aux.xml."""
    transform = transform or from_origin(500000.0, 4600000.0, PIXEL, PIXEL)
    profile = dict(driver="GTiff", width=labels.shape[1], height=labels.shape[0], count=1, dtype="uint8",
                   nodata=CLASS_NODATA, transform=transform, crs=crs)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(labels.astype(np.uint8)[None])
        dst.write_colormap(1, colormap(classes))
    Path(f"{path}.aux.xml").write_text(category_names_aux_xml(classes))
    return path


def smooth_field(height: int, width: int, seed: int, cell: float = 5.0, noise: float = 0.0) -> np.ndarray:
    """Five classes from a smoothed random field (quintiles), with a share ``noise`` of random pixels."""
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft2(rng.normal(size=(height, width)))
    ky, kx = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None]
    field = np.fft.irfft2(spectrum * np.exp(-2 * (np.pi * cell) ** 2 * (kx ** 2 + ky ** 2)), s=(height, width))
    labels = np.digitize(field, np.quantile(field, [0.2, 0.4, 0.6, 0.8])).astype(np.uint8)
    if noise:
        speckle = rng.random((height, width)) < noise
        labels[speckle] = rng.integers(0, 5, speckle.sum())
    return labels


def read_layer(path: Path):
    meta, _, wkb, fields = read_vector(path, layer=Path(path).stem)
    columns = dict(zip(meta["fields"], fields))
    return shapely.from_wkb(wkb), columns


def area_per_class(values: np.ndarray, areas: np.ndarray) -> dict:
    return {int(v): float(areas[values == v].sum()) for v in np.unique(values)}


def in_order(geometries: np.ndarray) -> np.ndarray:
    """Features in an order that does not depend on the writing order (area, then centroid)."""
    centroids = shapely.centroid(geometries)
    keys = (shapely.get_y(centroids).round(6), shapely.get_x(centroids).round(6), shapely.area(geometries).round(6))
    return geometries[np.lexsort(keys)]


def folder_listing(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


# --- areas, validity, CRS -------------------------------------------------------------------------


def test_polygons_of_a_simulated_scene_have_the_sieved_raster_areas(tmp_path):
    scene = simulate_scene(240, 200, seed=4)
    labels = scene.labels.copy()
    rng = np.random.default_rng(0)
    speckle = rng.random(labels.shape) < 0.02  # a classifier's isolated wrong pixels
    labels[speckle] = rng.integers(0, 5, speckle.sum())
    raster = write_class_raster(tmp_path / "classes.tif", labels, [ClassInfo(c.value, c.name, c.color)
                                                                   for c in scene.classes])
    # Every region: the same areas as the raster, exactly.
    result = vectorize_file(raster, tmp_path / "all.gpkg")
    geometries, columns = read_layer(tmp_path / "all.gpkg")
    pixels = np.bincount(labels.ravel(), minlength=5) * PIXEL ** 2
    assert area_per_class(columns["class"], columns["area_m2"]) == pytest.approx(
        {v: float(pixels[v]) for v in range(5)}, rel=1e-9)
    assert result.areas == pytest.approx({v: float(pixels[v]) for v in range(5)}, rel=1e-9)

    # A minimum mapping unit of 6 pixels: the areas of the raster sieved to 6 pixels (GDAL), within 1 %.
    result = vectorize_file(raster, tmp_path / "mmu.gpkg", min_area=6 * PIXEL ** 2)
    geometries, columns = read_layer(tmp_path / "mmu.gpkg")
    sieved = np.bincount(sieve(labels, 6, connectivity=4).ravel(), minlength=5) * PIXEL ** 2
    got = area_per_class(columns["class"], columns["area_m2"])
    for value in range(5):
        assert got[value] == pytest.approx(sieved[value], rel=0.01)
    assert result.min_area_pixels == 6 and result.merged_regions > 100
    assert columns["area_m2"].min() >= 6 * PIXEL ** 2  # no region left under the unit
    assert len(geometries) == result.polygons < len(read_layer(tmp_path / "all.gpkg")[0])
    assert shapely.area(geometries) == pytest.approx(columns["area_m2"])  # the area of each polygon
    # Valid polygons, one per region (no overlaps: the union has the sum of the areas), the raster's CRS.
    assert shapely.is_valid(geometries).all()
    assert set(shapely.get_type_id(geometries)) <= {3, 6}
    assert shapely.get_num_geometries(geometries).max() == 1
    assert shapely.area(shapely.union_all(geometries)) == pytest.approx(labels.size * PIXEL ** 2)
    info = pyogrio.read_info(tmp_path / "mmu.gpkg")
    assert info["crs"] == "EPSG:32633" and info["geometry_type"] == "MultiPolygon"
    assert list(info["fields"]) == ["class", "class_name", "area_m2", "confidence"]
    names = {c.value: c.name for c in scene.classes}
    assert all(names[v] == n for v, n in zip(columns["class"], columns["class_name"]))
    assert np.isnan(columns["confidence"]).all()  # no confidence raster given: null
    assert not [name for name in folder_listing(tmp_path) if "partial" in name]


def test_blocks_give_the_same_polygons_as_one_block(tmp_path):
    labels = smooth_field(320, 200, seed=1, noise=0.01)
    labels[100:130, 40:90] = CLASS_NODATA
    raster = write_class_raster(tmp_path / "classes.tif", labels)
    options = dict(min_area=4 * PIXEL ** 2, simplify=15.0)
    one = vectorize_file(raster, tmp_path / "one.gpkg", **options)  # 320 rows: one block
    many = vectorize_file(raster, tmp_path / "many.gpkg", block_rows=64, **options)  # five blocks
    first, first_columns = read_layer(tmp_path / "one.gpkg")
    second, second_columns = read_layer(tmp_path / "many.gpkg")
    assert len(first) == len(second) == one.polygons == many.polygons
    assert not one.warnings and not many.warnings  # nothing repaired, no block left unsimplified
    assert shapely.equals(in_order(first), in_order(second)).all()
    assert one.areas == pytest.approx(many.areas, rel=1e-12)
    assert sorted(zip(first_columns["class"], first_columns["area_m2"].round(6))) == \
        sorted(zip(second_columns["class"], second_columns["area_m2"].round(6)))
    # Without simplification too, and with the confidence.
    confidence = tmp_path / "confidence.tif"
    with rasterio.open(raster) as src:
        profile = src.profile | dict(nodata=255)
    with rasterio.open(confidence, "w", **profile) as dst:
        dst.write((np.arange(labels.size).reshape(labels.shape) % 101).astype(np.uint8)[None])
    vectorize_file(raster, tmp_path / "one.gpkg", confidence=confidence)
    vectorize_file(raster, tmp_path / "many.gpkg", confidence=confidence, block_rows=64)
    (first, a), (second, b) = read_layer(tmp_path / "one.gpkg"), read_layer(tmp_path / "many.gpkg")
    assert shapely.equals(in_order(first), in_order(second)).all()
    assert sorted(a["confidence"].round(9)) == sorted(b["confidence"].round(9))


def test_a_region_across_block_edges_is_one_feature(tmp_path):
    labels = np.zeros((300, 120), dtype=np.uint8)
    # A U that goes down through four block edges, along the bottom and back up: joined only at the bottom.
    labels[10:290, 10:20] = 1
    labels[280:290, 10:110] = 1
    labels[10:290, 100:110] = 1
    labels[150:160, 20:100] = 2  # a bar of another class between the arms, touching both
    raster = write_class_raster(tmp_path / "u.tif", labels)
    result = vectorize_file(raster, tmp_path / "u.gpkg", block_rows=64)
    geometries, columns = read_layer(tmp_path / "u.gpkg")
    u = geometries[columns["class"] == 1]
    assert len(u) == 1 and shapely.get_num_geometries(u[0]) == 1 and shapely.is_valid(u[0])
    assert columns["area_m2"][columns["class"] == 1][0] == pytest.approx((labels == 1).sum() * PIXEL ** 2)
    assert result.polygons_per_class == {0: 2, 1: 1, 2: 1}  # the background inside the U is its own region
    assert shapely.get_num_interior_rings(shapely.get_geometry(geometries[columns["class"] == 0], 0)).max() == 1


def test_a_region_touching_itself_across_a_block_edge_is_one_valid_polygon(tmp_path):
    labels = np.zeros((128, 64), dtype=np.uint8)
    # A ring of class 1 whose two ends meet only at a corner, on the block edge at row 64: one region
    # (connected the long way round) with a hole that touches its outline at that corner.
    labels[20:64, 10:14] = 1  # left arm, down to row 63
    labels[20:24, 10:50] = 1  # top
    labels[20:100, 46:50] = 1  # right arm
    labels[96:100, 14:50] = 1  # bottom, from column 14
    labels[64:100, 14:18] = 1  # from row 64, column 14: touches the left arm's pixel (63, 13) at a corner only
    raster = write_class_raster(tmp_path / "ring.tif", labels)
    for rows in (64, 128):
        result = vectorize_file(raster, tmp_path / f"ring{rows}.gpkg", block_rows=rows)
        geometries, columns = read_layer(tmp_path / f"ring{rows}.gpkg")
        ring = geometries[columns["class"] == 1]
        assert len(ring) == 1 and shapely.is_valid(ring[0]) and not result.warnings
        assert shapely.area(ring[0]) == pytest.approx((labels == 1).sum() * PIXEL ** 2)
        assert result.polygons_per_class == {0: 2, 1: 1}  # the inside is its own region
    first, second = (read_layer(tmp_path / f"ring{rows}.gpkg")[0] for rows in (64, 128))
    assert shapely.equals(in_order(first), in_order(second)).all()


def test_geographic_crs_areas_are_in_square_metres(tmp_path):
    labels = smooth_field(200, 160, seed=2)
    transform = from_origin(10.0, 45.0, 1e-4, 1e-4)  # about 7.9 m x 11.1 m at 45 degrees north
    raster = write_class_raster(tmp_path / "geo.tif", labels, crs="EPSG:4326", transform=transform)
    result = vectorize_file(raster, tmp_path / "geo.gpkg")
    _, columns = read_layer(tmp_path / "geo.gpkg")
    # The exact ellipsoidal (WGS 84) area of each row of pixels: a band between two parallels.
    a, e2 = 6378137.0, 0.0066943799901413165
    e = math.sqrt(e2)

    def q(latitude):
        s = np.sin(np.radians(latitude))
        return (1 - e2) * (s / (1 - e2 * s * s) - np.log((1 - e * s) / (1 + e * s)) / (2 * e))

    edges = 45.0 - np.arange(201) * 1e-4
    row_area = a * a * np.radians(1e-4) * (q(edges[:-1]) - q(edges[1:])) / 2
    for value in range(5):
        exact = (row_area[:, None] * (labels == value)).sum()
        assert area_per_class(columns["class"], columns["area_m2"])[value] == pytest.approx(exact, rel=1e-6)
        assert result.areas[value] == pytest.approx(exact, rel=1e-6)
    assert result.area_unit == "m2" and pyogrio.read_info(tmp_path / "geo.gpkg")["crs"] == "EPSG:4326"
    # The unit in m², converted at the centre latitude, and said so.
    result = vectorize_file(raster, tmp_path / "geo.gpkg", min_area=1000.0, simplify=10.0)
    pixel_area = row_area[100]
    assert result.min_area_pixels == math.ceil(1000.0 / pixel_area)
    assert any("centre latitude" in note for note in result.warnings)
    geometries, _ = read_layer(tmp_path / "geo.gpkg")
    assert shapely.is_valid(geometries).all()


def test_mean_confidence_per_polygon(tmp_path):
    labels = np.zeros((80, 60), dtype=np.uint8)
    labels[:, 30:] = 1
    raster = write_class_raster(tmp_path / "classes.tif", labels)
    scores = np.where(labels == 0, 80, 60).astype(np.uint8)
    scores[:40, 30:] = 90  # class 1: half at 90, half at 60 -> 75
    scores[0, :30] = 255  # nodata in the confidence: not counted
    confidence = tmp_path / "classes_confidence.tif"
    with rasterio.open(raster) as src:
        profile = src.profile | dict(nodata=255)
    with rasterio.open(confidence, "w", **profile) as dst:
        dst.write(scores[None])
    vectorize_file(raster, tmp_path / "polygons.gpkg", confidence=confidence, block_rows=64)
    _, columns = read_layer(tmp_path / "polygons.gpkg")
    got = dict(zip(columns["class"].tolist(), columns["confidence"].tolist()))
    assert got == {0: pytest.approx(80.0), 1: pytest.approx(75.0)}


def test_simplification_keeps_a_valid_coverage(tmp_path):
    labels = smooth_field(200, 180, seed=3, noise=0.005)
    labels[:12, :40] = CLASS_NODATA
    raster = write_class_raster(tmp_path / "classes.tif", labels)
    vectorize_file(raster, tmp_path / "exact.gpkg")
    vectorize_file(raster, tmp_path / "simple.gpkg", simplify=20.0)
    exact, _ = read_layer(tmp_path / "exact.gpkg")
    simple, columns = read_layer(tmp_path / "simple.gpkg")
    assert len(simple) == len(exact)  # no region lost
    assert shapely.is_valid(simple).all() and not shapely.is_empty(simple).any()
    assert shapely.get_num_coordinates(simple).sum() < 0.5 * shapely.get_num_coordinates(exact).sum()
    # A coverage: no overlaps (the union has the sum of the areas), no gaps (a valid map area of the
    # same size; its outline moves only where it meets nodata, which is simplified as a boundary too).
    union = shapely.union_all(simple)
    assert shapely.area(simple).sum() == pytest.approx(shapely.area(union), abs=1e-6)
    assert shapely.area(union) == pytest.approx((labels != CLASS_NODATA).sum() * PIXEL ** 2, rel=0.01)
    assert shapely.get_num_interior_rings(shapely.get_geometry(union, 0)) == 0  # no holes: no gaps
    # Each polygon (features come in the same order) overlaps its region: none jumps across a boundary.
    overlap = shapely.area(shapely.intersection(exact, simple)) / shapely.area(exact)
    assert overlap.min() > 0.25 and np.median(overlap) > 0.9, (overlap.min(), np.median(overlap))
    assert columns["area_m2"] == pytest.approx(shapely.area(simple))


# --- style -----------------------------------------------------------------------------------------


def test_the_geopackage_holds_its_qgis_style(tmp_path):
    labels = smooth_field(64, 64, seed=5)
    raster = write_class_raster(tmp_path / "classes.tif", labels)
    vectorize_file(raster, tmp_path / "classes.gpkg")
    assert sorted(layer for layer, _ in pyogrio.list_layers(tmp_path / "classes.gpkg")) == ["classes", "layer_styles"]
    _, _, _, fields = read_vector(tmp_path / "classes.gpkg", layer="layer_styles")
    meta = pyogrio.read_info(tmp_path / "classes.gpkg", layer="layer_styles")
    row = {name: values[0] for name, values in zip(meta["fields"], fields)}
    assert row["f_table_name"] == "classes" and row["f_geometry_column"] == "geom" and row["useAsDefault"]
    renderer = ET.fromstring(row["styleQML"].split("\n", 1)[1]).find("renderer-v2")
    assert renderer.get("type") == "categorizedSymbol" and renderer.get("attr") == "class"
    categories = [(int(c.get("value")), c.get("label")) for c in renderer.iter("category")]
    assert categories == [(c.value, c.name) for c in CLASSES]
    colours = [s.find(".//Option[@name='color']").get("value") for s in renderer.iter("symbol")]
    assert colours == ["%d,%d,%d,255" % tuple(int(c.color[i:i + 2], 16) for i in (1, 3, 5)) for c in CLASSES]
    # A raster with a colour table and no names: "class N" in the table's colours.
    Path(f"{raster}.aux.xml").unlink()
    vectorize_file(raster, tmp_path / "unnamed.gpkg")
    _, _, _, fields = read_vector(tmp_path / "unnamed.gpkg", layer="layer_styles")
    meta = pyogrio.read_info(tmp_path / "unnamed.gpkg", layer="layer_styles")
    qml = dict(zip(meta["fields"], (values[0] for values in fields)))["styleQML"]
    renderer = ET.fromstring(qml.split("\n", 1)[1]).find("renderer-v2")
    assert [c.get("label") for c in renderer.iter("category")] == [f"class {c.value}" for c in CLASSES]
    assert [s.find(".//Option[@name='color']").get("value") for s in renderer.iter("symbol")] == colours
    # Classes given by the caller win over the raster's.
    vectorize_file(raster, tmp_path / "named.gpkg", classes="0:lake,1:soil,2:crops,3:woods,4:town")
    _, columns = read_layer(tmp_path / "named.gpkg")
    assert set(columns["class_name"]) == {"lake", "soil", "crops", "woods", "town"}


def test_engine_copies_match_and_vectorize_does_not_import_torch():
    assert engine.default_color(1) == PALETTE[1] and engine.CLASS_NODATA == CLASS_NODATA
    code = "import sys, cwsam_core.vector.vectorize; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# --- bad input: one line, nothing written ------------------------------------------------------------


def expect_refusal(call, folder: Path, *words: str) -> str:
    before = folder_listing(folder)
    with pytest.raises(VectorizeError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and all(word in message for word in words), message
    assert folder_listing(folder) == before  # nothing written, nothing left
    return message


def test_bad_input_is_one_clear_line_and_writes_nothing(tmp_path):
    labels = smooth_field(64, 64, seed=6)
    raster = write_class_raster(tmp_path / "classes.tif", labels)
    sar = tmp_path / "sar.tif"
    with rasterio.open(sar, "w", driver="GTiff", width=32, height=32, count=2, dtype="float32",
                       crs="EPSG:32633", transform=from_origin(0, 0, 10, 10)) as dst:
        dst.write(np.zeros((2, 32, 32), dtype=np.float32))
    text = tmp_path / "notes.txt"
    text.write_text("not a raster")
    expect_refusal(lambda: vectorize_file(sar, tmp_path / "out.gpkg"), tmp_path,
                   "not a class raster", "2 band(s) of float32")
    expect_refusal(lambda: vectorize_file(text, tmp_path / "out.gpkg"), tmp_path, "not a raster that GDAL can read")
    expect_refusal(lambda: vectorize_file(tmp_path / "missing.tif", tmp_path / "out.gpkg"), tmp_path, "not found")
    # The output is the input (also spelled another way, or through a link), or the confidence raster.
    expect_refusal(lambda: vectorize_file(raster, raster), tmp_path, "would overwrite the class raster")
    expect_refusal(lambda: vectorize_file(raster, tmp_path / "sub" / ".." / "classes.tif"), tmp_path,
                   "would overwrite")
    link = tmp_path / "link.gpkg"
    link.symlink_to(raster)
    expect_refusal(lambda: vectorize_file(raster, link), tmp_path, "would overwrite the class raster")
    expect_refusal(lambda: vectorize_file(raster, sar, confidence=sar), tmp_path,
                   "would overwrite the confidence raster")
    expect_refusal(lambda: vectorize_file(raster, tmp_path / "out.shp"), tmp_path, "GeoPackage", ".gpkg")
    expect_refusal(lambda: vectorize_file(raster, tmp_path / "out.gpkg", confidence=sar), tmp_path,
                   "confidence raster", "2 bands")
    expect_refusal(lambda: vectorize_file(raster, tmp_path / "out.gpkg", min_area=-1), tmp_path, "minimum area")
    # A folder that does not exist, or cannot be written.
    expect_refusal(lambda: vectorize_file(raster, tmp_path / "nowhere" / "out.gpkg"), tmp_path, "does not exist")
    locked = tmp_path / "locked"
    locked.mkdir()
    if os.geteuid() != 0:  # root writes anywhere: only the write itself can fail (below)
        locked.chmod(0o555)
        try:
            expect_refusal(lambda: vectorize_file(raster, locked / "out.gpkg"), locked, "permission denied")
        finally:
            locked.chmod(0o755)
    expect_refusal(lambda: vectorize_file(raster, Path("/proc/cwsam-polygons.gpkg")), tmp_path, "cannot write")


def test_no_crs_writes_polygons_without_areas(tmp_path):
    labels = smooth_field(64, 64, seed=7)
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", nodata=255) as dst:
        dst.write(labels[None])
    result = vectorize_file(path, tmp_path / "plain.gpkg")
    _, columns = read_layer(tmp_path / "plain.gpkg")
    assert np.isnan(columns["area_m2"]).all() and result.area_unit == "pixels"
    assert result.areas == pytest.approx({v: float((labels == v).sum()) for v in range(5)})
    assert set(columns["class_name"]) == {f"class {v}" for v in range(5)}  # no names in the raster
    expect_refusal(lambda: vectorize_file(path, tmp_path / "x.gpkg", min_area=100), tmp_path,
                   "no coordinate reference system")


def test_cancel_leaves_nothing(tmp_path):
    raster = write_class_raster(tmp_path / "classes.tif", smooth_field(256, 64, seed=8))
    before = folder_listing(tmp_path)
    calls = []

    def cancel_after_two_blocks() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(VectorizeCancelled):
        vectorize_file(raster, tmp_path / "out.gpkg", min_area=300, block_rows=64,
                       should_cancel=cancel_after_two_blocks)
    assert folder_listing(tmp_path) == before
    fractions = []
    vectorize_file(raster, tmp_path / "out.gpkg", block_rows=64, progress=lambda f, m: fractions.append(f))
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 5


# --- the command ----------------------------------------------------------------------------------


def test_cli_vectorize_prints_polygons_and_areas(tmp_path, capsys):
    labels = smooth_field(96, 80, seed=9)
    raster = write_class_raster(tmp_path / "classes.tif", labels)
    code = main(["vectorize", str(raster), "--output", str(tmp_path / "classes.gpkg"), "--min-area", "500",
                 "--simplify", "10", "--quiet"])
    out = capsys.readouterr().out
    assert code == 0
    geometries, columns = read_layer(tmp_path / "classes.gpkg")
    assert f"{len(geometries):,} polygons written to {tmp_path / 'classes.gpkg'}" in out
    for c in CLASSES:
        line = next(line for line in out.splitlines() if line.startswith(c.name))
        count = int((columns["class"] == c.value).sum())
        assert line.split()[-2].replace(",", "") == str(count)
        assert float(line.split()[-1].replace(",", "")) == pytest.approx(
            columns["area_m2"][columns["class"] == c.value].sum(), abs=0.1)
    assert "area (m²)" in out


def test_cli_vectorize_bad_input_exits_2_with_one_line(tmp_path, capsys):
    raster = write_class_raster(tmp_path / "classes.tif", smooth_field(32, 32, seed=10))
    for argv in (["vectorize", str(raster), "--output", str(raster)],
                 ["vectorize", str(tmp_path / "missing.tif"), "--output", str(tmp_path / "out.gpkg")],
                 ["vectorize", str(raster), "--output", str(tmp_path / "no" / "out.gpkg")],
                 ["vectorize", str(raster), "--output", str(tmp_path / "out.gpkg"), "--min-area", "-5"]):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("cwsam vectorize: error: ") and "\n" not in err, err
    assert not (tmp_path / "out.gpkg").exists()
