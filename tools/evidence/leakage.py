"""`qis evidence leakage`: what a FedAvg update leaks, and what an outcome leaks.

Rules: (a) the reference MLP's weights (models/ecg_mlp/model.onnx: 140-32-16-5, ReLU,
softmax; forward and backward in numpy) are updated by one site on one ECG5000 test beat
(5 local SGD steps, lr 0.1, cross-entropy); the attacker sees the update of the first
layer and recovers the beat as the least-squares ratio of its weight and bias updates
(each row of dW1 is db1[i] x the beat); DP-SGD style noise: the per-step gradient clipped to
norm 1 and N(0, sigma^2) added. (b) The attacker holds the public model and public data
(ECG5000 train) and sees an outcome's fingerprint (the edge's, full and compact profiles)
and label: a ridge decoder and a 10-nearest-fingerprint decoder trained on the public
beats, scored on the test beats. Scores: Pearson correlation with the true beat, and
re-identification (the reconstruction's nearest test beat is the true one; chance 1/N).
(c) Membership inference on released aggregates (gateway.synth: Aggregate.apply,
released(k, m), wire()): members are a seeded half of a pool of beats spread over sites
of 1-5 cases; the attacker scores a candidate by the released addresses of its fingerprint
that hold its label, weighting small aggregates up; AUC of members against non-members.
"""
from __future__ import annotations

import argparse

import numpy as np

from qis.gateway.synth import Aggregate

from . import common

NAME = "leakage"
SIGMAS = (0.0, 0.01, 0.1, 1.0)
THRESHOLDS = ((1, 1), (5, 2), (20, 3))
STEPS, LR = 5, 0.1


def mlp_weights() -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper
    graph = onnx.load(str(common.ROOT / "models" / "ecg_mlp" / "model.onnx")).graph
    return {t.name: numpy_helper.to_array(t).astype(np.float64) for t in graph.initializer}


def grads(w: dict, x: np.ndarray, y: int) -> dict[str, np.ndarray]:
    """Cross-entropy gradients of the MLP for one beat (Gemm: W @ x + b)."""
    h1 = np.maximum(w["fc1.weight"] @ x + w["fc1.bias"], 0)
    h2 = np.maximum(w["fc2.weight"] @ h1 + w["fc2.bias"], 0)
    z = w["fc3.weight"] @ h2 + w["fc3.bias"]
    p = np.exp(z - z.max())
    p /= p.sum()
    d3 = p - np.eye(len(p))[y]
    d2 = (w["fc3.weight"].T @ d3) * (h2 > 0)
    d1 = (w["fc2.weight"].T @ d2) * (h1 > 0)
    return {"fc3.weight": np.outer(d3, h2), "fc3.bias": d3, "fc2.weight": np.outer(d2, h1), "fc2.bias": d2,
            "fc1.weight": np.outer(d1, x), "fc1.bias": d1}


def update(w: dict, x: np.ndarray, y: int, sigma: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """A site's FedAvg update after STEPS local steps on one beat (DP noise if sigma)."""
    cur = {k: v.copy() for k, v in w.items()}
    for _ in range(STEPS):
        g = grads(cur, x, y)
        if sigma:
            norm = np.sqrt(sum(float((v ** 2).sum()) for v in g.values()))
            g = {k: v / max(1.0, norm) + rng.normal(0, sigma, v.shape) for k, v in g.items()}
        cur = {k: cur[k] - LR * g[k] for k in cur}
    return {k: cur[k] - w[k] for k in w}


def invert(u: dict[str, np.ndarray]) -> np.ndarray:
    """The beat from a first-layer update: least squares of dW1[i] = db1[i] x."""
    db, dw = u["fc1.bias"], u["fc1.weight"]
    return (db @ dw) / max(float(db @ db), 1e-30)


def corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def reidentified(recon: np.ndarray, truth: np.ndarray, rows: np.ndarray) -> float:
    """Share of reconstructions whose nearest beat (cosine, centred) among truth is their own."""
    a = recon - recon.mean(1, keepdims=True)
    t = truth - truth.mean(1, keepdims=True)
    sim = (a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)) @ \
        (t / np.maximum(np.linalg.norm(t, axis=1, keepdims=True), 1e-12)).T
    return float((np.argmax(sim, axis=1) == rows).mean())


def gradient_attack(xte, yte, rows, seed) -> list[dict]:
    w, rng, out = mlp_weights(), np.random.default_rng(seed), []
    for sigma in SIGMAS:
        recon = np.array([invert(update(w, xte[i].astype(np.float64), int(yte[i]), sigma, rng)) for i in rows])
        out.append({"what": f"FedAvg update, one beat, DP sigma {sigma:g}", "corr": float(np.median(corr(recon,
                    xte[rows]))), "reid": reidentified(recon, xte, rows)})
    return out


