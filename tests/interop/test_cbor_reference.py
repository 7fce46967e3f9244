"""edge.cbor against cbor2 and across interpreters (CPython only).

A batch of hypothesis-generated protocol values is encoded by edge.cbor under ONE real
MicroPython process; its bytes must equal an independent deterministic reference encoding
built from cbor2 leaves, decode with cbor2 to the same value, and decode with edge.cbor
under CPython to the same value. Non-deterministic encodings made with cbor2 must be
rejected, and random bytes must give identical verdicts on both interpreters.
"""
from __future__ import annotations

import random
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from mp import run_mp_code
from qis.edge import cbor
from qis.edge.cbor import Tag
from qis.edge.errors import DecodeError, EncodeError

BOUNDARY_INTS = [
    0, 1, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1,
    -1, -24, -25, -256, -257, -65536, -65537, -2**32, -2**32 - 1, -2**64,
]
BATCH = 400


# ----------------------------------------------------------------- reference encoding


def _head(major: int, n: int) -> bytes:
    """Shortest head for major type `major`, argument n, taken from cbor2's encoding of n."""
    h = cbor2.dumps(n)
    return bytes([(major << 5) | (h[0] & 31)]) + h[1:]


def reference_dumps(v: Any) -> bytes:
    """RFC 8949 4.2.1 encoding: cbor2 for every leaf, map entries sorted by encoded key bytes.

    cbor2's canonical=True is not used for maps: it sorts keys length-first (RFC 7049).
    """
    if isinstance(v, (list, tuple)):
        return _head(4, len(v)) + b"".join(reference_dumps(x) for x in v)
    if isinstance(v, dict):
        entries = sorted((reference_dumps(k), reference_dumps(x)) for k, x in v.items())
        return _head(5, len(entries)) + b"".join(k + x for k, x in entries)
    if isinstance(v, Tag):
        return _head(6, v.tag) + reference_dumps(v.value)
    return cbor2.dumps(v)


def to_cbor2(v: Any) -> Any:
    """v in one form for comparison: Tag -> CBORTag, tuple -> list, cbor2's frozendict -> dict."""
    if isinstance(v, (list, tuple)):
        return [to_cbor2(x) for x in v]
    if isinstance(v, (dict, cbor2.frozendict)):
        return {to_cbor2(k): to_cbor2(x) for k, x in v.items()}
    if isinstance(v, Tag):
        return cbor2.CBORTag(v.tag, to_cbor2(v.value))
    if isinstance(v, cbor2.CBORTag):
        return cbor2.CBORTag(v.tag, to_cbor2(v.value))
    return v


def _plain_tag(n: int) -> bool:
    """True if cbor2 has no semantic decoder for tag n (it returns CBORTag as is)."""
    try:
        return isinstance(cbor2.loads(_head(6, n) + b"\x00"), cbor2.CBORTag)
    except cbor2.CBORDecodeError:
        return False


def depth(v: Any) -> int:
    """Nesting depth as edge.cbor counts it (arrays, maps and tags)."""
    if isinstance(v, (list, tuple)):
        return 1 + max((depth(x) for x in v), default=0)
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, Tag):
        return 1 + depth(v.value)
    return 0


def mp_literal(v: Any) -> str:
    """Python source that MicroPython evaluates to v (with Tag in scope)."""
    if isinstance(v, list):
        return "[%s]" % ", ".join(mp_literal(x) for x in v)
    if isinstance(v, tuple):
        return "(%s)" % "".join(mp_literal(x) + ", " for x in v)
    if isinstance(v, dict):
        return "{%s}" % ", ".join("%s: %s" % (mp_literal(k), mp_literal(x)) for k, x in v.items())
    if isinstance(v, Tag):
        return "Tag(%d, %s)" % (v.tag, mp_literal(v.value))
    if isinstance(v, str):
        return ascii(v)
    return repr(v)


# ----------------------------------------------------------------- value generation

ints = st.one_of(st.sampled_from(BOUNDARY_INTS), st.integers(-(2**64), 2**64 - 1),
                 st.integers(-300, 300))
texts = st.text(max_size=24)  # hypothesis text: any code point except surrogates
keys = st.one_of(ints, texts, st.binary(max_size=12))
leaves = st.one_of(ints, st.binary(max_size=40), texts, st.booleans(), st.none())
tag_numbers = st.one_of(st.sampled_from([6, 23, 24, 255, 65535, 65536, 2**32, 2**64 - 1]),
                        st.integers(0, 2**64 - 1)).filter(_plain_tag)
values = st.recursive(
    leaves,
    lambda kids: st.one_of(
        st.lists(kids, max_size=6),
        st.lists(kids, max_size=4).map(tuple),
        st.dictionaries(keys, kids, max_size=6),
        st.builds(Tag, tag_numbers, kids),
    ),
    max_leaves=24,
)


