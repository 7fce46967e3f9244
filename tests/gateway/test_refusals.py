"""RefusalLog: bounded counts of unauthenticated input, samples, and hand-over to the store."""
from __future__ import annotations

from qis.gateway.refusals import OTHER, RefusalLog


def test_counts_per_port_code_detail():
    log = RefusalLog()
    for t in range(3):
        log.count("ttyA", "unknown-kid", "01020304", b"f", float(t))
    log.count("ttyB", "stream", "crc mismatch", None, 5.0)
    assert {k: (c.count, c.first_at, c.last_at) for k, c in log.counts.items()} == {
        ("ttyA", "unknown-kid", "01020304"): (3, 0.0, 2.0), ("ttyB", "stream", "crc mismatch"): (1, 5.0, 5.0)}
    assert log.totals() == {"unknown-kid": 3, "stream": 1}


def test_details_bounded_and_totals_kept_in_other():
    log = RefusalLog(max_details=4)
    for i in range(1000):  # a flood of one-off key ids
        log.count("p", "unknown-kid", "%08x" % i, None, float(i))
    assert len(log.counts) == 4
    assert sum(c.count for c in log.counts.values()) == 1000
    assert log.counts[("p", "unknown-kid", OTHER)].count >= 996


def test_a_detail_that_keeps_coming_survives_a_flood():
    log = RefusalLog(max_details=16)
    now = 0.0
    for i in range(5000):
        now += 1
        log.count("p", "unknown-kid", "%08x" % (i + 100), None, now)
        if i % 10 == 0:  # a misconfigured device, retransmitting
            log.count("p", "unknown-kid", "deadbeef", None, now)
    assert log.counts[("p", "unknown-kid", "deadbeef")].count == 500


def test_samples_rate_limited_into_a_ring():
    log = RefusalLog(sample_slots=3, sample_interval_s=1.0)
    for i in range(100):
        log.count("p", "envelope", "", bytes([i]) * 51, i * 0.25)  # 4 per second
    _, _, samples = log.take()
    assert [s[2] for s in samples] == [float(t) for t in range(25)]  # one per second
    assert [s[1] for s in samples] == [t % 3 for t in range(25)]  # slots of a 3-slot ring
    assert all(len(s[4]) == 51 for s in samples)


def test_take_hands_over_changes_once_and_restore_brings_them_back():
    log = RefusalLog(max_details=3)
    log.count("p", "auth", "dev-a", b"x", 1.0)
    changes = log.take()
    assert changes[0] == [("p", "auth", "dev-a", 1, 1.0, 1.0)] and changes[2][0][:4] == ("p", 0, 1.0, "auth")
    assert log.take() == ([], [], [])
    log.restore(changes)
    assert log.take()[0] == [("p", "auth", "dev-a", 1, 1.0, 1.0)]
    log.count("p", "auth", "dev-b", None, 2.0)
    log.count("p", "auth", "dev-c", None, 3.0)  # full: dev-a (smallest, oldest) folds into other
    counts, dropped, _ = log.take()
    assert dropped == [("p", "auth", "dev-a")]
    assert sorted(counts) == [("p", "auth", "dev-b", 1, 2.0, 2.0), ("p", "auth", "dev-c", 1, 3.0, 3.0),
                              ("p", "auth", OTHER, 1, 1.0, 1.0)]


def test_load_resumes_from_the_store_rows():
    log = RefusalLog(max_details=2)
    log.load([{"port": "p", "code": "auth", "detail": "dev-a", "count": 9, "first_at": 1.0, "last_at": 2.0}])
    log.count("p", "auth", "dev-a", None, 3.0)
    assert log.take()[0] == [("p", "auth", "dev-a", 10, 1.0, 3.0)]
