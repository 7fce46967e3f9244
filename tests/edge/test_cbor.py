# edge.cbor under pytest and MicroPython: RFC 8949 vectors, key order, every rejection.
# No map here mixes text and byte-string keys: MicroPython warns on stderr when a dict
# compares str with bytes, and the MicroPython harness reads the summary from the last line.
import json

from edgetest import load, raises, unhex, vector_path

cbor = load("cbor")
errors = load("errors")
Tag = cbor.Tag


def _vectors():
    with open(vector_path("cbor.json")) as f:
        return json.load(f)


def _value(v):
    """A JSON description from cbor.json as a Python value ($bytes, $tag, $map)."""
    if isinstance(v, list):
        return [_value(x) for x in v]
    if isinstance(v, dict):
        if "$bytes" in v:
            return unhex(v["$bytes"])
        if "$tag" in v:
            return Tag(v["$tag"][0], _value(v["$tag"][1]))
        if "$map" in v:
            return dict((_value(k), _value(x)) for k, x in v["$map"])
        return dict((k, _value(x)) for k, x in v.items())
    return v


def _rejects(hexdata, fragment):
    try:
        value = cbor.loads(unhex(hexdata))
    except errors.DecodeError as exc:
        assert fragment in str(exc), "%s: %r lacks %r" % (hexdata, str(exc), fragment)
    else:
        raise AssertionError("%s decoded to %r, not DecodeError %r" % (hexdata, value, fragment))


def test_rfc8949_appendix_a_encodes_exactly():
    for vec in _vectors()["valid"]:
        got = cbor.dumps(_value(vec["value"]))
        assert got == unhex(vec["hex"]), "%r: %r != %s" % (vec["value"], got, vec["hex"])


def test_rfc8949_appendix_a_decodes():
    for vec in _vectors()["valid"]:
        assert cbor.loads(unhex(vec["hex"])) == _value(vec["value"]), vec["hex"]


def test_invalid_vectors_rejected_with_named_problem():
    vectors = _vectors()["invalid"]
    assert len(vectors) > 50
    for vec in vectors:
        _rejects(vec["hex"], vec["error"])


def test_round_trips():
    values = [
        0, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
        -1, -24, -25, -256, -257, -65536, -65537, -2**32, -2**32 - 1, -2**64,
        b"", b"\x00" * 23, b"\xff" * 24, bytes(range(256)), b"x" * 65536,
        "", "a" * 24, "h\u00e9llo \u6c34 \U0001f600", "x" * 256,
        True, False, None, [], {}, [1, [2, [3, [4]]]],
        {1: b"a", -5: [None, True], 2**40: {3: "x"}},
        {"k": {"n": [1, 2]}, "": 0},
        {b"\x01": 1, b"": [b"\x00"]},
        Tag(0, "t"), Tag(2**64 - 1, [Tag(24, b"\xa0")]), Tag(23, {5: 6}),
    ]
    for v in values:
        assert cbor.loads(cbor.dumps(v)) == v, v


def test_utf8_boundaries_round_trip():
    for cp in (0x7F, 0x80, 0x7FF, 0x800, 0xD7FF, 0xE000, 0xFFFD, 0xFFFF, 0x10000, 0x10FFFF):
        s = "a" + chr(cp) + "b"
        enc = cbor.dumps(s)
        assert enc[1:] == s.encode("utf-8")
        assert cbor.loads(enc) == s


def test_tuple_encodes_as_array_decodes_as_list():
    assert cbor.dumps((1, (2, 3))) == cbor.dumps([1, [2, 3]]) == unhex("8201820203")
    assert cbor.loads(cbor.dumps((1, (2, 3)))) == [1, [2, 3]]


def test_bytearray_and_memoryview_encode_as_bytes():
    assert cbor.dumps(bytearray(b"ab")) == cbor.dumps(memoryview(b"ab")) == unhex("426162")


def test_decoded_types():
    got = cbor.loads(unhex("83430102036361626380"))
    assert type(got[0]) is bytes and type(got[1]) is str and got[2] == [] and type(got[2]) is list


def test_key_order_bytewise_not_length_first():
    # cbor2's canonical=True sorts -1 (0x20) before 100 (0x1864); RFC 8949 4.2.1 does not.
    assert cbor.dumps({-1: 0, 100: 0}) == unhex("a21864002000")
    assert cbor.dumps({"aa": 0, "b": 0}) == unhex("a261620062616100")
    enc = cbor.dumps({"aa": 4, "z": 3, -1: 2, 100: 1, 10: 0})
    assert enc == unhex("a50a001864012002617a0362616104")


def test_loads_accepts_bytearray_and_memoryview_slices():
    buf = bytearray(unhex("ff8201820203ff"))
    assert cbor.loads(bytearray(buf[1:-1])) == [1, [2, 3]]
    assert cbor.loads(memoryview(buf)[1:-1]) == [1, [2, 3]]


def test_loads_rejects_non_bytes_input():
    for bad in ("a0", [0], 0, None, Tag(0, 0)):
        exc = raises(errors.DecodeError, cbor.loads, bad)
        assert "expected bytes" in str(exc)