def draw_batch(strategy: st.SearchStrategy, n: int) -> list:
    """n examples of strategy, reproducibly (derandomized), without shrinking."""
    batch: list = []

    @settings(max_examples=n, database=None, derandomize=True, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)
    @given(strategy)
    def collect(v: Any) -> None:
        batch.append(v)

    collect()
    return batch


FIXED = BOUNDARY_INTS + [
    b"", b"\x00" * 23, b"\x01" * 24, b"\x02" * 255, b"\x03" * 256, b"\x04" * 65536,
    "", "\u00e9" * 12, "x" * 24, "\U0010ffff\u0800\u07ff\x7f",
    True, False, None, [], (), {},
    {10: 1, 100: 2, -1: 3, "z": 4, "aa": 5, b"": 6, b"\x00": 7},
    Tag(2**64 - 1, [Tag(6, {})]),
]


@pytest.fixture(scope="module")
def batch() -> list:
    out = FIXED + [v for v in draw_batch(values, BATCH) if depth(v) <= cbor.MAX_DEPTH]
    assert len(out) > BATCH // 2
    return out


MP_ENCODE = """
import sys, binascii
from edge.cbor import dumps, loads, Tag
while True:
    line = sys.stdin.readline()
    if not line:
        break
    data = dumps(eval(line, {"Tag": Tag}))
    again = dumps(loads(data))
    print(binascii.hexlify(data).decode(), "same" if again == data else "DIFFERENT")
"""


@pytest.fixture(scope="module")
def mp_encoded(batch: list) -> list[bytes]:
    source = "".join(mp_literal(v) + "\n" for v in batch).encode()
    proc = run_mp_code(MP_ENCODE, input=source, heap="64M")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    lines = proc.stdout.decode().splitlines()
    assert len(lines) == len(batch)
    out = []
    for v, line in zip(batch, lines):
        hexdata, verdict = line.split()
        assert verdict == "same", "MicroPython loads/dumps changed %r" % (v,)
        out.append(bytes.fromhex(hexdata))
    return out


def test_micropython_bytes_equal_reference_encoding(batch: list, mp_encoded: list[bytes]) -> None:
    for v, data in zip(batch, mp_encoded):
        assert data == reference_dumps(v), v
        assert cbor.dumps(v) == data, v  # CPython and MicroPython agree


def test_cbor2_decodes_micropython_bytes(batch: list, mp_encoded: list[bytes]) -> None:
    for v, data in zip(batch, mp_encoded):
        assert to_cbor2(cbor2.loads(data)) == to_cbor2(v), v


def test_cpython_loads_micropython_bytes(batch: list, mp_encoded: list[bytes]) -> None:
    for v, data in zip(batch, mp_encoded):
        assert to_cbor2(cbor.loads(data)) == to_cbor2(v), v


def test_canonical_cbor2_is_reference_only_for_equal_length_keys() -> None:
    # The reason the reference sorts by itself: length-first and bytewise order differ.
    v = {100: 0, -1: 0}
    assert cbor2.dumps(v, canonical=True) != cbor.dumps(v) == reference_dumps(v)
    w = {3: 0, -1: 0, "a": 0, b"b": 0}  # all keys encode to equal lengths
    assert cbor2.dumps(w, canonical=True) == cbor.dumps(w)


# ----------------------------------------------------------------- non-deterministic input

flat_maps = st.dictionaries(keys, leaves, min_size=2, max_size=8)


@settings(max_examples=300, deadline=None)
@given(flat_maps, st.randoms(use_true_random=False))
def test_unsorted_cbor2_maps_rejected(d: dict, rnd: random.Random) -> None:
    items = list(d.items())
    rnd.shuffle(items)
    data = cbor2.dumps(dict(items))  # cbor2 keeps insertion order
    in_order = [cbor2.dumps(k) for k, _ in items] == sorted(cbor2.dumps(k) for k in d)
    if in_order:
        assert cbor.loads(data) == d
    else:
        with pytest.raises(DecodeError, match="map keys out of order"):
            cbor.loads(data)


def _widen(data: bytes, size: int) -> bytes | None:
    """The same item with its head argument written in `size` bytes, if that is wider."""
    ai = data[0] & 31
    have = 0 if ai < 24 else 1 << (ai - 24)
    if size <= have:
        return None
    arg = ai if ai < 24 else int.from_bytes(data[1:1 + have], "big")
    wide_ai = {1: 24, 2: 25, 4: 26, 8: 27}[size]
    return bytes([(data[0] & 0xE0) | wide_ai]) + arg.to_bytes(size, "big") + data[1 + have:]


