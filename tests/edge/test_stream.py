# edge/stream.py: COBS + CRC32 records. Runs under pytest and under MicroPython.
import json

from edgetest import load, raises, unhex, vector_path

stream = load("stream")
errors = load("errors")


class Rng:
    """xorshift32: a small deterministic PRNG giving the same numbers on both interpreters."""

    def __init__(self, seed):
        self.s = seed or 1

    def next(self):
        s = self.s
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.s = s
        return s

    def below(self, n):
        return self.next() % n

    def data(self, n, zero_every=0):
        """n random bytes; with zero_every, about one byte in zero_every is 0x00."""
        out = bytearray(n)
        for i in range(n):
            if zero_every and self.below(zero_every) == 0:
                out[i] = 0
            else:
                out[i] = 1 + self.below(255)
        return bytes(out)


def vectors():
    with open(vector_path("stream.json")) as f:
        return json.load(f)["vectors"]


def frames_of(events):
    return [body for kind, body in events if kind == "frame"]


def test_golden_vectors_encode_and_decode():
    vs = vectors()
    assert len(vs) >= 10
    for v in vs:
        payload = unhex(v["payload"])
        wire = unhex(v["wire"])
        assert stream.encode(payload) == wire, v["name"]
        buf = bytearray(stream.max_wire_size(len(payload)))
        n = stream.encode_into(payload, buf)
        assert bytes(buf[:n]) == wire, v["name"]
        assert n <= len(buf)
        assert stream.Decoder().feed(wire) == [("frame", payload)], v["name"]


def test_vectors_cover_cobs_block_boundaries():
    # 253/254/255-byte zero-free runs: one code byte, one full 0xFF block, 0xFF then 02.
    by_name = dict((v["name"], unhex(v["wire"])) for v in vectors())
    run254 = [w for name, w in by_name.items() if "254-byte zero-free" in name][0]
    assert run254[1] == 0xFF and len(run254) == 254 + 3
    run255 = [w for name, w in by_name.items() if "255-byte zero-free" in name][0]
    assert run255[1] == 0xFF and run255[256] == 0x02 and len(run255) == 255 + 4
    run253 = [w for name, w in by_name.items() if "253-byte zero-free" in name][0]
    assert run253[1] == 0xFE and len(run253) == 253 + 3


def test_round_trip_many_sizes():
    rng = Rng(7)
    sizes = list(range(0, 40)) + [250, 251, 252, 253, 254, 255, 256, 257, 258, 504, 505, 506, 507, 508, 509, 763, 1020, 1024]
    dec = stream.Decoder()
    buf = bytearray(stream.max_wire_size(1024))
    for n in sizes:
        for zero_every in (0, 2, 50, 300):
            payload = rng.data(n, zero_every)
            wire = stream.encode(payload)
            assert wire[0] == 0 and wire[-1] == 0 and 0 not in wire[1:-1]
            assert len(wire) <= stream.max_wire_size(n)
            assert stream.encode_into(payload, buf) == len(wire)  # a reused buffer
            assert bytes(buf[: len(wire)]) == wire
            assert dec.feed(wire) == [("frame", payload)]
    assert dec.errors == 0 and dec.frames == len(sizes) * 4


def test_encode_accepts_bytearray_and_memoryview():
    payload = b"\x00abc\x00"
    wire = stream.encode(payload)
    assert stream.encode(bytearray(payload)) == wire
    assert stream.encode(memoryview(b"xx" + payload)[2:]) == wire


def _cobs_reference(data):
    """COBS (Cheshire and Baker 1999), written the plain way: blocks of up to 254 bytes."""
    out = bytearray()
    block = bytearray()
    ended_full = False  # data that ends on a full block needs no final code byte
    for b in data:
        ended_full = False
        if b == 0:
            out.append(len(block) + 1)
            out.extend(block)
            block = bytearray()
        else:
            block.append(b)
            if len(block) == 254:
                out.append(255)
                out.extend(block)
                block = bytearray()
                ended_full = True
    if not ended_full:
        out.append(len(block) + 1)
        out.extend(block)
    return bytes(out)