def test_depth_limit_both_ways():
    assert cbor.MAX_DEPTH == 16
    ok = [0]
    for _ in range(15):
        ok = [ok]
    assert cbor.loads(cbor.dumps(ok)) == ok  # 16 arrays deep
    deep = [ok]
    assert "nesting deeper than 16" in str(raises(errors.EncodeError, cbor.dumps, deep))
    assert "nesting deeper" in str(raises(errors.EncodeError, cbor.dumps, Tag(1, ok)))
    _rejects("81" * 17 + "00", "nesting deeper than 16 at offset 16")
    _rejects("c1" * 17 + "00", "nesting deeper than 16")
    _rejects("a101" * 17 + "00", "nesting deeper than 16")
    assert cbor.loads(unhex("a101" * 16 + "00")) is not None


def test_encode_rejects_unsupported_types_naming_them():
    for bad, name in ((1.5, "float"), ({1, 2}, "set"), (object(), "object"), ([1, 0.0], "float")):
        exc = raises(errors.EncodeError, cbor.dumps, bad)
        assert name in str(exc), str(exc)


def test_encode_rejects_out_of_range_integers():
    for bad in (2**64, -2**64 - 1, 2**100, -2**100):
        exc = raises(errors.EncodeError, cbor.dumps, bad)
        assert "out of range" in str(exc)
    for bad in (-1, 2**64, "1", None):
        exc = raises(errors.EncodeError, cbor.dumps, Tag(bad, 0))
        assert "tag number" in str(exc)


def test_encode_rejects_unsupported_map_keys():
    for key in (True, False, None, 1.5, (1, 2)):
        exc = raises(errors.EncodeError, cbor.dumps, {key: 0})
        assert "unsupported map key type" in str(exc), str(exc)


def test_encode_rejects_invalid_text():
    # A lone surrogate: CPython's encoder refuses it, MicroPython stores it as ED A0 80.
    exc = raises(errors.EncodeError, cbor.dumps, "a\ud800")
    assert "text string" in str(exc)


def test_tag_equality_and_repr():
    assert Tag(1, [2]) == Tag(1, [2])
    assert Tag(1, [2]) != Tag(1, [3]) and Tag(1, 2) != Tag(2, 2) and Tag(1, 2) != 2
    assert not (Tag(1, 2) != Tag(1, 2))
    assert repr(Tag(24, b"\x01")) == "Tag(24, b'\\x01')"
    assert cbor.loads(unhex("c1c2c340")) == Tag(1, Tag(2, Tag(3, b"")))


def test_loads_accepts_only_what_dumps_produces():
    # Every byte changed in a valid encoding either decodes to a value that dumps re-encodes
    # to the same bytes, or raises DecodeError: nothing non-deterministic gets through.
    base = cbor.dumps({1: [b"\x00\x01", "\u00e9t\u00e9", -300, Tag(7, None)], 2: {3: True}})
    accepted = rejected = 0
    for i in range(len(base)):
        for b in (0x00, 0x17, 0x18, 0x1F, 0x20, 0x5F, 0x7F, 0x9F, 0xBF, 0xDF, 0xF4, 0xFF):
            data = bytearray(base)
            data[i] = b
            try:
                value = cbor.loads(data)
            except errors.DecodeError:
                rejected += 1
                continue
            accepted += 1
            assert cbor.dumps(value) == bytes(data), bytes(data)
    assert accepted > 10 and rejected > 100


def test_tags_refused_when_asked_at_any_depth():
    assert cbor.loads(unhex("c100")) == Tag(1, 0)  # allowed by default
    for hexdata, at in (("c100", 0), ("82 01 d8 1c 80", 2), ("a1 01 81 c2 40", 3), ("d81d 00", 0)):
        data = unhex(hexdata.replace(" ", ""))
        exc = raises(errors.DecodeError, cbor.loads, data, False)
        assert "tags are not allowed here" in str(exc) and ("offset %d" % at) in str(exc), str(exc)
    # The shared-value chain that makes cbor2 take exponential time: refused at the first tag.
    chain = b"\xd8\x1c\x81\x00"
    for i in range(1, 60):
        chain = b"\xd8\x1c\x82" + chain + b"\xd8\x1d" + bytes((0x18, i))
    exc = raises(errors.DecodeError, cbor.loads, chain, False)
    assert "tags are not allowed here (tag 28) at offset 0" in str(exc)
    # With tags allowed, the chain is still bounded: nesting deeper than 16 is refused.
    assert "nesting deeper than 16" in str(raises(errors.DecodeError, cbor.loads, chain))


def test_loads_prefix_leaves_the_padding_unread():
    value, end = cbor.loads_prefix(unhex("820102") + bytes(20))
    assert (value, end) == ([1, 2], 3)
    value, end = cbor.loads_prefix(memoryview(unhex("43616263ff")))
    assert (value, end) == (b"abc", 4)
    exc = raises(errors.DecodeError, cbor.loads_prefix, unhex("8301"), False)
    assert "truncated" in str(exc)
