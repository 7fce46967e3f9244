"""Synthesis at an address: what similar cases concluded, and how often that was confirmed.

Rules:
- An address's aggregate is a pure function of the records applied to it: per site, the
  outcomes, their labels, a confidence histogram (8 levels), per-model label tallies, and
  the confirmations (the confirmed label, and per model whether its conclusion was
  right). Applying a record twice changes nothing (outcome ids are remembered), so an
  owner can replay a shard's stream from any point it has a snapshot for.
- An aggregate is released (sent to anyone who asks) only when it holds at least k
  outcomes from at least m sites; below that, nothing leaves the owner but "not enough".
- Combining released aggregates into an answer caps every site's weight at `cap`
  outcomes: a site with more counts as if it had cap, spread as its own shares, so one
  site, noisy or hostile, moves an answer by at most cap / (cap + the others' weights).
  An outcome that fell into several of the L buckets asked for votes once per bucket: the
  more tables agree, the more similar the case.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .records import CONF_LEVELS, KIND_OUTCOME, Record


@dataclass
class SiteTally:
    outcomes: int = 0
    labels: dict[int, int] = field(default_factory=dict)
    confidence: list[int] = field(default_factory=lambda: [0] * CONF_LEVELS)
    models: dict[int, dict[int, int]] = field(default_factory=dict)  # model -> label -> outcomes
    confirmations: int = 0
    confirmed: dict[int, int] = field(default_factory=dict)  # confirmed label -> confirmations
    checks: dict[int, list[int]] = field(default_factory=dict)  # model -> [confirmed, model was right]

    def wire(self) -> list:
        """A copy: what is released must not change when later records are applied."""
        return [self.outcomes, dict(self.labels), list(self.confidence),
                {m: dict(v) for m, v in self.models.items()}, self.confirmations, dict(self.confirmed),
                {m: list(v) for m, v in self.checks.items()}]

    @classmethod
    def from_wire(cls, w: list) -> SiteTally:
        return cls(w[0], dict(w[1]), list(w[2]), {m: dict(v) for m, v in w[3].items()}, w[4], dict(w[5]),
                   {m: list(v) for m, v in w[6].items()})

    def merge(self, other: SiteTally) -> None:
        self.outcomes += other.outcomes
        self.confirmations += other.confirmations
        for label, n in other.labels.items():
            self.labels[label] = self.labels.get(label, 0) + n
        for i, n in enumerate(other.confidence):
            self.confidence[i] += n
        for model, labels in other.models.items():
            mine = self.models.setdefault(model, {})
            for label, n in labels.items():
                mine[label] = mine.get(label, 0) + n
        for label, n in other.confirmed.items():
            self.confirmed[label] = self.confirmed.get(label, 0) + n
        for model, (n, right) in other.checks.items():
            mine = self.checks.setdefault(model, [0, 0])
            mine[0] += n
            mine[1] += right


@dataclass
class Aggregate:
    """Everything known at one address."""

    sites: dict[str, SiteTally] = field(default_factory=dict)
    seen: set[bytes] = field(default_factory=set)  # outcome ids applied
    seen_confirmed: set[bytes] = field(default_factory=set)  # outcome ids confirmed

    def apply(self, r: Record) -> bool:
        """Apply one record; False (and nothing changes) if it was applied before."""
        seen = self.seen if r.kind == KIND_OUTCOME else self.seen_confirmed
        if r.outcome_id in seen:
            return False
        seen.add(r.outcome_id)
        t = self.sites.setdefault(r.site, SiteTally())
        if r.kind == KIND_OUTCOME:
            t.outcomes += 1
            t.labels[r.label] = t.labels.get(r.label, 0) + 1
            t.confidence[r.confidence] += 1
            per_model = t.models.setdefault(r.model, {})
            per_model[r.label] = per_model.get(r.label, 0) + 1
        else:
            t.confirmations += 1
            t.confirmed[r.confirmed] = t.confirmed.get(r.confirmed, 0) + 1
            check = t.checks.setdefault(r.model, [0, 0])
            check[0] += 1
            check[1] += int(r.label == r.confirmed)
        return True

    @property
    def outcomes(self) -> int:
        return sum(t.outcomes for t in self.sites.values())

    def released(self, k: int, m: int) -> bool:
        return self.outcomes >= k and sum(1 for t in self.sites.values() if t.outcomes) >= m

    def wire(self) -> dict[str, list]:
        """The per-site tallies, as released to a peer (no outcome ids)."""
        return {site: t.wire() for site, t in sorted(self.sites.items())}

    def state(self) -> list:
        """Everything, for a snapshot."""
        return [self.wire(), sorted(self.seen), sorted(self.seen_confirmed)]

    @classmethod
    def from_state(cls, state: list) -> Aggregate:
        return cls({s: SiteTally.from_wire(w) for s, w in state[0].items()}, set(state[1]), set(state[2]))


@dataclass
class Answer:
    """The combined answer to a query, before it is sealed into a frame. Counts are those
    of the best released address (distinct outcomes there); shares are over all votes."""

    outcomes: int = 0  # outcomes at the best released address
    sites: int = 0  # sites behind the released addresses
    labels: list[list[int]] = field(default_factory=list)  # [label, share 0..255], best first
    confirmed: list[int] = field(default_factory=lambda: [0, 0])  # [confirmations, agreement 0..255]
    models: list[list[int]] = field(default_factory=list)  # [model, confirmations, right share 0..255]

    def as_dict(self) -> dict:
        return {"outcomes": self.outcomes, "sites": self.sites, "labels": self.labels, "confirmed": self.confirmed,
                "models": self.models}


def _share(part: float, whole: float) -> int:
    return 0 if whole <= 0 else min(255, round(255 * part / whole))


def combine(released: list[dict[str, list]], cap: int) -> Answer:
    """Combine the per-site tallies of released addresses (Aggregate.wire()) into one
    answer, each site's weight capped at cap outcomes (see the module's rules)."""
    per_site: dict[str, SiteTally] = {}
    best = best_confirmed = 0
    best_per_model: dict[int, int] = {}
    for wire in released:
        best = max(best, sum(w[0] for w in wire.values()))
        best_confirmed = max(best_confirmed, sum(w[4] for w in wire.values()))
        for site, w in wire.items():
            tally = SiteTally.from_wire(w)
            per_site.setdefault(site, SiteTally()).merge(tally)
        for model in {m for w in wire.values() for m in w[6]}:
            here = sum(w[6][model][0] for w in wire.values() if model in w[6])
            best_per_model[model] = max(best_per_model.get(model, 0), here)
    answer = Answer(outcomes=best, sites=sum(1 for t in per_site.values() if t.outcomes))
    weights: dict[int, float] = {}
    total = 0.0
    agree = confirmations = 0.0
    models: dict[int, list[float]] = {}
    for t in per_site.values():
        if t.outcomes:
            f = min(t.outcomes, cap) / t.outcomes
            total += f * t.outcomes
            for label, n in t.labels.items():
                weights[label] = weights.get(label, 0.0) + f * n
        if t.confirmations:
            g = min(t.confirmations, cap) / t.confirmations
            for model, (n, right) in t.checks.items():
                entry = models.setdefault(model, [0.0, 0.0])
                entry[0] += g * n
                entry[1] += g * right
                confirmations += g * n
                agree += g * right
    answer.labels = [[label, _share(w, total)] for label, w in sorted(weights.items(), key=lambda kv: (-kv[1], kv[0]))]
    answer.confirmed = [best_confirmed, _share(agree, confirmations)]
    answer.models = [[m, best_per_model[m], _share(e[1], e[0])]
                     for m, e in sorted(models.items(), key=lambda kv: (-best_per_model[kv[0]], kv[0]))]
    return answer
