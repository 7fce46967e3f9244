from edgetest import load

lora_at = load("links.lora_at")

GOOD = (b"+OK\r\n+ERR=12\r\n+RCV=5,4,a,\r\n,-60,9\r\n+BAND=868100000\r\n+READY\r\n"
        b"+RCV=3,0,,-1,-2\r\n")
EVENTS = [("ok",), ("err", 12), ("rcv", 5, b"a,\r\n", -60, 9), ("value", "BAND", "868100000"), ("ready",),
          ("rcv", 3, b"", -1, -2)]


def test_responses_parse_the_same_whole_or_byte_by_byte():
    assert lora_at.AtParser().feed(GOOD) == EVENTS
    p = lora_at.AtParser()
    got = []
    for b in GOOD:
        got += p.feed(bytes([b]))
    assert got == EVENTS


def test_binary_data_is_read_by_its_length():
    frame = bytes(range(256))[:51]  # holds CR, LF and commas
    line = b"+RCV=9,51," + frame + b",-101,-7\r\n"
    assert lora_at.AtParser().feed(line) == [("rcv", 9, frame, -101, -7)]


def test_garbage_is_reported_and_skipped_up_to_the_next_line():
    p = lora_at.AtParser(max_payload=60)
    events = p.feed(b"junk\r\n+RCV=1,61,\r\n+RCV=x,2,ab\r\n+RCV=1,2,ab,-1\r\n+OK\r\n" + b"A" * 80 + b"\r\n+OK\r\n")
    kinds = [e[0] for e in events]
    assert kinds == ["error", "error", "error", "error", "ok", "error", "ok"], events
    assert "at most 60" in events[1][1]
    assert lora_at.AtParser().feed(b"+OK\n") == [("error", "line does not end in CR LF")]
    assert lora_at.AtParser().feed(b"+ERR=x\r\n")[0][0] == "error"
    assert lora_at.AtParser().feed(b"+BAND=\xc3\x28\r\n")[0][0] == "error"  # not text: found by qis fuzz at-mp
