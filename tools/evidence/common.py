"""What the evidence tables share: the pinned data, the project's fingerprints, records and
sites, spreads over seeds, and writing a table into docs/EVIDENCE.md with its plot.

Rules: nothing here re-implements the project. Fingerprints are edge.fingerprint's SimHash
of edge.ecg.features' vector (`fingerprints` checks a numpy projection against
SimHash.fingerprint on every call's first rows, so the fast path cannot drift), addresses
are gateway.route's, records are gateway.records', sites are gateway.sites'. Randomness
comes from numpy generators seeded by the caller. A table goes into docs/EVIDENCE.md
between its markers `<!-- evidence:NAME -->` and `<!-- /evidence:NAME -->`; nothing else
of the page is touched.
"""
from __future__ import annotations

import hashlib
import statistics
import sys
from array import array
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qis.edge import fingerprint as fp
from qis.edge.ecg import features as ecg_features
from qis.edge.ecg.registry import DOMAIN_ECG_BEAT
from qis.edge.frame import PROFILES
from qis.gateway import route
from qis.gateway.records import KIND_CONFIRMATION, KIND_OUTCOME, Record
from qis.gateway.sites import Site

from ..errors import ToolError

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "EVIDENCE.md"
PLOTS = ROOT / "docs" / "evidence"
ECG_SCALE = 1000  # ECG5000 beats are z-normalised floats; x1000 as int16-like ADC counts


def log(name: str, message: str) -> None:
    print(f"evidence {name}: {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------ data


def ecg5000(split: str) -> tuple[np.ndarray, np.ndarray]:
    from ..datasets.ecg5000 import load_ecg5000
    return load_ecg5000(split)


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError:
        raise ToolError("the breast-cancer table needs scikit-learn: pip install -e '.[evidence]'") from None
    data = load_breast_cancer()
    return data.data.astype(np.float64), data.target.astype(np.int64)


def ecg_features_of(x: np.ndarray) -> np.ndarray:
    """The domain's feature vectors (edge.ecg.features v1, int8 [N,16]) of ECG5000 beats.
    ECG5000 has no RR intervals, so the RR feature is 0 (rr and mean_rr unknown)."""
    out = np.zeros((len(x), ecg_features.DIM), dtype=np.int64)
    buf = array("b", bytes(ecg_features.DIM))
    for i, beat in enumerate(np.round(np.asarray(x) * ECG_SCALE).astype(np.int64)):
        samples = array("h", beat.tolist())
        ecg_features.beat_features(samples, -1, 0, len(samples), 0, 0, buf)
        out[i] = buf
    return out


# ------------------------------------------------------------------ fingerprints


def planes(simhash: fp.SimHash) -> np.ndarray:
    """The project's hyperplanes, [tables*bits, dim] (read from the SimHash it built)."""
    return np.frombuffer(bytes(simhash._planes), dtype=np.int8).reshape(-1, simhash.dim).astype(np.int64)


def fingerprint_bits(simhash: fp.SimHash, vecs: np.ndarray, check: int = 8) -> np.ndarray:
    """The SimHash bits [N, tables*bits] (0/1) of integer vectors, by numpy; the first
    `check` rows are compared with SimHash.fingerprint itself (ToolError if they differ)."""
    bits = (np.asarray(vecs, dtype=np.int64) @ planes(simhash).T >= 0).astype(np.uint8)
    for i in range(min(check, len(vecs))):
        want = bytes(simhash.fingerprint([int(v) for v in vecs[i]]))
        if np.packbits(bits[i]).tobytes() != want:
            raise ToolError("the numpy SimHash drifted from edge.fingerprint.SimHash")
    return bits


def fingerprints(vecs: np.ndarray, profile: str) -> list[bytes]:
    """Packed fingerprints of a frame profile under the ECG domain's spec."""
    simhash = fp.spec(DOMAIN_ECG_BEAT).simhash(PROFILES[profile])
    return [row.tobytes() for row in np.packbits(fingerprint_bits(simhash, vecs), axis=1)]


def buckets(fps: Sequence[bytes], profile: str) -> np.ndarray:
    """[N, L] buckets of each fingerprint's addresses (gateway.route.addresses)."""
    return np.array([[a.bucket for a in route.addresses(DOMAIN_ECG_BEAT, f, profile)] for f in fps], dtype=np.int64)


# ------------------------------------------------------------------ sites and records


def site(name: str) -> Site:
    """A deterministic federation site (its key derived from its name: for simulation only)."""
    seed = hashlib.sha256(b"evidence-site:" + name.encode()).digest()
    return Site(name, Ed25519PrivateKey.from_private_bytes(seed), hashlib.sha256(seed).digest())


def record(site_name: str, n: int, label: int, confidence: int, fingerprint: bytes, profile: str = "full",
           model: int = 2, confirmed: int | None = None) -> Record:
    """An outcome (or, with confirmed, its confirmation) as a site's forwarder builds it."""
    oid = hashlib.sha256(f"{site_name}:{n}".encode()).digest()[:16]
    pseudo = hashlib.sha256(f"{site_name}:device".encode()).digest()[:8]
    return Record(KIND_OUTCOME if confirmed is None else KIND_CONFIRMATION, oid, site_name, pseudo, DOMAIN_ECG_BEAT,
                  model, label, confidence, profile, fingerprint, 490000, confirmed)


# ------------------------------------------------------------------ numbers and pages


def spread(values: Sequence[float], fmt: str = "{:.3f}") -> str:
    """median [min-max] over seeds (just the value when there is one)."""
    v = list(values)
    if len(v) == 1:
        return fmt.format(v[0])
    return f"{fmt.format(statistics.median(v))} [{fmt.format(min(v))}-{fmt.format(max(v))}]"


def human_bytes(n: float) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n:,.0f} B"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    marks = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(marks) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_section(name: str, text: str, doc: Path | None = None) -> Path:
    """Put text between the section's markers in doc (appending the markers at the end of
    the page's evidence section when they are missing)."""
    doc = doc or DOC
    begin, end = f"<!-- evidence:{name} -->", f"<!-- /evidence:{name} -->"
    page = doc.read_text() if doc.exists() else ""
    block = f"{begin}\n{text.strip()}\n{end}"
    if begin in page and end in page:
        head, rest = page.split(begin, 1)
        page = head + block + rest.split(end, 1)[1]
    else:
        page = page.rstrip() + "\n\n" + block + "\n"
    doc.write_text(page)
    return doc


def figure():
    try:
        import matplotlib
    except ImportError:
        raise ToolError("plots need matplotlib: pip install -e '.[evidence]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(fig, name: str, plots: Path | None = None) -> Path:
    plots = plots or PLOTS
    plots.mkdir(parents=True, exist_ok=True)
    path = plots / f"{name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    figure().close(fig)
    return path


def add_output_arguments(parser) -> None:
    parser.add_argument("--doc", type=Path, default=None, help="the page to write the table into (docs/EVIDENCE.md)")
    parser.add_argument("--plots", type=Path, default=None, help="folder of the PNG plots (docs/evidence)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")


def publish(name: str, text: str, fig, args) -> None:
    """Print the section, save its plot and write it into the page (unless --no-write)."""
    print(text)
    if fig is not None:
        path = save(fig, name, args.plots)
        log(name, f"plot {path}")
    if not args.no_write:
        log(name, f"wrote {write_section(name, text, args.doc)}")
