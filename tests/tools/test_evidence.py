"""The evidence tables (tools/evidence/) at tiny sizes: each simulation must compute what
the project's own code computes (ownership, fingerprints, synthesis), so the published
numbers cannot drift from the code they are about."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

from qis.edge import frame, stream
from qis.edge.ccm import CCM
from qis.edge.frame import PROFILES
from qis.tools.bench.frames import FIELDS, KEY, KID
from qis.tools.cli.main import main
from qis.tools.evidence import bytes as ev_bytes
from qis.tools.evidence import common


def out_args(tmp_path, **extra) -> argparse.Namespace:
    return argparse.Namespace(doc=tmp_path / "EVIDENCE.md", plots=tmp_path / "plots", no_write=False, **extra)


# ------------------------------------------------------------------ common


def test_write_section_replaces_only_its_own_block(tmp_path):
    doc = tmp_path / "E.md"
    doc.write_text("# head\n\nother section\n")
    common.write_section("x", "one", doc)
    common.write_section("y", "two", doc)
    common.write_section("x", "three", doc)
    text = doc.read_text()
    assert text.startswith("# head\n\nother section\n")
    assert "one" not in text and text.index("three") < text.index("two")
    assert text.count("<!-- evidence:x -->") == 1


def test_numpy_simhash_equals_the_edge_simhash():
    from qis.edge import fingerprint as fp
    rng = np.random.default_rng(3)
    vecs = rng.integers(-127, 128, size=(40, 16))
    for tables, bits in ((4, 8), (8, 16), (3, 8), (16, 12)):
        sh = fp.SimHash(16, tables, bits, 0x51EC)
        got = np.packbits(common.fingerprint_bits(sh, vecs, check=0), axis=1)
        for row, v in zip(got, vecs):
            assert row.tobytes() == bytes(sh.fingerprint([int(x) for x in v]))


def test_fingerprints_of_ecg_beats_are_the_apps(tmp_path):
    """The ECG5000 path: edge.ecg.features of the scaled beat, then the spec's SimHash."""
    from array import array
    from qis.edge import fingerprint as fp
    from qis.edge.ecg import features
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 140)).astype(np.float32)
    f = common.ecg_features_of(x)
    out = array("b", bytes(16))
    for i in range(5):
        samples = array("h", np.round(x[i] * common.ECG_SCALE).astype(int).tolist())
        assert list(features.beat_features(samples, -1, 0, 140, 0, 0, out)) == list(f[i])
    sh = fp.spec(1).simhash(PROFILES["full"])
    assert common.fingerprints(f, "full") == [bytes(sh.fingerprint([int(v) for v in row])) for row in f]


# ------------------------------------------------------------------ 1. bytes


def test_bytes_are_measured_on_the_projects_frames():
    o = ev_bytes.ours()
    assert o["compact"]["frame"] == 51 and o["full"]["frame"] == 512
    sealed = frame.seal(CCM(KEY), KID, 7, frame.encode_outcome(PROFILES["full"], *FIELDS["full"]), frame.UPLINK_IV)
    assert o["full"]["frame_serial"] == len(stream.encode(bytes(sealed)))
    assert o["full"]["ack"] == frame.ACK_SIZE
    assert o["full"]["tables"] == PROFILES["full"].fingerprint_tables
    assert 100 < o["full"]["record"] <= 512  # gateway.records.MAX_RECORD


def test_fedavg_bytes_use_the_onnx_parameter_counts():
    import json
    for m in ev_bytes.MODELS:
        metrics = json.loads((common.ROOT / "models" / m / "metrics.json").read_text())
        assert ev_bytes.onnx_params(m) == metrics["params"]
    r, raw = ev_bytes.rows()
    fed = {what: n for what, n, _ in r if what.startswith("FedAvg")}
    mlp = raw["params"]["ecg_mlp"]
    assert fed[f"FedAvg round, ecg_mlp ({mlp:,} parameters, float32)"] == 8 * mlp


def test_bytes_command_writes_table_and_plot(tmp_path):
    assert main(["evidence", "bytes", "--doc", str(tmp_path / "E.md"), "--plots", str(tmp_path / "p")]) == 0
    text = (tmp_path / "E.md").read_text()
    assert "<!-- evidence:bytes -->" in text and "FedAvg round, ecg_cnn" in text
    assert (tmp_path / "p" / "bytes.png").stat().st_size > 1000