def fingerprint_attack(xtr, ytr, xte, yte, rows) -> list[dict]:
    out = []
    onehot = np.eye(5)
    for profile in ("compact", "full"):
        ftr, fte = (np.unpackbits(np.frombuffer(b"".join(common.fingerprints(common.ecg_features_of(x), profile)),
                                                dtype=np.uint8)).reshape(len(x), -1) for x in (xtr, xte))
        a_tr = np.hstack([2.0 * ftr - 1, onehot[ytr], np.ones((len(ytr), 1))])
        a_te = np.hstack([2.0 * fte[rows] - 1, onehot[yte[rows]], np.ones((len(rows), 1))])
        coef = np.linalg.solve(a_tr.T @ a_tr + 1.0 * np.eye(a_tr.shape[1]), a_tr.T @ xtr)
        ridge = a_te @ coef
        ham = (fte[rows][:, None, :] != ftr[None, :, :]).sum(-1) + 1000 * (yte[rows][:, None] != ytr[None, :])
        knn = xtr[np.argsort(ham, axis=1, kind="stable")[:, :10]].mean(1)
        for name, recon in (("ridge decoder", ridge), ("10 nearest public fingerprints", knn)):
            out.append({"what": f"outcome: {profile} fingerprint + label, {name}",
                        "corr": float(np.median(corr(recon, xte[rows]))), "reid": reidentified(recon, xte, rows)})
    means = np.array([xtr[ytr == c].mean(0) for c in range(5)])
    out.append({"what": "outcome: label only (the class's mean public beat)",
                "corr": float(np.median(corr(means[yte[rows]], xte[rows]))), "reid": reidentified(
                    means[yte[rows]] + 1e-9 * np.random.default_rng(0).normal(size=(len(rows), 140)), xte, rows)})
    return out


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a member > score of a non-member), ties counted half."""
    allv = np.concatenate([pos, neg])
    ranks = np.argsort(np.argsort(allv, kind="stable"), kind="stable").astype(np.float64)
    for v in np.unique(allv):  # average ranks of ties
        ranks[allv == v] = ranks[allv == v].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) - 1) / 2) / (len(pos) * len(neg)))


def membership(buckets: np.ndarray, labels: np.ndarray, seed: int) -> dict[tuple[int, int], float]:
    rng = np.random.default_rng(seed)
    n = len(labels)
    members = rng.permutation(n)[: n // 2]
    is_member = np.zeros(n, dtype=bool)
    is_member[members] = True
    aggs: dict[tuple[int, int], Aggregate] = {}
    order, site, i = rng.permutation(members), 0, 0
    while i < len(order):
        k = int(rng.integers(1, 6))
        for j in order[i:i + k]:
            rec = common.record(f"site-{site}", int(j), int(labels[j]), 7, b"\0" * 16)
            for table, bucket in enumerate(buckets[j]):
                aggs.setdefault((table, int(bucket)), Aggregate()).apply(rec)
        i, site = i + k, site + 1
    out = {}
    for k, m in THRESHOLDS:
        scores = np.zeros(n)
        for j in range(n):
            for table, bucket in enumerate(buckets[j]):
                agg = aggs.get((table, int(bucket)))
                if agg is None or not agg.released(k, m):
                    continue
                wire = agg.wire()
                total = sum(w[0] for w in wire.values())
                mine = sum(w[1].get(int(labels[j]), 0) for w in wire.values())
                scores[j] += (mine > 0) / total
        out[(k, m)] = auc(scores[is_member], scores[~is_member])
    return out


def measure(beats: int, pool: int, seeds: list[int]) -> dict:
    xtr, ytr = common.ecg5000("train")
    xte, yte = common.ecg5000("test")
    xtr, xte = xtr.astype(np.float64), xte.astype(np.float64)
    runs = []
    for seed in seeds:
        common.log(NAME, f"seed {seed}: {beats} attacked beats, membership over {pool} beats")
        rows = np.random.default_rng(seed).choice(len(yte), beats, replace=False)
        recon = gradient_attack(xte, yte, rows, seed) + fingerprint_attack(xtr, ytr, xte, yte, rows)
        x = np.concatenate([xtr, xte])[:pool]
        y = np.concatenate([ytr, yte])[:pool]
        b = common.buckets(common.fingerprints(common.ecg_features_of(x), "full"), "full")
        runs.append({"recon": recon, "mia": membership(b, y, seed)})
    return {"runs": runs, "beats": beats, "pool": pool, "test": len(yte)}


def render(m: dict, seeds: list[int]) -> str:
    runs = m["runs"]
    rows = []
    for i, r in enumerate(runs[0]["recon"]):
        rows.append((r["what"], common.spread([x["recon"][i]["corr"] for x in runs]),
                     common.spread([x["recon"][i]["reid"] for x in runs])))
    recon = common.table(["what the attacker sees", "correlation with the true beat (median)",
                          f"re-identified among {m['test']:,} beats (chance {1 / m['test']:.4f})"], rows)
    mia = common.table(["release thresholds (k outcomes, m sites)", "membership AUC (0.5 = chance)"],
                       [(f"k {k}, m {mm}" + (" (no threshold)" if k == 1 else " (default)" if k == 5 else ""),
                         common.spread([x["mia"][(k, mm)] for x in runs])) for k, mm in THRESHOLDS])
    get = {r["what"]: i for i, r in enumerate(runs[0]["recon"])}
    def med(what, key):
        return float(np.median([x["recon"][get[what]][key] for x in runs]))
    grad0 = med(f"FedAvg update, one beat, DP sigma {SIGMAS[0]:g}", "reid")
    lab = med("outcome: label only (the class's mean public beat)", "corr")
    fpc = med("outcome: full fingerprint + label, 10 nearest public fingerprints", "corr")
    fp_best = max(med(w, "reid") for w in get if w.startswith("outcome: full"))
    closed = [s for s in SIGMAS[1:] if med(f"FedAvg update, one beat, DP sigma {s:g}", "reid") <= fp_best]
    dp = (f"DP noise of sigma {closed[0]:g} on the clipped gradient already brings it down to the outcome's level "
          "(and such noise on a single case's update also drowns what the update was for)" if closed else
          "none of the DP noise levels tried brings it down to the outcome's level")
    aucs = {t: float(np.median([x["mia"][t] for x in runs])) for t in THRESHOLDS}
    return f"""### 5. What leaks

