"""Evaluation of ONNX models with onnxruntime: predictions, metrics, file fingerprints.

Tests use these to recompute the committed metrics without torch.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .graphs import NUM_CLASSES


def run_onnx(path: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(scores, embedding) of an ONNX model on x, with onnxruntime on one CPU thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    scores, embedding = session.run(["scores", "embedding"], {"x": x.astype(np.float32)})
    return scores, embedding


def classification_metrics(y: np.ndarray, pred: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class recall/precision/F1 and the confusion matrix
    (rows = true class, columns = predicted)."""
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    np.add.at(conf, (y, pred), 1)
    tp = np.diag(conf).astype(np.float64)
    support = conf.sum(axis=1)
    predicted = conf.sum(axis=0)
    recall = np.divide(tp, support, out=np.zeros(NUM_CLASSES), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros(NUM_CLASSES), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(NUM_CLASSES), where=denom > 0)
    return {
        "n": int(len(y)),
        "correct": int(tp.sum()),
        "accuracy": round(float(tp.sum() / len(y)), 6),
        "macro_f1": round(float(f1.mean()), 6),
        "recall": [round(float(v), 6) for v in recall],
        "precision": [round(float(v), 6) for v in precision],
        "f1": [round(float(v), 6) for v in f1],
        "confusion": conf.tolist(),
    }


def evaluate(path: Path, x: np.ndarray, y: np.ndarray) -> tuple[dict, np.ndarray]:
    """Metrics of the ONNX model at `path` on (x, y), and its predictions."""
    scores, _ = run_onnx(path, x)
    pred = scores.argmax(axis=1)
    return classification_metrics(y, pred), pred


def file_info(path: Path) -> dict:
    """Size in bytes and sha256 of a file."""
    data = path.read_bytes()
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
