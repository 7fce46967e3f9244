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


# ------------------------------------------------------------------ 2. routing


@pytest.fixture(scope="module")
def small_pool():
    from qis.tools.evidence import routing
    return routing.pool(limit=600)


def test_routing_before_is_the_federations_ownership(small_pool):
    """Loads under 'before' equal a record-by-record count with route.addresses + route.owners."""
    from qis.gateway import route
    from qis.tools.evidence import routing
    names = routing.members(7)
    beats = np.random.default_rng(0).integers(0, len(small_pool.labels), 300)
    per, owned, _ = routing.loads_before(small_pool, beats, names)
    assert owned == route.ownership(names, routing.REPLICAS, [1])
    want = dict.fromkeys(names, 0)
    for b in beats:
        for t, bucket in enumerate(small_pool.buckets[b]):
            for m in route.owners(routing.address_of(t, int(bucket)).shard, names, routing.REPLICAS):
                want[m] += 1
    assert list(per) == [want[m] for m in names]


def test_routing_parts_are_route_part_of(small_pool):
    import hashlib
    from qis.gateway import route
    from qis.tools.evidence import routing
    hashes = routing.outcome_hashes(4, 1, 20)
    for i, h in enumerate(hashes):
        oid = hashlib.sha256(f"4:1:{i}".encode()).digest()[:16]
        for n in (1, 2, 8, 64):
            assert h % n == route.part_of(oid, n)


def test_routing_moved_share_is_near_one_over_n_for_rendezvous():
    from qis.gateway import route
    from qis.tools.evidence import routing
    names = routing.members(10)
    old = {s.key: o for s, o in route.ownership(names, 2, [1]).items()}
    loads = dict.fromkeys(old, 1.0)
    shares = [routing.moved(old, {s.key: o for s, o in route.ownership(names + [f"new-{j}"], 2, [1]).items()}, loads)
              for j in range(12)]
    assert abs(np.mean(shares) - 1 / 11) < 0.03
    assert routing.moved(old, old, loads) == 0


def test_met_pairs_count_pairs_that_share_an_address(small_pool):
    from qis.tools.evidence import routing
    beats = np.random.default_rng(1).integers(0, 600, 80)
    pairs, same, base = routing.met_pairs(small_pool, beats)
    b, y = small_pool.buckets[beats], small_pool.labels[beats]
    met = [(i, j) for i in range(80) for j in range(i + 1, 80) if (b[i] == b[j]).any()]
    assert pairs == len(met)
    assert same == pytest.approx(sum(y[i] == y[j] for i, j in met) / len(met))
    assert base == pytest.approx(np.mean([y[i] == y[j] for i in range(80) for j in range(i + 1, 80)]))


def test_routing_after_balances_a_small_federation(small_pool):
    from qis.tools.evidence import routing
    r = routing.simulate(small_pool, 30, 3000, 0)
    assert r["after_max_mean"] <= routing.C < r["before_max_mean"]
    assert r["fan_after"] >= r["fan_before"]


# ------------------------------------------------------------------ 3. fingerprint


def test_fingerprint_profile_addresses_are_route_addresses():
    from qis.edge import fingerprint as fp
    from qis.gateway import route
    from qis.tools.evidence import fingerprint as ev_fp
    x, _ = common.ecg5000("train")
    feats = common.ecg_features_of(x[:30])
    prof = PROFILES["full"]
    code = ev_fp.codes(common.fingerprint_bits(fp.spec(1).simhash(prof), feats), prof.fingerprint_tables,
                       prof.fingerprint_bits, fp.ADDRESS_BITS)
    fps = common.fingerprints(feats, "full")
    for row, f in zip(code, fps):
        assert list(row) == [a.bucket for a in route.addresses(1, f, "full")]
    # probe 1 candidates are exactly the beats at route's probe-1 addresses
    cand = ev_fp.candidates(code, np.arange(5), 1)
    for q in range(5):
        near = {(a.table, a.bucket) for a in route.addresses(1, fps[q], "full", probe=1)}
        want = [j != q and any((t, int(b)) in near for t, b in enumerate(code[j])) for j in range(30)]
        assert list(cand[q]) == want


def test_recall_is_one_when_everything_is_a_candidate_and_neighbours_are_exact():
    from qis.tools.evidence import fingerprint as ev_fp
    rng = np.random.default_rng(0)
    space = rng.normal(size=(50, 4))
    nn = ev_fp.neighbours(space, np.arange(5), 3)
    unit = space / np.linalg.norm(space, axis=1, keepdims=True)
    for q in range(5):
        sims = unit @ unit[q]
        sims[q] = -2
        assert set(nn[q]) == set(np.argsort(-sims)[:3])
    assert ev_fp.recall(np.ones((5, 50), dtype=bool), nn) == 1.0
    assert ev_fp.recall(np.zeros((5, 50), dtype=bool), nn) == 0.0


# ------------------------------------------------------------------ 4. tiny sites


