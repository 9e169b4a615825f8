"""How much a per-pixel Gaussian classifier adds to trained models: logits + alpha x its log posterior.

Run on the models a ``bench/bench_train.py`` run left (trained before the pixel expert existed, so their
logits are the network's alone), for every fold and seed of one dataset; alpha "gml" is the Gaussian
classifier alone (it reproduces the benchmark's Gaussian ML row). Prints pooled scores per seed and alpha:

    .venv/bin/python tools/measure_pixel_expert_fusion.py polsf BENCH_MODELS_FOLDER
    .venv/bin/python tools/measure_pixel_expert_fusion.py sen1floods11 BENCH_MODELS_FOLDER [SECOND_FOLDER_FOR_SEED_2]

where the folder is the ``--json`` name without ``.json`` (e.g. bench/out/bench_train_polsf). The engine's
``PixelGaussianExpert`` is this with alpha 1, fitted on sampled training windows instead of all pixels.
"""
import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
torch.set_num_threads(1)
import bench_train as bt

from cwsam_core.common.labels import IGNORE_INDEX
from cwsam_core.model.model_file import read_model_card
from cwsam_core.model.modeling.cwsam import CWSAM
from cwsam_core.training.evaluation import evaluate
from cwsam_core.training.metrics import metrics_from_confusion

warnings.simplefilter("ignore"); logging.disable(logging.WARNING)
S = {}
_orig = CWSAM.forward
def forward(self, x):
    out = _orig(self, x)
    if S.get("alpha", 0) == 0: return out
    raw = x * S["std"].view(1, -1, 1, 1) + S["mean"].view(1, -1, 1, 1)
    means = F.avg_pool2d(F.pad(raw, (2, 2, 2, 2), mode="reflect"), 5, stride=1)
    feats = torch.cat([raw, means], 1).double().permute(0, 2, 3, 1)  # B H W 6
    ll = torch.full(out.shape, -1e4, dtype=torch.float64)
    for c, (mu, prec, logdet) in S["params"].items():
        d = feats - torch.from_numpy(mu)
        ll[:, c] = -0.5 * (torch.einsum("bhwi,ij,bhwj->bhw", d, torch.from_numpy(prec), d) + logdet)
    logpost = torch.log_softmax(ll, 1).clamp(min=-30).float()
    if S["alpha"] == "gml": return logpost
    return out + S["alpha"] * logpost
CWSAM.forward = forward
import os

# ALPHAS="1,2,gml" measures other weights; default as in docs/EVALUATION.md
alphas = [a if a == "gml" else float(a) for a in os.environ.get("ALPHAS", "0,0.25,0.5,1,gml").split(",")]
which = sys.argv[1]
task = bt.tasks(ROOT.parent / "shared" / "data")[which]
folders = [Path(a) for a in sys.argv[2:]]
for seed in [0, 1, 2]:
    pooled = {a: 0 for a in alphas}; per = {a: {} for a in alphas}
    for fold in task.folds:
        candidates = [f / which / f"seed{seed}" / fold.name / "model.cwsam.pt" for f in folders]
        model = next((c for c in candidates if c.is_file()), None)
        if model is None:
            raise SystemExit(f"no model for {which} seed {seed} {fold.name} in {', '.join(map(str, folders))}")
        card = read_model_card(model)
        if card.pixel_expert:
            raise SystemExit(f"{model} already has a pixel expert: measure models trained without one")
        S["mean"] = torch.tensor(card.normalization["mean"]); S["std"] = torch.tensor(card.normalization["std"])
        feats, labels = [], []
        for s in fold.train:
            raw, target, desc = bt.read_labels(s, task)
            ch = bt.model_channels(raw, desc, task)
            keep = target != IGNORE_INDEX
            feats.append(bt.context_features(ch, (5,))[keep]); labels.append(target[keep])
        g = bt.GaussianML().fit(np.concatenate(feats), np.concatenate(labels), len(task.classes))
        S["params"] = g.params
        for a in alphas:
            S["alpha"] = a
            m, _ = evaluate(model, [(s.image, s.labels) for s in fold.test], ignore_values=task.ignore_values, device="cpu")
            pooled[a] = pooled[a] + m.confusion
            per[a][fold.name] = m.iou[1] if which != "polsf" else m.miou
    for a in alphas:
        pm = metrics_from_confusion(pooled[a])
        print(which, "seed", seed, "alpha", a, "pooled mIoU %.3f" % pm.miou, "IoU", np.round(pm.iou, 3).tolist(),
              {k: round(float(v), 3) for k, v in per[a].items()}, flush=True)
