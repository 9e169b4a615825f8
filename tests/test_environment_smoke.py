"""Smoke tests: each real component of the stack works in this environment."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin


@pytest.fixture()
def small_geotiff(tmp_path):
    path = tmp_path / "smoke.tif"
    data = np.arange(37 * 53, dtype=np.float32).reshape(1, 37, 53)
    profile = dict(
        driver="GTiff", width=53, height=37, count=1, dtype="float32",
        crs="EPSG:32633", transform=from_origin(500000, 4600000, 10, 10),
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def test_rasterio_geotiff_opens_in_qgis(qgis_app, small_geotiff):
    from qgis.core import QgsRasterLayer

    layer = QgsRasterLayer(str(small_geotiff), "smoke")
    assert layer.isValid(), layer.error().summary()
    assert (layer.width(), layer.height()) == (53, 37)
    assert layer.crs().authid() == "EPSG:32633"
    assert layer.extent().xMinimum() == pytest.approx(500000)
    assert layer.extent().yMaximum() == pytest.approx(4600000)
    assert layer.bandCount() == 1


def test_qgstask_runs_and_reports_back(qgis_app, qtbot):
    from qgis.core import QgsApplication, QgsTask

    outcome = {}

    def work(task, n):
        return sum(range(n))

    def on_finished(exception, result=None):
        outcome["exception"] = exception
        outcome["result"] = result

    task = QgsTask.fromFunction("smoke sum", work, 1000, on_finished=on_finished)
    QgsApplication.taskManager().addTask(task)
    qtbot.waitUntil(lambda: "result" in outcome, timeout=10000)
    assert outcome["exception"] is None
    assert outcome["result"] == 499500


def test_paletted_renderer_applies(qgis_app, tmp_path):
    from qgis.PyQt.QtGui import QColor
    from qgis.core import QgsPalettedRasterRenderer, QgsRasterLayer

    path = tmp_path / "classes.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8",
        crs="EPSG:4326", transform=from_origin(10, 50, 0.01, 0.01),
    ) as dst:
        dst.write(np.repeat(np.arange(8, dtype=np.uint8) % 3, 8).reshape(1, 8, 8))
    layer = QgsRasterLayer(str(path), "classes")
    assert layer.isValid()
    classes = [
        QgsPalettedRasterRenderer.Class(0, QColor("#0000ff"), "water"),
        QgsPalettedRasterRenderer.Class(1, QColor("#00ff00"), "vegetation"),
        QgsPalettedRasterRenderer.Class(2, QColor("#ff0000"), "building"),
    ]
    layer.setRenderer(QgsPalettedRasterRenderer(layer.dataProvider(), 1, classes))
    renderer = layer.renderer()
    assert isinstance(renderer, QgsPalettedRasterRenderer)
    assert [c.label for c in renderer.classes()] == ["water", "vegetation", "building"]
    assert renderer.classes()[1].color.name() == "#00ff00"


def test_small_sam_forward_pass():
    import torch
    import torchvision
    from segment_anything.modeling import (
        ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer,
    )

    assert torchvision.__version__  # segment_anything imports it: the real one must load
    size, embed = 128, 64
    grid = size // 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=size, patch_size=16, embed_dim=embed, depth=2, num_heads=2,
            out_chans=32, use_rel_pos=True, window_size=4, global_attn_indexes=(1,),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=32, image_embedding_size=(grid, grid), input_image_size=(size, size), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3, transformer_dim=32,
            transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
            iou_head_hidden_dim=32,
        ),
    ).eval()
    image = torch.randint(0, 255, (3, 100, 120), dtype=torch.float32)
    point = torch.tensor([[[40.0, 50.0]]])
    with torch.inference_mode():
        out = sam([{"image": image, "original_size": (100, 120), "point_coords": point,
                    "point_labels": torch.tensor([[1]])}], multimask_output=True)
    assert out[0]["masks"].shape == (1, 3, 100, 120)
    assert out[0]["iou_predictions"].shape == (1, 3)
    assert out[0]["low_res_logits"].shape == (1, 3, 4 * grid, 4 * grid)
    assert torch.isfinite(out[0]["low_res_logits"]).all()
