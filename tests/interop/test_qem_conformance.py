"""Random-graph conformance of the ONNX -> .qem compiler with onnxruntime, bit for bit.

Every generator of tests/qem_graphs.py (each supported op, in QOperator and QDQ form,
1-D and 2-D windows, groups, dilations, padding, per-tensor and per-channel, int8 and
uint8, fixed and dynamic batch) makes COUNT seeded graphs; each is compiled and run under
the MicroPython unix port on its inputs, and every output value must equal onnxruntime's.
The counts printed here (graphs and values per op) are in docs/EVIDENCE.md.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import qem_graphs

from qis.tools.qem import compile as compile_model
from qis.tools.qem.check import compare, ort_reference
from qis.tools.qem.runtime import run_micropython

COUNT = 40  # graphs per op


@pytest.mark.parametrize("kind", sorted(qem_graphs.GENERATORS))
def test_random_graphs_are_bit_exact_under_micropython(kind, tmp_path):
    values = 0
    for seed in range(COUNT):
        folder = tmp_path / str(seed)
        folder.mkdir()
        case = qem_graphs.GENERATORS[kind](np.random.default_rng([9, seed]), folder)
        qem, qm = compile_model(case.path)
        got = run_micropython(qem, case.rows(qm))
        res = compare(qm, ort_reference(case.path, qm, case.feed), got)
        assert res["exact_fraction"] == 1.0 and res["max_lsb_diff"] == 0, (kind, seed, res)
        values += sum(o["elements"] for o in res["outputs"].values())
    print(json.dumps({"conformance": kind, "graphs": COUNT, "values": values}))