def test_hot_loops_match_a_plain_cobs():
    # On MicroPython _stuff/_unstuff are viper code, on CPython the same source as Python.
    rng = Rng(11)
    for n in (1, 2, 3, 4, 253, 254, 255, 256, 508, 509, 600):
        for zero_every in (0, 1, 3, 200):
            data = rng.data(n, zero_every)
            d = 2 + n // 254
            buf = bytearray(stream.cobs_capacity(n) + 2)
            buf[d : d + n] = data
            w = stream._stuff(buf, d, n)
            assert bytes(buf[1:w]) == _cobs_reference(data), (n, zero_every)
            enc = bytearray(buf[1:w])
            k = stream._unstuff(enc, len(enc))
            assert bytes(enc[:k]) == data, (n, zero_every)
    for data in (bytes(1) + b"y" * 254, b"y" * 254, b"y" * 253 + bytes(1) + b"y" * 254):
        buf = bytearray(stream.cobs_capacity(len(data)) + 2)
        d = 2 + len(data) // 254
        buf[d : d + len(data)] = data
        assert bytes(buf[1 : stream._stuff(buf, d, len(data))]) == _cobs_reference(data)
    assert stream._unstuff(bytearray(b"\x05ab"), 3) == -1


def test_feed_byte_by_byte_and_in_random_chunks():
    rng = Rng(3)
    payloads = [rng.data(rng.below(700), 40) for _ in range(30)]
    wire = b"".join(stream.encode(p) for p in payloads)
    dec = stream.Decoder()
    got = []
    for i in range(len(wire)):
        got.extend(dec.feed(wire[i : i + 1]))
    assert got == [("frame", p) for p in payloads]
    assert dec.bytes_in == len(wire)
    dec = stream.Decoder()
    got = []
    i = 0
    while i < len(wire):
        k = rng.below(300)
        got.extend(dec.feed(memoryview(wire)[i : i + k]))
        i += k
    assert got == [("frame", p) for p in payloads]
    assert dec.frames == len(payloads) and dec.errors == 0 and dec.bytes_in == len(wire)


def test_empty_records_are_silently_ignored():
    dec = stream.Decoder()
    assert dec.feed(b"\x00\x00\x00\x00") == []
    assert dec.feed(b"") == []
    assert (dec.frames, dec.errors, dec.bytes_in) == (0, 0, 4)


def test_crc_mismatch():
    wire = bytearray(stream.encode(b"hello"))
    wire[3] ^= 0x01  # a data byte, not a code byte: COBS stays valid
    dec = stream.Decoder()
    assert dec.feed(wire) == [("error", "crc mismatch")]
    assert (dec.frames, dec.errors) == (0, 1)


def test_malformed_cobs():
    dec = stream.Decoder()
    events = dec.feed(b"\x00\x09abc\x00")  # code 9 promises 8 bytes, the record has 3
    assert len(events) == 1 and events[0][0] == "error"
    assert events[0][1].startswith("cobs: ")
    assert dec.errors == 1


def test_too_short():
    dec = stream.Decoder()
    for record in (b"\x01", b"\x02A", b"\x04ABC", b"\x01\x01\x01"):
        assert dec.feed(b"\x00" + record + b"\x00") == [("error", "too short")], record
    assert dec.errors == 4


def test_too_long_without_delimiter_then_resync():
    dec = stream.Decoder(max_payload=8)
    assert dec.capacity == 13
    good = stream.encode(b"\x00ok\x00", max_payload=8)
    # The error fires once, as soon as the record outgrows the buffer, then bytes are
    # discarded up to the next delimiter.
    events = dec.feed(b"\x00" + b"A" * 10)
    assert events == []
    events = dec.feed(b"A" * 4)
    assert events == [("error", "too long")]
    assert dec.feed(b"B" * 500) == []
    assert dec.feed(good) == [("frame", b"\x00ok\x00")]
    # Byte by byte gives the same single error.
    dec = stream.Decoder(max_payload=8)
    got = []
    for b in b"\x00" + b"C" * 40 + good:
        got.extend(dec.feed(bytes([b])))
    assert got == [("error", "too long"), ("frame", b"\x00ok\x00")]


def test_too_long_after_decoding():
    # 252 zero bytes encode to 257 COBS bytes, within the 257-byte capacity of
    # max_payload=251, but decode to a payload one byte over the limit.
    dec = stream.Decoder(max_payload=251)
    assert dec.feed(stream.encode(bytes(252))) == [("error", "too long")]
    assert dec.feed(stream.encode(bytes(251))) == [("frame", bytes(251))]


