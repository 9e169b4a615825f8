"""Polygon training labels: vector layers read onto an image's grid, window by window."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import rasterio
import shapely
from pyogrio.raw import (  # after cwsam_core.vector.polygons, which quiets pyogrio's import warnings
    write as write_vector,
)
from rasterio.errors import NotGeoreferencedWarning
from rasterio.transform import from_origin
from rasterio.warp import transform as transform_points
from rasterio.windows import Window

from cwsam_core.common.card import ClassInfo, default_color
from cwsam_core.common.labels import IGNORE_INDEX
from cwsam_core.errors import TrainingDataError
from cwsam_core.vector.polygons import PolygonLabels, polygon_classes

CLASSES = [ClassInfo(1, "water", "#0000ff"), ClassInfo(5, "urban", "#ff0000")]
UTM = "EPSG:32633"
UTM_TRANSFORM = from_origin(500000, 4600000, 10, 10)  # 64 x 64 px: x 500000..500640, y 4599360..4600000
SIZE = 64


def write_image(path, crs=UTM, transform=UTM_TRANSFORM, size=SIZE):
    profile = dict(driver="GTiff", width=size, height=size, count=2, dtype="float32", transform=transform)
    if crs is not None:
        profile["crs"] = crs
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # pixel-coordinate images are wanted here
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(np.zeros((2, size, size), np.float32))
    return path


def write_polygons(path, geometries, fields, crs=UTM, driver="GPKG", layer=None, masks=None,
                   geometry_type="Unknown"):
    """A vector file of ``geometries`` with ``fields`` {name: values}; ``masks`` {name: null mask}."""
    masks = masks or {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "'crs' was not provided")  # files without a CRS are wanted here
        write_vector(str(path), geometry=shapely.to_wkb(np.array(geometries, dtype=object)),
                     field_data=[np.asarray(v) for v in fields.values()], fields=list(fields),
                     field_mask=[masks.get(name) for name in fields], crs=crs, driver=driver, layer=layer,
                     geometry_type=geometry_type)
    return path


def pixel_centres(transform, size=SIZE):
    """(x, y) of every pixel centre, each (size, size), in the image CRS."""
    cols, rows = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5)
    return transform * (cols, rows)


def centre_mask(geometry, transform=UTM_TRANSFORM, size=SIZE):
    xs, ys = pixel_centres(transform, size)
    return shapely.contains_xy(geometry, xs, ys)


def open_labels(tmp_path, vector, classes=CLASSES, field="cls", image_crs=UTM, transform=UTM_TRANSFORM, **kw):
    image = write_image(tmp_path / "image.tif", crs=image_crs, transform=transform)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(image) as img:
            return PolygonLabels(vector, img, field, classes, **kw)


# Polygons on the UTM image, vertices off pixel centres so the pixel-centre rule is unambiguous.
TRIANGLE = shapely.Polygon([(500052.3, 4599931.7), (500301.1, 4599987.2), (500211.9, 4599702.4)])
SQUARE = shapely.box(500403.3, 4599412.1, 500598.7, 4599613.9)


def test_sparse_polygons_label_their_pixels_and_leave_the_rest_ignored(tmp_path):
    vector = write_polygons(tmp_path / "labels.gpkg", [TRIANGLE, SQUARE], {"cls": np.array([1, 5], np.int32)})
    labels = open_labels(tmp_path, vector)
    expected = np.full((SIZE, SIZE), IGNORE_INDEX, np.int64)
    expected[centre_mask(TRIANGLE)] = 0
    expected[centre_mask(SQUARE)] = 1
    assert (expected == 0).sum() > 100 and (expected == 1).sum() > 300
    full = labels.read(Window(0, 0, SIZE, SIZE))
    assert full.dtype == np.int64 and full.shape == (SIZE, SIZE)
    np.testing.assert_array_equal(full, expected)
    assert (full == IGNORE_INDEX).mean() > 0.7  # sparse: everything outside the polygons is unlabelled
    # Windows read on their own agree with the whole image; past the edges they are padded with ignore.
    padded = np.pad(expected, 20, constant_values=IGNORE_INDEX)
    for col, row, w, h in [(3, 5, 17, 29), (40, 36, 24, 28), (-20, -20, 40, 40), (50, 50, 30, 30), (70, 0, 8, 8)]:
        window = labels.read(Window(col, row, w, h))
        np.testing.assert_array_equal(window, padded[row + 20:row + 20 + h, col + 20:col + 20 + w])
    stats = labels.stats()
    assert stats.class_pixels.tolist() == [(expected == 0).sum(), (expected == 1).sum()]
    assert stats.unnamed == {} and stats.conflict == 0
    assert labels.stats(block=10).class_pixels.tolist() == stats.class_pixels.tolist()
    assert labels.repaired == 0 and labels.skipped == 0 and labels.path == vector
    labels.close()


@pytest.mark.parametrize("driver,suffix,crs", [("GPKG", "gpkg", "EPSG:32633"), ("GeoJSON", "geojson", "EPSG:3857")])
def test_polygons_in_a_projected_crs_land_on_the_right_pixels_of_a_geographic_image(tmp_path, driver, suffix, crs):
    transform = from_origin(15.0, 41.5, 0.0002, 0.0002)  # 64 px: about 1.07 km x 1.42 km
    (cx,), (cy,) = transform_points("EPSG:4326", crs, [15.0064], [41.4936])
    hexagon = shapely.Polygon([(cx + 380 * np.cos(a), cy + 520 * np.sin(a)) for a in np.linspace(0.3, 6.58, 7)[:-1]])
    # Reaches 5 km west of the image: clipped near the image before reprojection.
    west = shapely.box(cx - 5000, cy - 500, cx - 400, cy + 500)
    vector = write_polygons(tmp_path / f"labels.{suffix}", [hexagon, west], {"cls": np.array([1, 5])}, crs=crs,
                            driver=driver)
    labels = open_labels(tmp_path, vector, image_crs="EPSG:4326", transform=transform)
    out = labels.read(Window(0, 0, SIZE, SIZE))
    # Expected independently: pixel centres taken into the polygons' CRS and tested there.
    lon, lat = pixel_centres(transform)
    px, py = (np.asarray(v).reshape(SIZE, SIZE) for v in transform_points("EPSG:4326", crs, lon.ravel(), lat.ravel()))
    expected = np.full((SIZE, SIZE), IGNORE_INDEX, np.int64)
    expected[shapely.contains_xy(hexagon, px, py)] = 0
    expected[shapely.contains_xy(west, px, py)] = 1
    # Pixel centres within 0.5 m of an edge may fall either way (edges are densified, not exact curves).
    near_edge = np.minimum(shapely.distance(hexagon.boundary, shapely.points(px, py)),
                           shapely.distance(west.boundary, shapely.points(px, py))) < 0.5
    assert (expected == 0).sum() > 600 and (expected == 1).sum() > 150
    assert near_edge.sum() < 40
    np.testing.assert_array_equal(out[~near_edge], expected[~near_edge])
    assert labels.stats().class_pixels.sum() == (out != IGNORE_INDEX).sum()



def test_long_edges_follow_their_curve_after_reprojection(tmp_path):
    # 64 px of 0.2 degrees; a Web Mercator triangle whose 2000 km diagonal crosses the whole image. In
    # degrees that edge is a curve bulging by several pixels: the edges must be densified before reprojection.
    transform = from_origin(10.0, 50.0, 0.2, 0.2)
    (x0, x1), (y0, y1) = transform_points("EPSG:4326", "EPSG:3857", [9.0, 23.8], [36.2, 51.0])
    triangle = shapely.Polygon([(x0, y0), (x1, y1), (x1, y0)])
    vector = write_polygons(tmp_path / "labels.gpkg", [triangle], {"cls": np.array([1])}, crs="EPSG:3857")
    out = open_labels(tmp_path, vector, image_crs="EPSG:4326", transform=transform).read(Window(0, 0, SIZE, SIZE))
    lon, lat = pixel_centres(transform)
    px, py = (np.asarray(v).reshape(SIZE, SIZE) for v in transform_points("EPSG:4326", "EPSG:3857", lon.ravel(),
                                                                          lat.ravel()))
    inside = shapely.contains_xy(triangle, px, py)
    near = shapely.distance(triangle.boundary, shapely.points(px, py)) < 2000  # 2 km of ~30 km pixels
    assert inside.sum() > 1000 and near.sum() < 40
    np.testing.assert_array_equal((out == 0)[~near], inside[~near])

def test_overlaps_of_different_classes_are_ignored_and_counted_same_class_overlaps_are_not(tmp_path, caplog):
    a = shapely.box(500050.5, 4599650.5, 500350.5, 4599950.5)
    b = shapely.box(500250.5, 4599550.5, 500450.5, 4599750.5)  # other class: overlaps a's lower-right corner
    c = shapely.box(500100.5, 4599850.5, 500200.5, 4599990.5)  # same class as a, overlaps it
    vector = write_polygons(tmp_path / "labels.gpkg", [a, b, c], {"cls": np.array([1, 5, 1])})
    labels = open_labels(tmp_path, vector)
    out = labels.read(Window(0, 0, SIZE, SIZE))
    in_a, in_b, in_c = centre_mask(a), centre_mask(b), centre_mask(c)
    conflict = (in_a | in_c) & in_b
    assert conflict.sum() == 100  # 10 x 10 px of 10 m
    assert (out[conflict] == IGNORE_INDEX).all()
    assert (out[(in_a | in_c) & ~in_b] == 0).all() and (in_a & in_c).sum() > 0
    assert (out[in_b & ~in_a] == 1).all()
    assert (out[~(in_a | in_b | in_c)] == IGNORE_INDEX).all()
    with caplog.at_level(logging.WARNING, logger="cwsam"):
        stats = labels.stats(block=16)
    assert stats.conflict == 100
    assert stats.class_pixels.tolist() == [((in_a | in_c) & ~in_b).sum(), (in_b & ~(in_a | in_c)).sum()]
    assert "100 pixels" in caplog.text and "overlap" in caplog.text


def test_invalid_geometries_are_repaired_or_skipped_and_logged(tmp_path, caplog):
    x0, x1, y0, y1 = 500050.3, 500250.9, 4599750.2, 4599950.6
    bow_tie = shapely.Polygon([(x0, y1), (x1, y0), (x1, y1), (x0, y0), (x0, y1)])
    assert not bow_tie.is_valid
    flat = shapely.Polygon([(500300.5, 4599900.5), (500400.5, 4599800.5), (500500.5, 4599700.5)])  # no area
    geometries = [bow_tie, flat, shapely.Point(500100, 4599500), SQUARE, shapely.box(500300.5, 4599400.5, 500380.5,
                  4599480.5), shapely.box(500020.5, 4599420.5, 500090.5, 4599490.5), None]
    values = np.array([1, 1, 1, 5, 7, 1, 1])  # 7: no such class
    null = np.array([False, False, False, False, False, True, False])
    vector = write_polygons(tmp_path / "labels.geojson", geometries, {"cls": values}, driver="GeoJSON",
                            masks={"cls": null})
    with caplog.at_level(logging.WARNING, logger="cwsam"):
        labels = open_labels(tmp_path, vector)
    assert labels.repaired == 1
    assert labels.skipped == 5  # flat, point, class 7, null value, null geometry
    assert "repaired 1 invalid polygon" in caplog.text and "skipped 5 feature(s)" in caplog.text
    assert "not a polygon" in caplog.text and "class not in the class list" in caplog.text
    out = labels.read(Window(0, 0, SIZE, SIZE))
    # The bow-tie becomes its two triangles (built here by hand), both labelled.
    middle = ((x0 + x1) / 2, (y0 + y1) / 2)  # where the diagonals cross
    left = shapely.Polygon([(x0, y1), middle, (x0, y0)])
    right = shapely.Polygon([(x1, y0), middle, (x1, y1)])
    triangles = centre_mask(left) | centre_mask(right)
    assert triangles.sum() > 150 and (out[triangles] == 0).all()
    assert (out[centre_mask(SQUARE)] == 1).all()
    assert ((out == 0) == triangles).all()  # the null-valued box is not labelled
    stats = labels.stats()
    assert stats.unnamed == {7: 64}  # 8 x 8 px of class value 7, reported, not labelled


def test_integer_classes_of_a_field_map_every_feature(tmp_path):
    boxes = [shapely.box(500010.5 + 150 * i, 4599810.5, 500110.5 + 150 * i, 4599910.5) for i in range(4)]
    vector = write_polygons(tmp_path / "labels.gpkg", boxes, {"cls": np.array([9, 2, 5, 2], np.int64)})
    classes = polygon_classes(vector, "cls")
    assert classes == [ClassInfo(2, "class 2", default_color(0)), ClassInfo(5, "class 5", default_color(1)),
                       ClassInfo(9, "class 9", default_color(2))]
    labels = open_labels(tmp_path, vector, classes=classes)
    assert labels.skipped == 0
    out = labels.read(Window(0, 0, SIZE, SIZE))
    for box, index in zip(boxes, [2, 0, 1, 0]):
        assert (out[centre_mask(box)] == index).all()
    # Whole-numbered real fields match values too.
    real = write_polygons(tmp_path / "real.gpkg", boxes[:2], {"cls": np.array([5.0, 1.0])})
    assert [c.value for c in polygon_classes(real, "cls")] == [1, 5]
    out = open_labels(tmp_path, real).read(Window(0, 0, SIZE, SIZE))
    assert (out[centre_mask(boxes[0])] == 1).all() and (out[centre_mask(boxes[1])] == 0).all()


def test_text_classes_match_names_then_integer_values(tmp_path):
    boxes = [shapely.box(500010.5 + 120 * i, 4599810.5, 500110.5 + 120 * i, 4599910.5) for i in range(5)]
    names = np.array([" water ", "urban", "water", "Forest", "4"], dtype=object)
    vector = write_polygons(tmp_path / "labels.gpkg", boxes, {"landcover": names})
    classes = polygon_classes(vector, "landcover")
    assert [(c.value, c.name) for c in classes] == [(0, "4"), (1, "Forest"), (2, "urban"), (3, "water")]
    labels = open_labels(tmp_path, vector, classes=classes, field="landcover")
    assert labels.skipped == 0
    out = labels.read(Window(0, 0, SIZE, SIZE))
    assert [int(out[centre_mask(b)][0]) for b in boxes] == [3, 2, 3, 1, 0]
    # User classes: names are case-sensitive; "4" matches the value 4 when no class is named "4".
    user = [ClassInfo(3, " water", "#0000ff"), ClassInfo(4, "forest", "#00ff00")]
    labels = open_labels(tmp_path, vector, classes=user, field="landcover")
    out = labels.read(Window(0, 0, SIZE, SIZE))
    assert [int(out[centre_mask(b)][0]) for b in boxes] == [0, IGNORE_INDEX, 0, IGNORE_INDEX, 1]
    assert labels.stats().unnamed == {"urban": 100, "Forest": 100}


@pytest.mark.parametrize("transform", [from_origin(1000, 2000, 2, 2), rasterio.Affine.identity()])
def test_without_any_crs_polygons_are_in_the_image_coordinates(tmp_path, transform):
    xs, ys = pixel_centres(transform)
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    poly = shapely.Polygon([(x0 + u * (x1 - x0), y0 + v * (y1 - y0)) for u, v in [(0.13, 0.21), (0.77, 0.3), (0.5, 0.88)]])
    vector = write_polygons(tmp_path / "labels.gpkg", [poly], {"cls": np.array([5])}, crs=None)
    labels = open_labels(tmp_path, vector, image_crs=None, transform=transform)
    out = labels.read(Window(0, 0, SIZE, SIZE))
    expected = centre_mask(poly, transform)
    assert expected.sum() > 500
    np.testing.assert_array_equal(out == 1, expected)
    assert (out[~expected] == IGNORE_INDEX).all()


def test_shapefile_and_layer_choice(tmp_path):
    shp = write_polygons(tmp_path / "labels.shp", [SQUARE], {"cls": np.array([5])}, driver="ESRI Shapefile",
                         geometry_type="Polygon")
    assert (open_labels(tmp_path, shp).read(Window(0, 0, SIZE, SIZE))[centre_mask(SQUARE)] == 1).all()
    gpkg = tmp_path / "two.gpkg"
    write_polygons(gpkg, [TRIANGLE], {"cls": np.array([1])}, layer="first", geometry_type="Polygon")
    write_polygons(gpkg, [SQUARE], {"cls": np.array([5])}, layer="second", geometry_type="Polygon")
    out = open_labels(tmp_path, gpkg, layer="second").read(Window(0, 0, SIZE, SIZE))
    assert (out[centre_mask(SQUARE)] == 1).all() and (out == 0).sum() == 0


def test_a_qgis_layer_exported_to_geopackage(tmp_path, qgis_app):
    from qgis.core import QgsFeature, QgsGeometry, QgsProject, QgsVectorFileWriter, QgsVectorLayer

    # A memory layer in Web Mercator, as a user would draw it over a geographic image, saved by QGIS.
    transform = from_origin(15.0, 41.5, 0.0002, 0.0002)
    (cx,), (cy,) = transform_points("EPSG:4326", "EPSG:3857", [15.0064], [41.4936])
    shapes = {"water": shapely.box(cx - 500, cy - 600, cx - 50, cy + 100),
              "urban": shapely.Polygon([(cx + 80, cy - 400), (cx + 560, cy - 200), (cx + 200, cy + 700)])}
    layer = QgsVectorLayer("Polygon?crs=EPSG:3857&field=landcover:string(20)", "drawn", "memory")
    features = []
    for name, shape in shapes.items():
        feature = QgsFeature(layer.fields())
        feature.setGeometry(QgsGeometry.fromWkt(shape.wkt))
        feature.setAttribute("landcover", name)
        features.append(feature)
    assert layer.dataProvider().addFeatures(features)[0]
    options = QgsVectorFileWriter.SaveVectorOptions()
    options.driverName, options.layerName = "GPKG", "drawn"
    error, message, _, _ = QgsVectorFileWriter.writeAsVectorFormatV3(
        layer, str(tmp_path / "drawn.gpkg"), QgsProject.instance().transformContext(), options)
    assert error == QgsVectorFileWriter.NoError, message
    classes = polygon_classes(tmp_path / "drawn.gpkg", "landcover")
    assert [c.name for c in classes] == ["urban", "water"]
    labels = open_labels(tmp_path, tmp_path / "drawn.gpkg", classes=classes, field="landcover",
                         image_crs="EPSG:4326", transform=transform)
    out = labels.read(Window(0, 0, SIZE, SIZE))
    lon, lat = pixel_centres(transform)
    px, py = (np.asarray(v).reshape(SIZE, SIZE) for v in transform_points("EPSG:4326", "EPSG:3857", lon.ravel(),
                                                                          lat.ravel()))
    for index, name in enumerate(["urban", "water"]):
        inside = shapely.contains_xy(shapes[name], px, py)
        near = shapely.distance(shapes[name].boundary, shapely.points(px, py)) < 0.5
        assert inside.sum() > 300
        np.testing.assert_array_equal((out == index)[~near], inside[~near])
    assert labels.skipped == 0


def error_cases(tmp_path):
    """(name, callable, words the message must hold) for each kind of bad input."""
    ok = {"cls": np.array([1, 5])}
    two = [TRIANGLE, SQUARE]
    text = tmp_path / "notes.gpkg"
    text.write_text("not a geopackage")
    layers = tmp_path / "layers.gpkg"
    write_polygons(layers, [TRIANGLE], {"cls": np.array([1])}, layer="fields")
    write_polygons(layers, [SQUARE], {"cls": np.array([5])}, layer="forest")
    fields = write_polygons(tmp_path / "fields.gpkg", two, {"Class": np.array([1, 5]), "area": np.array([1.0, 2.0])})
    empty = write_polygons(tmp_path / "empty.gpkg", two, {"cls": np.array([1, 5])},
                           masks={"cls": np.array([True, True])})
    points = write_polygons(tmp_path / "points.geojson", [shapely.Point(500100, 4599900),
                                                          shapely.LineString([(500100, 4599900), (500200, 4599800)])],
                            ok, driver="GeoJSON")
    far = write_polygons(tmp_path / "far.gpkg", [shapely.box(600000, 4500000, 600100, 4500100)], {"cls": np.array([1])})
    nocrs = write_polygons(tmp_path / "nocrs.shp", two, ok, crs=None, driver="ESRI Shapefile", geometry_type="Polygon")
    crs = write_polygons(tmp_path / "crs.gpkg", two, ok)
    big = write_polygons(tmp_path / "big.gpkg", two, {"cls": np.array([300, 5])})
    negative = write_polygons(tmp_path / "negative.gpkg", two, {"cls": np.array([-1, 5])})
    fraction = write_polygons(tmp_path / "fraction.gpkg", two, {"cls": np.array([1.5, 5.0])})
    nomatch = write_polygons(tmp_path / "nomatch.gpkg", two, {"cls": np.array([2, 3])})
    return [
        ("missing", lambda: open_labels(tmp_path, tmp_path / "nope.gpkg"), ["not found", "nope.gpkg"]),
        ("not vector", lambda: open_labels(tmp_path, text), ["not a vector file", "GeoPackage"]),
        ("layer missing", lambda: open_labels(tmp_path, layers, layer="roads"), ["roads", "fields, forest"]),
        ("several layers", lambda: open_labels(tmp_path, layers), ["several layers", "fields, forest"]),
        ("field missing", lambda: open_labels(tmp_path, fields, field="class"), ["'class'", "Class, area", "mean"]),
        ("field empty", lambda: open_labels(tmp_path, empty), ["empty in every feature", "another field"]),
        ("no polygons", lambda: open_labels(tmp_path, points), ["no polygons", "1 Point", "1 LineString"]),
        ("no overlap", lambda: open_labels(tmp_path, far),
         ["overlaps", "x 600000..600100, y 4500000..4500100", "x 500000..500640, y 4599360..4600000", "EPSG:32633"]),
        ("image without crs", lambda: open_labels(tmp_path, crs, image_crs=None), ["image has no CRS", "EPSG:32633"]),
        ("polygons without crs", lambda: open_labels(tmp_path, nocrs), ["nocrs.shp has no CRS", "Set Layer CRS"]),
        ("value too big", lambda: open_labels(tmp_path, big), ["outside 0..254", "300"]),
        ("negative value", lambda: polygon_classes(negative, "cls"), ["outside 0..254", "-1"]),
        ("fraction", lambda: polygon_classes(fraction, "cls"), ["1.5", "not a whole number"]),
        ("no class matches", lambda: open_labels(tmp_path, nomatch), ["matches the classes", "2, 3", "1:water"]),
    ]


def test_bad_input_gets_one_clear_error(tmp_path):
    for name, call, words in error_cases(tmp_path):
        with pytest.raises(TrainingDataError) as info:
            call()
        message = str(info.value)
        assert "\n" not in message, name
        for word in words:
            assert word in message, f"{name}: {word!r} not in {message!r}"


def test_polygons_traced_from_a_real_label_in_another_crs_give_the_label_back(tmp_path, shared_data):
    """Sen1Floods11 (EPSG:4326): a quarter of a hand label traced into UTM polygons, read back onto the
    chip's grid, gives that quarter pixel for pixel and nothing elsewhere."""
    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    root = shared_data / "sen1floods11_s1hand"
    with rasterio.open(root / "LabelHand" / "Spain_7370579_LabelHand.tif") as src:
        label = src.read(1)
        part = label[:256, :256]
        traced = list(shapes(part, mask=part >= 0, transform=rasterio.windows.transform(Window(0, 0, 256, 256),
                                                                                        src.transform)))
        utm = transform_geom(src.crs, "EPSG:32630", [g for g, _ in traced])
    vector = write_polygons(tmp_path / "traced.gpkg", [shapely.geometry.shape(g) for g in utm],
                            {"water": np.array([int(v) for _, v in traced])}, crs="EPSG:32630")
    classes = [ClassInfo(0, "not water", "#888888"), ClassInfo(1, "water", "#1f5fff")]
    with rasterio.open(root / "S1Hand" / "Spain_7370579_S1Hand.tif") as img:
        labels = PolygonLabels(vector, img, "water", classes)
        out = labels.read(Window(0, 0, img.width, img.height))
    expected = np.full(label.shape, IGNORE_INDEX, np.int64)
    expected[:256, :256] = np.where(part >= 0, part, IGNORE_INDEX)
    assert (expected == 1).sum() > 1000 and (expected == 0).sum() > 1000
    np.testing.assert_array_equal(out, expected)
    assert labels.stats().class_pixels.tolist() == [(expected == 0).sum(), (expected == 1).sum()]
