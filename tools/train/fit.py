"""Training the reference models with PyTorch (a training tool only: the optional extra
`[train]`, never needed at run time). Deterministic for a given seed, torch version and CPU.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ToolError
from . import graphs
from .evaluate import run_onnx

TOLERANCE = 1e-5  # max |onnxruntime - torch| of the float export, relative to values above 1


def log(message: str) -> None:
    print("train: %s" % message, file=sys.stderr, flush=True)


def import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ToolError("qis model train needs PyTorch (training only): "
                        "pip install 'qis-edge[train]' or pip install torch==2.13.0") from None
    return torch


def build_torch(arch: str) -> Any:
    """The torch module of `arch`, returning (logits, embedding) from forward()."""
    torch = import_torch()
    nn = torch.nn

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = (nn.Linear(i, o) for _, i, o in graphs.MLP_LAYERS)

        def forward(self, x: Any) -> tuple[Any, Any]:
            emb = torch.relu(self.fc2(torch.relu(self.fc1(x))))
            return self.fc3(emb), emb

    class Cnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2, self.conv3 = (
                nn.Conv1d(cin, cout, k, stride=s, padding=p)
                for _, cin, cout, k, s, p in graphs.CNN_CONVS)
            self.fc1, self.fc2 = (nn.Linear(i, o) for _, i, o in graphs.CNN_DENSE)

        def forward(self, x: Any) -> tuple[Any, Any]:
            pool = torch.nn.functional.max_pool1d
            h = pool(torch.relu(self.conv1(x)), 2)
            h = pool(torch.relu(self.conv2(h)), 2)
            h = torch.relu(self.conv3(h)).mean(dim=-1)  # = GlobalAveragePool + Flatten
            emb = torch.relu(self.fc1(h))
            return self.fc2(emb), emb

    class DsCnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            for name, cin, cout, k, s, p, g in graphs.DSCNN_CONVS:
                setattr(self, name, nn.Conv1d(cin, cout, k, stride=s, padding=p, groups=g))
            self.fc1, self.fc2 = (nn.Linear(i, o) for _, i, o in graphs.DSCNN_DENSE)

        def forward(self, x: Any) -> tuple[Any, Any]:
            h = torch.relu(self.conv1(x))
            h = torch.relu(self.pw1(torch.relu(self.dw1(h))))
            h = torch.nn.functional.avg_pool1d(h, 2)
            h = torch.relu(self.pw2(torch.relu(self.dw2(h)))).mean(dim=-1)
            emb = torch.relu(self.fc1(h))
            return self.fc2(emb), emb

    modules = {"ecg_mlp": Mlp, "ecg_cnn": Cnn, "ecg_dscnn": DsCnn}
    if arch not in modules:
        raise ToolError("unknown architecture %r: expected one of %s" % (arch, ", ".join(modules)))
    return modules[arch]()


def train(arch: str, x: np.ndarray, y: np.ndarray, cfg: dict) -> tuple[Any, float]:
    """Train `arch` on (x, y) with Adam + cosine schedule and plain cross-entropy.

    Deterministic: seeded init and shuffling, deterministic algorithms, one thread.
    Returns the model in eval mode and the training time in seconds.
    """
    torch = import_torch()
    torch.manual_seed(cfg["seed"])
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = build_torch(arch)
    xt = torch.tensor(x.reshape(graphs.input_shape(arch, len(x))))
    yt = torch.tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, cfg["epochs"])
    shuffle = torch.Generator().manual_seed(cfg["seed"] + 1)
    start = time.perf_counter()
    model.train()
    for epoch in range(cfg["epochs"]):
        order = torch.randperm(len(xt), generator=shuffle)
        total = 0.0
        for i in range(0, len(xt), cfg["batch"]):
            idx = order[i:i + cfg["batch"]]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(xt[idx])[0], yt[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        if (epoch + 1) % 50 == 0:
            log("%s epoch %d loss %.4f" % (arch, epoch + 1, total / len(xt)))
    model.eval()
    return model, time.perf_counter() - start


def weights_of(model: Any) -> graphs.Weights:
    """The trained weights as numpy float32, keyed by layer name (ONNX layouts)."""
    return {name: (layer.weight.detach().numpy().astype(np.float32),
                   layer.bias.detach().numpy().astype(np.float32))
            for name, layer in model.named_children()}


def check_export(model: Any, path: Path, arch: str, x: np.ndarray) -> float:
    """Largest |onnxruntime - torch| over scores and embedding, relative to the value where
    it exceeds 1 (float32 keeps ~7 digits); raises past TOLERANCE."""
    torch = import_torch()
    xs = x.reshape(graphs.input_shape(arch, len(x)))
    with torch.no_grad():
        logits, emb = model(torch.tensor(xs))
        scores = torch.softmax(logits, dim=1)
    got_scores, got_emb = run_onnx(path, xs)
    diff = max(float((np.abs(got - want) / np.maximum(1.0, np.abs(want))).max())
               for got, want in ((got_scores, scores.numpy()), (got_emb, emb.numpy())))
    if diff > TOLERANCE:
        raise ToolError("%s: onnxruntime differs from torch by %.3g (> %g)" % (path, diff, TOLERANCE))
    return diff

