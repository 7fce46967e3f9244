"""The reference ECG models (models/ecg_*): edge runtime vs onnxruntime on all 4,500 ECG5000
test beats under MicroPython (bit-exact), a CPython subset, and each model inside a small
MicroPython heap without allocating per inference."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import qis.edge
from qis.tools.qem import compile as compile_bytes
from qis.tools.qem import format as F
from qis.tools.qem.check import check, compare, ort_reference, quantize_like_ort
from qis.tools.qem.runtime import micropython_memory
from qis.tools.sim.micropython import models_dir

ROOT = models_dir()
MODELS = {"ecg_cnn": (ROOT / "ecg_cnn/model.int8.onnx", (-1, 1, 140)),
          "ecg_mlp": (ROOT / "ecg_mlp/model.int8.onnx", (-1, 140)),
          "ecg_mlp_qop": (ROOT / "ecg_mlp/model.qop.onnx", (-1, 140)),
          "ecg_dscnn": (ROOT / "ecg_dscnn/model.int8.onnx", (-1, 1, 140))}


@pytest.fixture(scope="module")
def beats() -> np.ndarray:
    from qis.tools.datasets.ecg5000 import load_ecg5000

    x, _y = load_ecg5000("test")
    assert x.shape == (4500, 140)
    return x


def _require(path: Path) -> None:
    if not path.exists():  # the models helper commits these; their absence is a failure
        pytest.fail("reference model %s is missing: run `qis model train`" % path)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_all_test_beats_under_micropython(name, beats):
    path, shape = MODELS[name]
    _require(path)
    res = check(path, beats.reshape(shape), "micropython")
    print(json.dumps({name: {k: res[k] for k in ("n", "exact_fraction", "max_lsb_diff", "argmax_agreement")}}))
    assert res["n"] == 4500
    assert res["exact_fraction"] == 1.0 and res["max_lsb_diff"] == 0  # bit-exact, as docs/EVIDENCE.md says
    assert res["argmax_agreement"] == 1.0
    assert set(res["outputs"]) == {"scores", "embedding"}


@pytest.mark.parametrize("name", ["ecg_cnn", "ecg_mlp", "ecg_dscnn"])
def test_subset_under_cpython(name, beats):
    path, shape = MODELS[name]
    _require(path)
    res = check(path, beats[::30].reshape(shape), "cpython")
    assert res["n"] == 150 and res["argmax_agreement"] == 1.0
    assert res["exact_fraction"] == 1.0 and res["max_lsb_diff"] == 0


@pytest.fixture(scope="module")
def edge_mpy(tmp_path_factory) -> Path:
    """The edge package precompiled by mpy-cross, as a board loads it (no compiler heap)."""
    lib = tmp_path_factory.mktemp("mpy")
    src = Path(qis.edge.__file__).resolve().parent
    for py in src.rglob("*.py"):
        out = lib / "edge" / py.relative_to(src).with_suffix(".mpy")
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(Path(sys.executable).parent / "mpy-cross"), "-march=x64", "-o", str(out), str(py)],
                       check=True)
    return lib


@pytest.mark.parametrize("name,heap", [("ecg_cnn", "80K"), ("ecg_mlp", "64K"), ("ecg_dscnn", "96K")])
def test_models_run_in_a_small_heap_without_allocating(beats, edge_mpy, name, heap):
    """One inference allocates nothing (ESP32: ~110 KB free; the DS-CNN also loads the
    float32 kernels and their tables). The edge modules are precompiled .mpy files, as a
    board freezes or precompiles them (compiling kernels.py from source takes more heap)."""
    path, shape = MODELS[name]
    _require(path)
    qem, qm = compile_bytes(path)
    t = qm.tensors[qm.inputs[0][1]]
    x = beats[7:8].reshape(shape)
    mem = micropython_memory(qem, quantize_like_ort(x, t.scale, t.zero_point, np.int8), heap=heap, lib=edge_mpy)
    print(json.dumps({name: {k: v for k, v in mem.items() if k != "outputs"}, "arena_bytes": qm.arena_bytes,
                      "scratch_bytes": 4 * qm.scratch_words, "file_bytes": len(qem)}))
    assert compare(qm, ort_reference(path, qm, x), mem["outputs"])["exact_fraction"] == 1.0
    assert mem["run_heap_growth"] == 0 and mem["run_mem_peak_delta"] == 0
    assert qm.outputs[0][2] & F.IOF_SOFTMAX


@pytest.mark.parametrize("name", ["ecg_cnn", "ecg_mlp", "ecg_dscnn"])
def test_committed_edge_models_match_the_compiler(name):
    """The devices load models/<name>/model.qem: it must be what the compiler makes today."""
    root = ROOT / name
    fresh, _ = compile_bytes(root / "model.int8.onnx")
    assert (root / "model.qem").read_bytes() == fresh, f"recompile: qis model compile {root}/model.int8.onnx -o {root}/model.qem"
