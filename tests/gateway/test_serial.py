"""The serial link's framing on the gateway (gateway/ingest/serial.py), against the edge's
own stream records (edge/stream.py) and the vectors of docs/PROTOCOL.md."""
from __future__ import annotations

import json
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from qis.edge import stream
from qis.gateway.ingest.serial import MAX_FRAME, RecordDecoder, encode_record

VECTORS = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "stream.json").read_text())


def frames_of(events: list) -> list[bytes]:
    return [v for kind, v in events if kind == "frame"]


def test_the_stream_vectors_both_ways():
    vectors = [v for v in VECTORS["vectors"] if "payload" in v]
    assert len(vectors) >= 5
    for v in vectors:
        payload, wire = bytes.fromhex(v["payload"]), bytes.fromhex(v["wire"])
        assert encode_record(payload) == wire, v["name"]
        assert RecordDecoder(max(len(payload), 1)).feed(wire) == [("frame", payload)], v["name"]


@settings(max_examples=300, deadline=None)
@given(payloads=st.lists(st.binary(min_size=1, max_size=MAX_FRAME), min_size=1, max_size=5),
       cut=st.integers(0, 4000))
def test_edge_records_decode_here_and_ours_decode_there(payloads, cut):
    wire = b"".join(stream.encode(p) for p in payloads)
    ours = b"".join(encode_record(p) for p in payloads)
    assert ours == wire
    dec = RecordDecoder()
    cut = cut % (len(wire) + 1)
    assert frames_of(dec.feed(wire[:cut]) + dec.feed(wire[cut:])) == payloads
    assert frames_of(stream.Decoder(MAX_FRAME).feed(ours)) == payloads


def test_line_noise_costs_one_record_and_is_named():
    hit, nxt = b"A" * 51, b"B" * 51
    record = bytearray(encode_record(hit))
    record[20] ^= 0x04
    assert RecordDecoder().feed(bytes(record) + encode_record(nxt)) == [("error", "crc mismatch"), ("frame", nxt)]


def test_garbage_and_oversized_records():
    dec = RecordDecoder()
    events = dec.feed(b"\x00" + b"\x41" * 2000 + b"\x00")  # no delimiter for 2000 bytes
    assert events == [("error", "too long")]
    assert dec.feed(b"\x05ab\x00") == [("error", "cobs: block runs past the end of the record")]
    assert dec.feed(b"\x03ab\x00") == [("error", "too short")]
    assert dec.feed(encode_record(b"x" * (MAX_FRAME + 1))) == [("error", "too long")]
    assert dec.feed(encode_record(b"ok")) == [("frame", b"ok")]  # and it is back in step