Command: `qis evidence leakage` (tools/evidence/leakage.py). {m['beats']} ECG5000 test beats
attacked per seed (seeds {seeds}); membership over the first {m['pool']:,} beats (train, then
test), half of them members, spread over sites of 1-5 cases.

![what leaks](evidence/leakage.png)

{recon}

Membership inference on released aggregates (gateway.synth, full profile addresses):

{mia}

What it shows. A single-case FedAvg update of the reference MLP gives the beat away: the
first layer's update is the beat times a scalar per row, and the least-squares ratio
re-identifies {grad0:.0%} of the beats exactly (correlation ~1); {dp}. An outcome leaks less,
but it does leak: from the full fingerprint and the label, an attacker with public beats
reconstructs a beat correlated {fpc:.2f} with the truth (ECG5000 beats are alike: the label
alone gives {lab:.2f}, the class's mean beat), and re-identifies up to {fp_best:.1%} of them, against a
chance of {1 / m['test']:.2%}: the fingerprint narrows a beat down far more than its label does.
"No known inversion surface" is wrong; "a much smaller one than a single-case gradient's" is
what we measured. Membership: AUC {aucs[(1, 1)]:.2f} without thresholds, {aucs[(5, 2)]:.2f} at the
defaults, {aucs[(20, 3)]:.2f} at k 20 / m 3. On this data the addresses are crowded (one patient's
beats), so an aggregate hides a member even without thresholds; sparse addresses (rare
cases, other domains) are where thresholds have to do the work, and this run does not show
them doing it. The released wire also names each contributing site, which this attack does
not use."""


def plot(m: dict):
    plt = common.figure()
    fig, ax = plt.subplots(figsize=(8, 4))
    runs = m["runs"]
    names = [r["what"] for r in runs[0]["recon"]]
    vals = [np.median([x["recon"][i]["corr"] for x in runs]) for i in range(len(names))]
    ax.barh(range(len(names)), vals, color=["tab:red" if n.startswith("FedAvg") else "tab:blue" for n in names])
    ax.set_yticks(range(len(names)), [n[:58] for n in names], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("median correlation of the reconstruction with the true beat")
    ax.set_title("Reconstructing a beat: FedAvg update (red) vs outcome (blue)")
    return fig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_output_arguments(parser)
    parser.add_argument("--quick", action="store_true", help="50 beats, a 400-beat pool, one seed")
    parser.add_argument("--seeds", type=int, default=3)


def run(args: argparse.Namespace) -> int:
    seeds = [0] if args.quick else list(range(args.seeds))
    m = measure(50 if args.quick else 300, 400 if args.quick else 2000, seeds)
    common.publish(NAME, render(m, seeds), plot(m), args)
    return 0
