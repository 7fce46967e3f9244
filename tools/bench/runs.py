"""Interleaved benchmark runs: a subject and the baseline that bounds it, measured in turn,
several times, so that load from elsewhere on the machine hits both alike.

A measurement is a callable doing one unit of work (a frame, a row, an inference); each is
calibrated once to take about ``target_s``, then timed ``runs`` times, the pairs of one run
back to back (baseline first on even runs, subject first on odd ones). The ratio of a pair
is taken within each run, then summarised: median, min and max over the runs.
"""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

Work = Callable[[int], object]  # called with the iteration number


@dataclass(frozen=True)
class Pair:
    """A subject and the baseline it is compared with: names, and what one unit is."""

    name: str
    subject: Work
    baseline: Work
    subject_label: str
    baseline_label: str
    unit: str = "frames"


def calibrate(work: Work, target_s: float) -> int:
    """Iterations of work that take about target_s (at least 1)."""
    n = 1
    while True:
        t0 = time.perf_counter()
        for i in range(n):
            work(i)
        dt = time.perf_counter() - t0
        if dt >= target_s / 4 or n >= 1 << 24:
            return max(1, int(n * target_s / max(dt, 1e-9)))
        n *= 4


def rate(work: Work, n: int) -> float:
    """Units per second over n calls."""
    t0 = time.perf_counter()
    for i in range(n):
        work(i)
    return n / (time.perf_counter() - t0)


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def interleaved(pairs: list[Pair], runs: int, target_s: float,
                tick: Callable[[str], None] = lambda s: None) -> dict[str, dict]:
    """{pair name: {"subject": summary of rates, "baseline": ..., "ratio": summary of the
    per-run subject/baseline ratios, "runs": [(subject, baseline), ...]}}."""
    sizes = {p.name: (calibrate(p.subject, target_s), calibrate(p.baseline, target_s)) for p in pairs}
    raw: dict[str, list[tuple[float, float]]] = {p.name: [] for p in pairs}
    for r in range(runs):
        for p in pairs:
            ns, nb = sizes[p.name]
            if r % 2:
                s = rate(p.subject, ns)
                b = rate(p.baseline, nb)
            else:
                b = rate(p.baseline, nb)
                s = rate(p.subject, ns)
            raw[p.name].append((s, b))
            tick(f"run {r + 1}/{runs} {p.name}: {s:,.0f} vs {b:,.0f} {p.unit}/s")
    return {name: {"subject": summary([s for s, _ in v]), "baseline": summary([b for _, b in v]),
                   "ratio": summary([s / b for s, b in v]), "runs": v} for name, v in raw.items()}
