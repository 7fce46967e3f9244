"""Model cards (models/<name>/README.md) and the index models/README.md, from metrics.json."""
from __future__ import annotations

from pathlib import Path

from ..datasets import ecg5000


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
    "ecg_dscnn": (
        "Input `x` float32 [N,1,140] (one beat, one channel). A depthwise separable CNN: each "
        "depthwise Conv (group = channels) filters every channel alone, the pointwise 1x1 Conv "
        "mixes channels.\n\n"
        "| layer | output shape | note |\n|---|---|---|\n"
        "| Conv conv1 1->8, k5, stride 2, pad 2 + ReLU | [N,8,70] | |\n"
        "| Conv dw1 8->8, k5, pad 2, group 8 + ReLU | [N,8,70] | depthwise |\n"
        "| Conv pw1 8->16, k1 + ReLU | [N,16,70] | pointwise |\n"
        "| AveragePool k2 s2 | [N,16,35] | |\n"
        "| Conv dw2 16->16, k5, pad 2, group 16 + ReLU | [N,16,35] | depthwise |\n"
        "| Conv pw2 16->16, k1 + ReLU | [N,16,35] | pointwise |\n"
        "| GlobalAveragePool, Flatten | [N,16] | |\n"
        "| MatMul fc1 + Add bias + ReLU | 16 -> 16 | output `embedding` [N,16] |\n"
        "| MatMul fc2 + Add bias | 16 -> 5 | logits |\n"
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
        "(Conv, Gemm, MatMul)." % (m["params"], m["macs"]), "",
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
        "is the int8 column above. (onnxruntime computes the layers next to the `embedding` output in "
        "float32, as that tensor is also a graph output; the runtime reproduces that float32 path too: "
        "docs/EVIDENCE.md.) The emulated devices feed it beats cut from a 360 Hz MLII "
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
        "(tools/train/); checked by tests/interop/test_reference_models.py.",
        "", "Contract: opset 13, default domain only; input `x` float32 ([N,140] MLP, "
        "[N,1,140] CNN and DS-CNN); outputs `scores` (Softmax probabilities [N,5]) and `embedding` "
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
    lines += ["", "All are trained on one patient's beats (ECG5000): see each model card's "
              "limits before quoting a number.", ""]
    (out / "README.md").write_text("\n".join(lines))

