"""One process of the two-process training test, started by torchrun (see test_distributed.py).

Usage: distributed_worker.py IMAGE LABELS FOLDER. Each rank trains into FOLDER/rank<R>/ (so the test
can see that only rank 0 writes) and saves its trainable weights and the checksum of the first batch
it drew to FOLDER/weights<R>.pt.
"""

import os
import sys
from pathlib import Path

import torch

from cwsam_core.common.card import ClassInfo
from cwsam_core.model.trainable import trainable_names
from cwsam_core.simulate import SIMULATED_CLASSES
from cwsam_core.training import loop as training

BATCH = 2


def main() -> None:
    image, labels, folder = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    rank = int(os.environ["RANK"])
    (folder / f"rank{rank}").mkdir(exist_ok=True)
    first_batch = []
    draw = training.draw_batch

    def recording_draw(*args, **kwargs):
        images, target = draw(*args, **kwargs)
        if len(images) == BATCH:  # a training batch (the pixel expert's draw, the same in every rank, is larger)
            first_batch.append(float(images.double().sum()))
        return images, target

    training.draw_batch = recording_draw  # observe which windows this rank trains on
    built = []
    build = training.build_cwsam
    training.build_cwsam = lambda *a, **k: built.append(build(*a, **k)) or built[-1]
    config = training.TrainConfig(
        backbone="vit_nano", classes=[ClassInfo(c.value, c.name, c.color) for c in SIMULATED_CLASSES],
        output=folder / f"rank{rank}" / "model.cwsam.pt", tile_size=32, epochs=1, steps_per_epoch=2,
        batch_size=BATCH, lr=1e-2, warmup_steps=1, val_fraction=0.25, device="cpu", seed=3,
    )
    result = training.train([training.TrainingSource(image, labels)], config)
    model = built[0]
    names = trainable_names(model)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items() if k in names}
    torch.save({"weights": weights, "first_batch": first_batch[0], "best_miou": result.best_miou},
               folder / f"weights{rank}.pt")


if __name__ == "__main__":
    main()
