from edgetest import load, raises, rmtree, tmpdir

store = load("store")
errors = load("errors")


def test_counter_starts_at_zero_and_counts_up():
    d = tmpdir("ctr")
    try:
        c = store.Counter(d, block=4)
        assert [c.next() for _ in range(10)] == list(range(10))
    finally:
        rmtree(d)


def test_counter_never_repeats_across_reboots():
    d = tmpdir("ctr")
    try:
        seen = []
        for boot in range(6):
            c = store.Counter(d, block=4)
            for _ in range(boot + 1):  # use a few values, then "lose power"
                seen.append(c.next())
        assert len(seen) == len(set(seen)), seen
        assert seen == sorted(seen)
        # a reboot skips at most one block
        c = store.Counter(d, block=4)
        assert c.peek() - seen[-1] <= 4
    finally:
        rmtree(d)


def test_counter_persists_ahead_in_blocks():
    d = tmpdir("ctr")
    try:
        c = store.Counter(d, block=8)
        c.next()
        # after the first value, the whole block [0, 8) is reserved on flash
        assert store.Counter(d, block=8).peek() == 8
        for _ in range(7):
            c.next()
        assert store.Counter(d, block=8).peek() == 8
        c.next()  # value 8 needs the next reservation
        assert store.Counter(d, block=8).peek() == 16
    finally:
        rmtree(d)


def test_counter_survives_power_loss_while_reserving():
    d = tmpdir("ctr")
    try:
        c = store.Counter(d, block=4)
        used = [c.next() for _ in range(8)]  # reservations: 4 (seq 1, slot b), 8 (seq 2, slot a)
        # Power fails while the next reservation (seq 3) is written to slot b: torn.
        with open(d + "/counter.b", "wb") as f:
            f.write(b"QCTR\x03\x00")
        resumed = store.Counter(d, block=4)
        assert resumed.peek() == 8  # slot a's reservation; value 8 was never handed out
        assert resumed.next() > max(used)
    finally:
        rmtree(d)


def test_counter_refuses_two_corrupt_slots():
    d = tmpdir("ctr")
    try:
        c = store.Counter(d, block=4)
        for _ in range(5):
            c.next()
        for name in ("counter.a", "counter.b"):
            with open(d + "/" + name, "wb") as f:
                f.write(b"\xff" * 20)
        err = raises(errors.FlashError, store.Counter, d)
        assert "corrupt" in str(err)
    finally:
        rmtree(d)


def test_outbox_keeps_frames_across_reboots_until_removed():
    d = tmpdir("obx")
    try:
        box = store.Outbox(d)
        for i in (3, 1, 2):
            box.put(i, bytes([i]) * 10)
        assert len(box) == 3
        again = store.Outbox(d)
        assert again.pending() == [1, 2, 3]
        assert again.get(2) == b"\x02" * 10
        assert again.remove(2) is True
        assert again.remove(2) is False
        assert store.Outbox(d).pending() == [1, 3]
    finally:
        rmtree(d)


def test_outbox_drops_torn_temporary_files():
    d = tmpdir("obx")
    try:
        box = store.Outbox(d)
        box.put(7, b"frame")
        with open(d + "/outbox/00000008.f.tmp", "wb") as f:
            f.write(b"half a fra")
        again = store.Outbox(d)
        assert again.pending() == [7]
    finally:
        rmtree(d)
