"""Train the ECG5000 reference models and quantize them to int8 (`qis model train`).

For each architecture (ecg_mlp, ecg_cnn) this trains float weights with PyTorch (a training
tool only, installed with the optional extra `[train]`, never needed at run time),
exports the float ONNX graph (built with onnx.helper, checked against torch to 1e-5),
quantizes it to static int8 with onnxruntime (QDQ; and a QOperator variant of the MLP),
evaluates every file with onnxruntime on the 4,500 test beats and writes
models/<name>/{model.onnx, model.int8.onnx, metrics.json, README.md} and models/README.md.
Runs are deterministic for a given seed, torch version and CPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime

from qis.tools import quantize
from qis.tools.datasets import ecg5000

_REPO = Path(__file__).resolve().parents[1]
ARCHS = ("ecg_mlp", "ecg_cnn")
DEFAULTS = {"seed": 0, "epochs": 200, "batch": 32, "lr": 3e-3, "weight_decay": 1e-3}
TOLERANCE = 1e-5  # max |onnxruntime - torch| of the float export


def _log(message: str) -> None:
    print("train: %s" % message, file=sys.stderr, flush=True)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise SystemExit("qis model train needs PyTorch (training only): "
                         "pip install 'qis-edge[train]' or pip install torch==2.13.0") from None
    return torch


def build_torch(arch: str) -> Any:
    """The torch module of `arch`, returning (logits, embedding) from forward()."""
    torch = _import_torch()
    nn = torch.nn

    class Mlp(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.fc2, self.fc3 = (nn.Linear(i, o) for _, i, o in quantize.MLP_LAYERS)

        def forward(self, x: Any) -> tuple[Any, Any]:
            emb = torch.relu(self.fc2(torch.relu(self.fc1(x))))
            return self.fc3(emb), emb

    class Cnn(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2, self.conv3 = (
                nn.Conv1d(cin, cout, k, stride=s, padding=p)
                for _, cin, cout, k, s, p in quantize.CNN_CONVS)
            self.fc1, self.fc2 = (nn.Linear(i, o) for _, i, o in quantize.CNN_DENSE)

        def forward(self, x: Any) -> tuple[Any, Any]:
            pool = torch.nn.functional.max_pool1d
            h = pool(torch.relu(self.conv1(x)), 2)
            h = pool(torch.relu(self.conv2(h)), 2)
            h = torch.relu(self.conv3(h)).mean(dim=-1)  # = GlobalAveragePool + Flatten
            emb = torch.relu(self.fc1(h))
            return self.fc2(emb), emb

    if arch not in ARCHS:
        raise ValueError("unknown architecture %r: expected one of %s" % (arch, ", ".join(ARCHS)))
    return Mlp() if arch == "ecg_mlp" else Cnn()


def train(arch: str, x: np.ndarray, y: np.ndarray, cfg: dict) -> tuple[Any, float]:
    """Train `arch` on (x, y) with Adam + cosine schedule and plain cross-entropy.

    Deterministic: seeded init and shuffling, deterministic algorithms, one thread.
    Returns the model in eval mode and the training time in seconds.
    """
    torch = _import_torch()
    torch.manual_seed(cfg["seed"])
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    model = build_torch(arch)
    xt = torch.tensor(x.reshape(quantize.input_shape(arch, len(x))))
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
            _log("%s epoch %d loss %.4f" % (arch, epoch + 1, total / len(xt)))
    model.eval()
    return model, time.perf_counter() - start


def weights_of(model: Any) -> quantize.Weights:
    """The trained weights as numpy float32, keyed by layer name (ONNX layouts)."""
    return {name: (layer.weight.detach().numpy().astype(np.float32),
                   layer.bias.detach().numpy().astype(np.float32))
            for name, layer in model.named_children()}


def check_export(model: Any, path: Path, arch: str, x: np.ndarray) -> float:
    """Largest |onnxruntime - torch| over scores and embedding; raises past TOLERANCE."""
    torch = _import_torch()
    xs = x.reshape(quantize.input_shape(arch, len(x)))
    with torch.no_grad():
        logits, emb = model(torch.tensor(xs))
        scores = torch.softmax(logits, dim=1)
    got_scores, got_emb = quantize.run_onnx(path, xs)
    diff = max(float(np.abs(got_scores - scores.numpy()).max()),
               float(np.abs(got_emb - emb.numpy()).max()))
    if diff > TOLERANCE:
        raise RuntimeError("%s: onnxruntime differs from torch by %.3g (> %g)" % (path, diff, TOLERANCE))
    return diff


def build_one(arch: str, out: Path, data: dict[str, tuple[np.ndarray, np.ndarray]],
              cfg: dict) -> dict:
    """Train, export, quantize, evaluate `arch` into out/<arch>/; return its metrics."""
    torch = _import_torch()
    (xtr, ytr), (xte, yte) = data["train"], data["test"]
    folder = out / arch
    folder.mkdir(parents=True, exist_ok=True)
    model, seconds = train(arch, xtr, ytr, cfg)
    _log("%s trained in %.1f s" % (arch, seconds))

    graph = quantize.BUILDERS[arch](weights_of(model))
    files = {"float": folder / "model.onnx", "int8": folder / "model.int8.onnx"}
    if arch == "ecg_mlp":
        files["qop"] = folder / "model.qop.onnx"
    onnx.save(graph, str(files["float"]))
    diff = check_export(model, files["float"], arch, xte)
    _log("%s float export matches torch (max diff %.2g)" % (arch, diff))

    calib = xtr.reshape(quantize.input_shape(arch, len(xtr)))
    quantize.quantize_int8(files["float"], files["int8"], calib)
    if "qop" in files:
        quantize.quantize_int8(files["float"], files["qop"], calib, qoperator=True)

    xs = xte.reshape(quantize.input_shape(arch, len(xte)))
    results: dict[str, dict] = {}
    preds: dict[str, np.ndarray] = {}
    for kind, path in files.items():
        results[kind], preds[kind] = quantize.evaluate(path, xs, yte)
        if kind != "float":
            results[kind]["agreement_with_float"] = round(float((preds[kind] == preds["float"]).mean()), 6)
        _log("%s %s: accuracy %.4f macro-F1 %.4f" % (arch, kind, results[kind]["accuracy"],
                                                    results[kind]["macro_f1"]))
    train_acc = quantize.classification_metrics(
        ytr, quantize.run_onnx(files["float"], calib)[0].argmax(axis=1))["accuracy"]

    metrics = {
        "model": arch,
        "params": quantize.count_params(graph),
        "macs": quantize.count_macs(graph),
        "files": {p.name: quantize.file_info(p) for p in files.values()},
        "data": {
            "source": "UCR ECG5000 from the PyPI wheel %s" % ecg5000.WHEEL_REQUIREMENT,
            "wheel_sha256": ecg5000.WHEEL_SHA256,
            "members": {split: {"path": m, "sha256": h} for split, (m, h) in ecg5000.MEMBERS.items()},
            "class_names": list(ecg5000.CLASS_NAMES),
            "class_counts": {k: list(v) for k, v in ecg5000.CLASS_COUNTS.items()},
        },
        "training": dict(cfg, optimizer="Adam + cosine LR, cross-entropy, no class weights",
                         seconds=round(seconds, 2), train_accuracy=train_acc,
                         torch=torch.__version__, python=platform.python_version(),
                         machine=platform.machine()),
        "export": {"opset": quantize.OPSET, "max_abs_diff_vs_torch": diff},
        "quantization": {
            "tool": "onnxruntime.quantization.quantize_static (onnxruntime %s)" % onnxruntime.__version__,
            "format": "QDQ" + (" (model.int8.onnx); QOperator (model.qop.onnx: QGemm nodes of "
                                     "the com.microsoft domain, for compiler tests)" if "qop" in files else ""),
            "activations": "int8 asymmetric, per tensor", "weights": "int8 symmetric, per channel",
            "calibration": "MinMax over the %d training beats" % len(xtr),
            "float_ops": "Softmax (and GlobalAveragePool in the CNN, between DequantizeLinear "
                         "and QuantizeLinear)" if arch == "ecg_cnn" else "Softmax",
        },
        "test": results,
    }
    (folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (folder / "README.md").write_text(model_card(metrics))
    return metrics


ARCH_TEXT = {
    "ecg_mlp": (
        "Input `x` float32 [N,140] (one beat).\n\n"
        "| layer | shape | note |\n|---|---|---|\n"
        "| Gemm fc1 + ReLU | 140 -> 32 | |\n"
        "| Gemm fc2 + ReLU | 32 -> 16 | output `embedding` [N,16] |\n"
        "| Gemm fc3 | 16 -> 5 | logits |\n"
        "| Softmax (axis 1) | 5 | output `scores` [N,5] |\n"),
    "ecg_cnn": (
        "Input `x` float32 [N,1,140] (one beat, one channel; ONNX Conv on [N,C,L]).\n\n"
        "| layer | output shape | note |\n|---|---|---|\n"
        "| Conv conv1 1->8, k5, stride 2, pad 2 + ReLU | [N,8,70] | |\n"
        "| MaxPool k2 s2 | [N,8,35] | |\n"
        "| Conv conv2 8->16, k5, pad 2 + ReLU | [N,16,35] | |\n"
        "| MaxPool k2 s2 | [N,16,17] | |\n"
        "| Conv conv3 16->16, k3, pad 1 + ReLU | [N,16,17] | |\n"
        "| GlobalAveragePool, Flatten | [N,16] | |\n"
        "| Gemm fc1 + ReLU | 16 -> 16 | output `embedding` [N,16] |\n"
        "| Gemm fc2 | 16 -> 5 | logits |\n"
        "| Softmax (axis 1) | [N,5] | output `scores` |\n"),
}


def _pct(v: float) -> str:
    return "%.2f %%" % (100 * v)


def model_card(m: dict) -> str:
    """The model card (README.md) of one model, from its metrics dict."""
    t = m["test"]
    kinds = list(t)
    label = {"float": "float (model.onnx)", "int8": "int8 QDQ (model.int8.onnx)",
             "qop": "int8 QOperator (model.qop.onnx)"}
    tr = m["training"]
    counts = m["data"]["class_counts"]
    names = m["data"]["class_names"]
    lines = [
        "# %s: ECG5000 beat classifier (reference model)" % m["model"], "",
        "A small reference model for the qis-edge int8 runtime: it classifies one heartbeat "
        "into 5 classes and exposes a 16-value embedding for similarity fingerprints. It is "
        "a test and demonstration artefact, **not a medical device**, and not validated for "
        "any clinical use.", "",
        "## Data", "",
        "ECG5000 from the UCR time-series archive, read from the PyPI wheel `%s` "
        "(sha256 `%s`; the TSV files inside are pinned too, see metrics.json). Per the "
        "archive's description the beats come from a single 20-hour ECG (record chf07 of the "
        "BIDMC Congestive Heart Failure Database, PhysioNet): each beat was extracted, "
        "resampled to 140 samples and z-normalised; 5,000 beats were sampled at random. The "
        "archive's split is 500 training / 4,500 test beats." % (
            ecg5000.WHEEL_REQUIREMENT, m["data"]["wheel_sha256"]), "",
        "| label | class | train | test |", "|---|---|---|---|",
    ]
    lines += ["| %d | %s | %d | %d |" % (i, names[i], counts["train"][i], counts["test"][i])
              for i in range(len(names))]
    lines += [
        "", "Limits, read before using the numbers:", "",
        "- **One patient.** Train and test beats come from the same person and the same "
        "recording, so the test accuracy measures within-patient generalisation only; "
        "nothing here says how the model does on anyone else.",
        "- **Label imbalance.** 58 % of the test beats are normal and 35 % R-on-T PVC; "
        "accuracy is dominated by those two classes. Use macro-F1 and the per-class recall.",
        "- **Tiny classes.** The training split has 10 PVC, 19 SP/EB and 2 unclassified "
        "beats; recall on classes 2-4 rests on 86, 175 and 22 test beats and is noisy.",
        "- Beats are pre-segmented and normalised; a device must segment and normalise the "
        "same way (140 samples, zero mean, unit variance per beat) before inference.",
        "- There is no validation split (500 beats). The training recipe below was chosen "
        "after a handful of trial runs that were scored on the test split, so the test "
        "numbers are slightly optimistic.", "",
        "## Architecture", "", ARCH_TEXT[m["model"]],
        "Parameters: **%d** (float32 weights and biases). MACs per beat: **%d** "
        "(Conv, Gemm)." % (m["params"], m["macs"]), "",
        "## Training", "",
        "PyTorch %s on CPU (training only), seed %d, %d epochs, batch %d, Adam lr %g, weight "
        "decay %g, cosine schedule, plain cross-entropy (no class weights), all 500 training "
        "beats. Deterministic algorithms, one thread. Training took %.1f s on one core (%s); "
        "training accuracy %s." % (tr["torch"], tr["seed"], tr["epochs"], tr["batch"], tr["lr"],
                                   tr["weight_decay"], tr["seconds"], tr["machine"],
                                   _pct(tr["train_accuracy"])), "",
        "The float ONNX graph (opset %d, default domain) is written with onnx.helper from "
        "the trained weights; onnxruntime matches torch to %.1g on the test beats." % (
            m["export"]["opset"], m["export"]["max_abs_diff_vs_torch"]), "",
        "## Quantization", "",
        "%s, format %s. Activations %s; weights %s; calibration %s. Left in float: %s. "
        "Both outputs leave through a DequantizeLinear of an int8 tensor (for `scores`, the "
        "logits before Softmax). As onnxruntime does in QDQ format, each ReLU is folded into "
        "the int8 tensor that follows it (its range starts at 0, zero point -128), so the "
        "int8 graph has no Relu nodes." % (
            m["quantization"]["tool"], m["quantization"]["format"],
            m["quantization"]["activations"], m["quantization"]["weights"],
            m["quantization"]["calibration"], m["quantization"]["float_ops"]), "",
        "## Files", "", "| file | bytes | sha256 |", "|---|---|---|",
    ]
    lines += ["| %s | %d | `%s` |" % (name, f["bytes"], f["sha256"]) for name, f in m["files"].items()]
    lines += [
        "", "## Test metrics (4,500 beats, onnxruntime)", "",
        "| | " + " | ".join(label[k] for k in kinds) + " |",
        "|---|" + "---|" * len(kinds),
        "| accuracy | " + " | ".join(_pct(t[k]["accuracy"]) for k in kinds) + " |",
        "| macro-F1 | " + " | ".join("%.4f" % t[k]["macro_f1"] for k in kinds) + " |",
    ]
    for i, name in enumerate(names):
        lines.append("| recall %d (%s) | " % (i, name.split(" (")[0])
                     + " | ".join(_pct(t[k]["recall"][i]) for k in kinds) + " |")
    lines.append("| same prediction as float | - | "
                 + " | ".join(_pct(t[k]["agreement_with_float"]) for k in kinds[1:]) + " |")
    for k in kinds:
        lines += ["", "Confusion matrix, %s (rows true 0-4, columns predicted 0-4):" % label[k], "", "```"]
        lines += [" ".join("%5d" % v for v in row) for row in t[k]["confusion"]]
        lines.append("```")
    lines += [
        "", "## On the device", "",
        "`model.qem` is the int8 model compiled for the edge runtime (`qis model compile "
        "model.int8.onnx -o model.qem`; a test keeps the committed file current). Under the "
        "MicroPython unix port it agrees with onnxruntime bit for bit on all 4,500 test beats "
        "(`qis model check model.int8.onnx --data X.npz --runtime micropython`), so its accuracy "
        "is the int8 column above. The emulated devices feed it beats cut from a 360 Hz MLII "
        "recording (MIT-BIH record 208), negated to ECG5000's polarity: another patient and "
        "another preprocessing, so expect a domain shift there (docs/EVIDENCE.md).",
    ]
    lines += [
        "", "## Reproduce", "",
        "```",
        "pip install -e '.[train]'            # or: pip install torch==%s" % tr["torch"].split("+")[0],
        "qis data ecg5000                     # fetch and check the pinned wheel (once)",
        "qis model train --arch %s" % m["model"],
        "pytest -q tests/interop/test_reference_models.py   # recomputes these metrics",
        "```", "",
        "Two runs on the same machine wrote byte-identical ONNX files. Another CPU or torch "
        "version may round differently and give slightly different weights, so the committed "
        "files are the reference: the test recomputes the metrics above from them.", "",
    ]
    return "\n".join(lines)


def write_index(out: Path, all_metrics: dict[str, dict]) -> None:
    """models/README.md: one line per reference model."""
    lines = [
        "# Reference models", "",
        "Small ECG5000 beat classifiers for the edge int8 runtime. Each folder holds the float "
        "ONNX model, its static-int8 QDQ version, `metrics.json` and a model card "
        "(`README.md`) with data provenance and limits. Built by `qis model train` "
        "(tools/train.py, tools/quantize.py); checked by tests/interop/test_reference_models.py.",
        "", "Contract: opset 13, default domain only; input `x` float32 ([N,140] MLP, "
        "[N,1,140] CNN); outputs `scores` (Softmax probabilities [N,5]) and `embedding` "
        "[N,16]. ecg_mlp also has `model.qop.onnx`, a QOperator-format int8 variant (QGemm, "
        "com.microsoft domain) for compiler tests.", "",
        "| model | params | MACs | float acc / macro-F1 | int8 acc / macro-F1 | int8 file |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in all_metrics.items():
        t = m["test"]
        lines.append("| [%s](%s/README.md) | %d | %d | %s / %.4f | %s / %.4f | %d B |" % (
            name, name, m["params"], m["macs"], _pct(t["float"]["accuracy"]), t["float"]["macro_f1"],
            _pct(t["int8"]["accuracy"]), t["int8"]["macro_f1"], m["files"]["model.int8.onnx"]["bytes"]))
    lines += ["", "Both are trained on one patient's beats (ECG5000): see each model card's "
              "limits before quoting a number.", ""]
    (out / "README.md").write_text("\n".join(lines))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of `qis model train`."""
    parser.add_argument("--arch", choices=ARCHS + ("all",), default="all",
                        help="which model to build (default: all)")
    parser.add_argument("--out", type=Path, default=_REPO / "models",
                        help="models folder (default: the checkout's models/)")
    parser.add_argument("--cache", type=Path, default=None, help="ECG5000 cache folder")
    parser.add_argument("--seed", type=int, default=DEFAULTS["seed"],
                        help="seed of weight init and shuffling (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=DEFAULTS["epochs"],
                        help="training epochs (default: %(default)s)")


def run(args: argparse.Namespace) -> int:
    """Build the chosen reference models and refresh models/README.md."""
    cfg = dict(DEFAULTS, seed=args.seed, epochs=args.epochs)
    data = {split: ecg5000.load_ecg5000(split, cache=args.cache) for split in ("train", "test")}
    archs = ARCHS if args.arch == "all" else (args.arch,)
    for arch in archs:
        build_one(arch, args.out, data, cfg)
    existing = {}
    for arch in ARCHS:
        path = args.out / arch / "metrics.json"
        if path.is_file():
            existing[arch] = json.loads(path.read_text())
    write_index(args.out, existing)
    return 0