def test_largest_payload_fits_every_pattern():
    for max_payload in (0, 8, 250, 251, 1024):
        dec = stream.Decoder(max_payload=max_payload)
        for payload in (bytes(max_payload), b"\x01" * max_payload, b"\xff" * max_payload):
            assert dec.feed(stream.encode(payload, max_payload)) == [("frame", payload)]


def test_bad_arguments_raise_clear_errors():
    e = raises(errors.EncodeError, stream.encode, b"x" * 1025)
    assert "1025" in str(e) and "max_payload" in str(e)
    e = raises(errors.EncodeError, stream.encode, b"x" * 9, 8)
    assert "exceeds max_payload 8" in str(e)
    e = raises(errors.EncodeError, stream.encode, "text")
    assert "payload must be bytes" in str(e)
    e = raises(errors.EncodeError, stream.encode, None)
    assert "payload must be bytes" in str(e)
    e = raises(errors.EncodeError, stream.encode_into, b"abc", bytearray(9))
    assert "too small" in str(e) and "10" in str(e)
    e = raises(errors.EncodeError, stream.encode_into, b"abc", bytes(64))
    assert "buf must be a bytearray" in str(e)
    e = raises(errors.QisError, stream.Decoder, -1)
    assert "max_payload" in str(e)
    e = raises(errors.QisError, stream.Decoder, "big")
    assert "max_payload" in str(e)


def test_resync_after_each_kind_of_damage():
    a_body = b"first record \x00 with a zero"
    a = stream.encode(a_body)
    b = stream.encode(b"second record")
    cases = [
        ("cut in half", a[: len(a) // 2] + b),
        ("garbage inserted", a[:5] + b"\x17\x00\x42\x42\x99" + a[5:] + b),
        ("leading garbage", b"\xaa\xbb\x03\xcc" + b),
        ("byte dropped", a[:4] + a[5:] + b),
        ("bit flipped to zero", a[:6] + b"\x00" + a[7:] + b),
        ("bit flipped", a[:9] + bytes([a[9] ^ 0x40]) + a[10:] + b),
        ("both delimiters of a lost after noise", b"\x55\x66" + a[1:-1] + b),
        ("a and b merged: b's leading delimiter lost", a[:-1] + b[1:] + b),
    ]
    for name, wire in cases:
        dec = stream.Decoder()
        events = dec.feed(wire)
        assert frames_of(events) == [b"second record"], name
        assert events[-1] == ("frame", b"second record"), name
        assert dec.errors >= 1 and dec.frames == 1, name
    # Either delimiter alone ends a record: losing one costs nothing.
    for wire in (a[:-1] + b, a + b[1:]):
        assert stream.Decoder().feed(wire) == [("frame", a_body), ("frame", b"second record")]


def test_seeded_line_noise_no_corrupt_frame_passes():
    rng = Rng(2024)
    sent = []
    line = bytearray()
    damaged = []
    for seq in range(200):
        payload = bytes([seq]) + rng.data(rng.below(120), 20)
        sent.append(payload)
        hit = False
        for byte in stream.encode(payload):
            roll = rng.below(1000)
            if roll < 2:  # drop this byte
                hit = True
                continue
            if roll < 5:  # flip one bit
                byte ^= 1 << rng.below(8)
                hit = True
            line.append(byte)
            if roll == 5:  # insert a garbage byte after it
                line.append(rng.below(256))
                hit = True
        damaged.append(hit)
    dec = stream.Decoder()
    got = []
    i = 0
    while i < len(line):
        k = 1 + rng.below(64)
        got.extend(frames_of(dec.feed(line[i : i + k])))
        i += k
    sent_set = set(sent)
    for body in got:
        assert body in sent_set  # CRC32: no corrupt frame is ever delivered
    intact = [p for p, hit in zip(sent, damaged) if not hit]
    assert len(intact) > 100 and 20 < damaged.count(True)
    recovered = set(got)
    for p in intact:
        assert p in recovered  # every record whose own bytes arrived intact
    assert dec.frames == len(got) and dec.errors > 0
    assert dec.bytes_in == len(line)