heads = st.one_of(
    st.integers(0, 2**32).map(cbor2.dumps),
    st.integers(-(2**32), -1).map(cbor2.dumps),
    st.binary(max_size=300).map(cbor2.dumps),
    st.text(max_size=30).map(cbor2.dumps),
    st.lists(st.integers(0, 9), max_size=30).map(cbor2.dumps),
    st.dictionaries(st.integers(0, 9), st.none(), max_size=9).map(reference_dumps),
    st.tuples(st.integers(0, 70000).filter(_plain_tag), st.integers(0, 5)).map(
        lambda t: cbor2.dumps(cbor2.CBORTag(t[0], t[1]))),
)


@settings(max_examples=300, deadline=None)
@given(heads, st.sampled_from([1, 2, 4, 8]))
def test_non_shortest_heads_rejected(data: bytes, size: int) -> None:
    assert to_cbor2(cbor.loads(data)) == to_cbor2(cbor2.loads(data))  # shortest form accepted
    wide = _widen(data, size)
    if wide is not None:
        assert cbor2.loads(wide) == cbor2.loads(data)  # same value for cbor2
        with pytest.raises(DecodeError, match="non-shortest"):
            cbor.loads(wide)


@pytest.mark.parametrize("value, fragment", [
    (1.5, "floats"), (0.0, "floats"), (float("nan"), "floats"), (1e300, "floats"),
    (cbor2.undefined, "unsupported simple value"),
    (cbor2.CBORSimpleValue(99), "unsupported simple value"),
    ({True: 1}, "unsupported map key type bool"), ({(1, 2): 1}, "unsupported map key type list"),
    ({None: 1}, "unsupported map key type NoneType"),
])
def test_other_cbor2_output_rejected(value: Any, fragment: str) -> None:
    with pytest.raises(DecodeError, match=fragment):
        cbor.loads(cbor2.dumps(value))


def test_cbor2_bignum_decodes_as_tag() -> None:
    assert cbor.loads(cbor2.dumps(2**64)) == Tag(2, b"\x01" + bytes(8))
    assert cbor.loads(cbor2.dumps(-(2**64) - 1)) == Tag(3, b"\x01" + bytes(8))


def test_duplicate_keys_after_encoding_rejected() -> None:
    class Key(int):  # distinct dict keys that encode to the same bytes
        __hash__ = object.__hash__

    with pytest.raises(EncodeError, match="duplicate map key"):
        cbor.dumps({Key(1): "a", Key(1): "b"})


# ----------------------------------------------------------------- fuzz


def _verdict(data: bytes) -> str:
    try:
        value = cbor.loads(data)
    except DecodeError as exc:
        return "E " + str(exc)
    again = cbor.dumps(value)
    return "OK" if again == data else "REENCODED " + again.hex()


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=64))
def test_random_bytes_only_decode_error(data: bytes) -> None:
    assert _verdict(data).startswith(("E ", "OK"))


def _fuzz_inputs(n: int) -> list[bytes]:
    rnd = random.Random(8949)
    seeds = [reference_dumps(v) for v in FIXED if len(reference_dumps(v)) < 400]
    out = []
    for i in range(n):
        if i % 2:
            out.append(bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 40))))
        else:
            data = bytearray(rnd.choice(seeds))
            for _ in range(rnd.randrange(1, 4)):
                if data:
                    data[rnd.randrange(len(data))] = rnd.getrandbits(8)
            out.append(bytes(data[: rnd.randrange(len(data) + 1)] if rnd.random() < 0.2 else data))
    return out


MP_FUZZ = """
import sys, binascii
from edge.cbor import dumps, loads
from edge.errors import DecodeError
while True:
    line = sys.stdin.readline()
    if not line:
        break
    data = binascii.unhexlify(line.strip())
    try:
        value = loads(data)
    except DecodeError as exc:
        print("E " + str(exc))
        continue
    except Exception as exc:
        print("CRASH %s %s" % (type(exc).__name__, exc))
        continue
    again = dumps(value)
    print("OK" if again == data else "REENCODED " + binascii.hexlify(again).decode())
"""


def test_fuzz_same_verdicts_on_micropython_and_cpython() -> None:
    inputs = _fuzz_inputs(3000)
    proc = run_mp_code(MP_FUZZ, input="".join(d.hex() + "\n" for d in inputs).encode(), heap="16M")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    mp_verdicts = proc.stdout.decode().splitlines()
    assert len(mp_verdicts) == len(inputs)
    accepted = 0
    for data, mp_verdict in zip(inputs, mp_verdicts):
        cp_verdict = _verdict(data)
        assert cp_verdict.startswith(("E ", "OK")), (data.hex(), cp_verdict)
        assert mp_verdict == cp_verdict, (data.hex(), mp_verdict, cp_verdict)
        accepted += cp_verdict == "OK"
    assert 50 < accepted < len(inputs) - 500, accepted
