"""`cwsam train` and `cwsam evaluate` end to end on a simulated scene."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cwsam_core.simulate import simulate_scene, write_scene

CWSAM = Path(sys.executable).with_name("cwsam")


def cwsam(*args) -> subprocess.CompletedProcess:
    return subprocess.run([str(CWSAM), *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli_scene")
    return write_scene(simulate_scene(384, 384, seed=4), folder / "sar.tif", folder / "labels.tif")


def test_train_then_evaluate(tmp_path, scene):
    image, labels = scene
    model = tmp_path / "model.cwsam.pt"
    classes = "0:water:#1f78b4,1:bare soil,2:cropland,3:forest,4:urban:#d7191c"
    result = cwsam("train", "--image", image, "--labels", labels, "--backbone", "vit_nano", "--tile-size", 64,
                   "--classes", classes, "--epochs", 3, "--steps-per-epoch", 10, "--batch-size", 8, "--lr", 3e-3,
                   "--device", "cpu", "--seed", 1, "--output", model, "--quiet")
    assert result.returncode == 0, result.stderr
    assert "Best validation mIoU" in result.stdout and model.is_file()
    info = cwsam("info", model)
    assert "vit_nano (input 64 x 64 px)" in info.stdout and "water" in info.stdout

    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"image,label\n{image},{labels}\n")
    evaluated = cwsam("evaluate", "--model", model, "--pairs", pairs, "--device", "cpu", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert set(report) == {"miou", "overall_accuracy", "fwiou", "kappa", "pixels", "per_class"}
    assert report["pixels"] == 384 * 384
    assert [r["name"] for r in report["per_class"]] == ["water", "bare soil", "cropland", "forest", "urban"]
    assert set(report["per_class"][0]) == {"value", "name", "iou", "precision", "recall", "f1", "pixels"}
    assert 0 < report["miou"] <= 1
    table = cwsam("evaluate", "--model", model, "--image", image, "--labels", labels, "--device", "cpu")
    assert table.returncode == 0 and "mIoU" in table.stdout and "urban" in table.stdout


def test_train_errors_are_one_line(tmp_path, scene):
    image, labels = scene
    bad = cwsam("train", "--image", image, "--labels", tmp_path / "nope.tif", "--backbone", "vit_nano",
                "--classes", "0:a,1:b", "--output", tmp_path / "m.pt", "--quiet")
    assert bad.returncode == 2 and "label raster not found" in bad.stderr and "Traceback" not in bad.stderr
    bad = cwsam("train", "--image", image, "--labels", labels, "--backbone", "vit_nano", "--classes", "x",
                "--output", tmp_path / "m.pt", "--quiet")
    assert bad.returncode == 2 and "VALUE:NAME" in bad.stderr
    bad = cwsam("train", "--image", image, "--labels", labels, "--backbone", "vit_nano", "--classes", "0:a,1:b",
                "--class-weights", "1", "--output", tmp_path / "m.pt", "--quiet")
    assert bad.returncode == 2 and "--class-weights needs 2 non-negative numbers" in bad.stderr
    bad = cwsam("train", "--backbone", "vit_nano", "--output", tmp_path / "m.pt")
    assert bad.returncode == 2 and "--pairs" in bad.stderr


def _polygons_from_labels(labels: Path, path: Path, crs: str, keep_every: int) -> list:
    """Vectorise a label raster into class-named polygons in ``crs``, keeping every ``keep_every``-th
    region so the labelling is sparse. Returns the class names written, one per polygon."""
    import numpy as np
    import pyogrio.raw
    import rasterio
    import shapely
    import shapely.geometry
    from rasterio.features import shapes
    from rasterio.warp import transform_geom

    from cwsam_core.simulate import SIMULATED_CLASSES

    names = {c.value: c.name for c in SIMULATED_CLASSES}
    with rasterio.open(labels) as src:
        values, source_crs = src.read(1), src.crs
        regions = list(shapes(values, mask=values != 255, transform=src.transform))
    kept = [(geometry, int(value)) for i, (geometry, value) in enumerate(regions) if i % keep_every == 0]
    geometries = np.array([shapely.to_wkb(shapely.geometry.shape(transform_geom(source_crs, crs, g)))
                           for g, _ in kept], dtype=object)
    pyogrio.raw.write(path, geometries, [np.array([names[v] for _, v in kept], dtype=object)], fields=["landcover"],
                      crs=crs, geometry_type="Polygon", driver="GeoJSON")
    return [names[v] for _, v in kept]


def test_train_from_sparse_polygons_in_another_crs(tmp_path):
    # Image in geographic coordinates, polygons in UTM 33N: the polygons are reprojected, not refused.
    image, labels = write_scene(simulate_scene(256, 256, seed=9, crs="EPSG:4326", pixel_size=1e-4, origin=(15.0, 45.0)),
                                tmp_path / "sar.tif", tmp_path / "labels.tif")
    polygons = tmp_path / "labels_utm.geojson"
    names = sorted(set(_polygons_from_labels(labels, polygons, "EPSG:32633", keep_every=2)))
    assert len(names) >= 3
    model = tmp_path / "model.cwsam.pt"
    result = cwsam("train", "--image", image, "--polygons", polygons, "--class-field", "landcover", "--backbone",
                   "vit_nano", "--tile-size", 64, "--epochs", 3, "--steps-per-epoch", 10, "--batch-size", 8, "--lr",
                   3e-3, "--val-fraction", 0.25, "--device", "cpu", "--seed", 1, "--output", model, "--quiet")
    assert result.returncode == 0, result.stderr
    from cwsam_core.model.model_file import read_model_card

    # Class names come from the text field, sorted, with contiguous values.
    assert [(c.value, c.name) for c in read_model_card(model).classes] == list(enumerate(names))
    # The labels name their classes: matched with the model's by name (its numbers follow the sorted names).
    import rasterio

    with rasterio.open(labels) as dataset:
        tagged = {int(key.split("_")[1]): name for key, name in dataset.tags(1).items() if key.startswith("class_")}
    unseen = [str(value) for value, name in tagged.items() if name not in names]
    evaluate = ["evaluate", "--model", model, "--image", image, "--labels", labels, "--device", "cpu", "--json"]
    if unseen:  # a class no polygon held: refused by name until its pixels are left out
        refused = cwsam(*evaluate)
        assert refused.returncode == 2 and "names classes the model does not have" in refused.stderr
        evaluate += ["--ignore-value", *unseen]
    evaluated = cwsam(*evaluate)
    assert evaluated.returncode == 0, evaluated.stderr
    assert "matched by name" in evaluated.stderr or all(tagged[v] == n for v, n in enumerate(names) if v in tagged)


def test_polygon_errors_are_one_line(tmp_path, scene):
    image, labels = scene
    polygons = tmp_path / "labels.geojson"
    _polygons_from_labels(labels, polygons, "EPSG:3857", keep_every=3)  # the scene is in UTM 33N near 41 N, 15 E
    args = ["train", "--image", image, "--polygons", polygons, "--backbone", "vit_nano", "--output", tmp_path / "m.pt",
            "--quiet"]
    missing = cwsam(*args, "--class-field", "klass")
    assert missing.returncode == 2 and "has no field 'klass'" in missing.stderr and "landcover" in missing.stderr
    assert "Traceback" not in missing.stderr
    no_field = cwsam(*args)
    assert no_field.returncode == 2 and "--class-field" in no_field.stderr

    import numpy as np
    import pyogrio.raw
    import shapely

    far = tmp_path / "far.gpkg"  # a square in the Pacific, nowhere near the image
    pyogrio.raw.write(far, np.array([shapely.to_wkb(shapely.box(-1.5e7, 0, -1.4e7, 1e5))], dtype=object),
                      [np.array(["water"], dtype=object)], fields=["landcover"], crs="EPSG:3857",
                      geometry_type="Polygon", driver="GPKG")
    away = cwsam("train", "--image", image, "--polygons", far, "--class-field", "landcover", "--classes",
                 "0:water,1:land", "--backbone", "vit_nano", "--output", tmp_path / "m.pt", "--quiet")
    assert away.returncode == 2 and "overlaps the image" in away.stderr and "Traceback" not in away.stderr
    assert not (tmp_path / "m.pt").exists()


def test_full_disk_keeps_the_previous_model_file(tmp_path, scene):
    """A real write failure (the file size limit of the process, as a full disk behaves) while saving."""
    image, labels = scene
    model = tmp_path / "model.cwsam.pt"
    args = ["train", "--image", image, "--labels", labels, "--backbone", "vit_nano", "--tile-size", 64,
            "--classes", "0:water,1:bare soil,2:cropland,3:forest,4:urban", "--epochs", 1, "--steps-per-epoch", 2,
            "--device", "cpu", "--output", model, "--quiet"]
    assert cwsam(*args).returncode == 0
    before = model.read_bytes()
    limited = ("import resource, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
               "resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536)); "
               "from cwsam_core.cli import main; sys.exit(main(sys.argv[1:]))")
    run = subprocess.run([sys.executable, "-c", limited, *map(str, args), "--seed", "2"], capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 2, run.stderr
    assert "could not write" in run.stderr and "previous file there is intact" in run.stderr
    assert "Traceback" not in run.stderr
    assert model.read_bytes() == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