def test_ask_similar_cases_is_gateway_synth_on_the_same_records():
    from qis.gateway.synth import Aggregate, combine
    from qis.tools.evidence import tinysites
    t = tinysites.cancer_task(0)
    sites = tinysites.split_sites(len(t.y_train), np.random.default_rng(0))
    aggs = tinysites.aggregates(t, sites)
    by_case = {int(i): s for s, cases in enumerate(sites) for i in cases}
    for q in range(10):
        want = {}
        for i in range(len(t.y_train)):
            label = int(t.y_train[i])
            for table, bucket in enumerate(t.b_train[i]):
                if bucket == t.b_test[q][table]:
                    agg = want.setdefault(table, Aggregate())
                    agg.apply(common.record(f"site-{by_case[i]}", i, label, 7, b"\0" * 16))
                    agg.apply(common.record(f"site-{by_case[i]}", i, label, 7, b"\0" * 16, confirmed=label))
        wires = [a.wire() for a in want.values() if a.released(tinysites.K, tinysites.M)]
        got = tinysites.ask(aggs, t.b_test[q], 0)
        assert got == (combine(wires, tinysites.CAP).labels[0][0] if wires else None)


def test_sites_hold_one_to_five_cases_and_fedavg_of_one_site_is_its_local_fit():
    from qis.tools.evidence import tinysites
    sites = tinysites.split_sites(101, np.random.default_rng(1))
    assert sorted(np.concatenate(sites)) == list(range(101))
    assert all(1 <= len(s) <= 5 for s in sites)
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(4, 3)), np.array([0, 1, 1, 0])
    t = tinysites.Task("t", x, y, x, y, np.zeros((4, 1)), np.zeros((4, 1)), 2)
    w, n = tinysites.fedavg([np.arange(4)], t, rng)
    want = np.zeros((4, 2))
    for _ in range(tinysites.ROUNDS):
        want = tinysites.fit(x, y, 2, want, tinysites.EPOCHS)
    assert np.allclose(w, want) and n == tinysites.ROUNDS


def test_macro_f1():
    from qis.tools.evidence.tinysites import macro_f1
    y = np.array([0, 0, 1, 1, 2])
    assert macro_f1(y, y, 3) == 1.0
    assert macro_f1(y, np.array([0, 0, 0, 0, 0]), 3) == pytest.approx((2 * 2 / 7) / 3)


# ------------------------------------------------------------------ 5. leakage


def test_gradients_are_the_mlps_and_a_single_case_update_gives_the_beat_away():
    from qis.tools.evidence import leakage
    w = leakage.mlp_weights()
    x, y = common.ecg5000("test")
    beat = x[7].astype(np.float64)
    g = leakage.grads(w, beat, int(y[7]))
    def loss(ws):
        h1 = np.maximum(ws["fc1.weight"] @ beat + ws["fc1.bias"], 0)
        h2 = np.maximum(ws["fc2.weight"] @ h1 + ws["fc2.bias"], 0)
        z = ws["fc3.weight"] @ h2 + ws["fc3.bias"]
        return np.log(np.exp(z - z.max()).sum()) + z.max() - z[int(y[7])]
    for name, idx in (("fc1.weight", (3, 50)), ("fc2.bias", (2,)), ("fc3.weight", (1, 4))):
        bumped = {k: v.copy() for k, v in w.items()}
        bumped[name][idx] += 1e-6
        assert (loss(bumped) - loss(w)) / 1e-6 == pytest.approx(g[name][idx], rel=1e-3, abs=1e-7)
    u = leakage.update(w, beat, int(y[7]), 0.0, np.random.default_rng(0))
    assert np.allclose(leakage.invert(u), beat, atol=1e-6 * np.abs(beat).max())
    noisy = leakage.invert(leakage.update(w, beat, int(y[7]), 1.0, np.random.default_rng(0)))
    assert leakage.corr(noisy[None], beat[None])[0] < 0.5


def test_membership_auc_and_thresholds_use_gateway_synth():
    from qis.tools.evidence import leakage
    assert leakage.auc(np.array([3.0, 4.0]), np.array([1.0, 2.0])) == 1.0
    assert leakage.auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    # sparse addresses: every beat alone in its buckets; without thresholds membership is plain
    buckets = np.repeat(np.arange(200)[:, None], 8, axis=1)  # bucket = beat index, in every table
    out = leakage.membership(buckets, np.zeros(200, dtype=np.int64), 0)
    assert out[(1, 1)] == 1.0 and out[(5, 2)] == 0.5


def test_routing_shard_variant_is_the_federations_plan(small_pool):
    """The shard-level variant is what gateway.federation runs: route.plan_loads on the
    records per shard, owners from route.plan_owners; the 16-bit table values begin with
    the buckets; every record of a cycle lands in exactly one unit of its shard (part = the
    outcome hash mod the shard's parts, as route.part_of)."""
    from qis.gateway import route
    from qis.gateway.federation import Settings
    from qis.tools.evidence import routing
    assert ((small_pool.tables >> 8) == small_pool.buckets).all()
    names = routing.members(Settings().split_members)
    rng = np.random.default_rng(1)
    beats = rng.integers(0, len(small_pool.labels), 400)
    hashes = routing.outcome_hashes(0, 0, 400)
    parts, owners = routing.plan_shards(small_pool, beats, hashes, names)
    units = routing.shard_units(small_pool, beats)
    counts = {routing.shard_of(s).key: float((units == s).sum()) for s in np.unique(units)}
    want_parts, want_loads = route.plan_loads(names, counts, routing.REPLICAS, [1], Settings().split_members,
                                              routing.GRAIN)
    assert parts == want_parts and max(parts.values()) > 1
    assert owners == route.plan_owners(want_loads, names, routing.REPLICAS, routing.C_PLAN)
    loads = routing.shard_part_loads(units, hashes, parts)
    assert sum(loads.values()) == units.size and set(loads) <= set(owners)
