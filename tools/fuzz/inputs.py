"""Structure-aware hostile inputs for the decoders of untrusted bytes.

Every generator takes a ``random.Random``-like object and returns bytes, so the same code
serves the long runs of `qis fuzz` (a seeded ``random.Random``) and the test suite
(hypothesis's ``st.randoms()``, which shrinks a failure to a small input). What they
aim at, besides plain noise: CBOR tags (shared values 28/29 that make cbor2 take
exponential time, bignums, unknown tags), deep nesting, heads that claim huge lengths,
indefinite lengths and breaks, floats and simple values, non-shortest heads, and frames
that are valid but for a few bytes.
"""
from __future__ import annotations

import random

from qis.edge import cbor, stream
from qis.edge import frame as spec

_MAX_ARG = (1 << 64) - 1


def head(major: int, arg: int, ai: int | None = None) -> bytes:
    """A CBOR head; ai forces a (possibly non-shortest) additional-info form."""
    if ai is None:
        ai = arg if arg < 24 else 24 if arg < 0x100 else 25 if arg < 0x10000 else 26 if arg < 1 << 32 else 27
    if ai < 24:
        return bytes([major << 5 | ai])
    if ai == 31:
        return bytes([major << 5 | 31])
    size = 1 << (ai - 24)
    return bytes([major << 5 | ai]) + (arg & ((1 << (8 * size)) - 1)).to_bytes(size, "big")


def shared_value_dag(levels: int) -> bytes:
    """The shared-value chain of issue 6: tag 28 (shareable) arrays whose second element
    refers back (tag 29) to an earlier one. cbor2 hashes it as a map key in 2^levels time."""
    b = b"\xd8\x1c\x81\x00"
    for k in range(1, levels + 1):
        i = levels - k + 1
        b = b"\xd8\x1c\x82" + b + b"\xd8\x1d" + (bytes([i]) if i < 24 else b"\x18" + bytes([i]))
    return b


def cbor_item(rng: random.Random, depth: int = 0, budget: int = 400) -> bytes:
    """One CBOR-ish item: mostly well-formed, with hostile heads, tags and nesting mixed in."""
    kind = rng.randrange(16 if depth < 24 and budget > 8 else 8)
    if kind == 0:
        return head(0, rng.choice([0, 1, 23, 24, 255, 256, 65535, 1 << 32, _MAX_ARG, rng.randrange(1 << 16)]))
    if kind == 1:
        return head(1, rng.randrange(1 << rng.choice([4, 8, 16, 64])))
    if kind == 2:  # a byte or text string, sometimes claiming more than there is
        n = rng.randrange(min(budget, 40) + 1)
        claim = n if rng.random() < 0.8 else rng.choice([n + 1, 1 << 31, _MAX_ARG])
        body = bytes(rng.randrange(256) for _ in range(n)) if rng.random() < 0.5 else b"ab\xc3\xa9"[:n]
        return head(rng.choice([2, 3]), claim) + body
    if kind == 3:  # simple values and floats
        return rng.choice([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\x20", b"\xf9\x3c\x00",
                           b"\xfa\x7f\xc0\x00\x00", b"\xfb" + bytes(8), b"\xff", b"\xfc", b"\xfe"])
    if kind == 4:  # a non-shortest head for a small value
        return head(rng.choice([0, 1, 2, 3]), rng.randrange(24), rng.choice([24, 25, 26, 27]))
    if kind == 5:  # an indefinite-length string, array or map, closed or not
        major = rng.choice([2, 3, 4, 5])
        inner = b"".join(cbor_item(rng, depth + 1, budget // 4) for _ in range(rng.randrange(3)))
        return head(major, 0, 31) + inner + (b"\xff" if rng.random() < 0.7 else b"")
    if kind == 6:  # reserved additional info
        return bytes([rng.randrange(8) << 5 | rng.choice([28, 29, 30])])
    if kind == 7:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 6)))
    if kind in (8, 9):  # arrays, sometimes claiming more items than there are
        n = rng.randrange(5)
        claim = n if rng.random() < 0.85 else rng.choice([n + 1, 1 << 20, _MAX_ARG])
        return head(4, claim) + b"".join(cbor_item(rng, depth + 1, budget // (n + 1)) for _ in range(n))
    if kind == 10:  # maps, keys of every type (composite keys included)
        n = rng.randrange(4)
        return head(5, n) + b"".join(cbor_item(rng, depth + 1, budget // (2 * n + 1)) for _ in range(2 * n))
    if kind == 11:  # tags: shared values, bignums, self-describe, anything
        tag = rng.choice([28, 29, 2, 3, 24, 55799, 0, 1, 16, 96, rng.randrange(1 << 16), _MAX_ARG])
        return head(6, tag) + cbor_item(rng, depth + 1, budget - 4)
    if kind == 12:  # deep nesting, past any sane limit
        n = rng.choice([17, 20, 64, 200])
        opener = rng.choice([b"\x81", b"\x9f", b"\xa1\x00", b"\xd8\x1c", b"\xc2"])
        return opener * n + b"\x00"
    if kind == 13:
        return shared_value_dag(rng.randrange(8, 40))
    if kind == 14:  # a composite map key made of a shared-value chain
        return b"\xa1" + shared_value_dag(rng.randrange(8, 40)) + b"\x00"
    return cbor.dumps(rng.choice([[1, 1, 0, 2, 1, 3, 200, b"abcd"], {1: [2, {3: b""}]}, "\u00e9t\u00e9", -1]))


def _mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randrange(1, 5)):
        op = rng.randrange(4)
        pos = rng.randrange(len(out)) if out else 0
        if op == 0 and out:
            out[pos] ^= 1 << rng.randrange(8)
        elif op == 1 and out:
            out[pos] = rng.choice([0x00, 0xFF, 0x9F, 0xBF, 0xD8, 0x1C, 0x1D, 0x5B, 0x1B, rng.randrange(256)])
        elif op == 2:
            out[pos:pos] = cbor_item(rng, 0, 40)
        elif out:
            del out[pos:pos + rng.randrange(1, 8)]
    return bytes(out)


def frame_like(rng: random.Random, valid: list[bytes]) -> bytes:
    """Bytes for the gateway's frame path: mostly the exact size of a profile (so they get
    past the size check), built from hostile CBOR, from valid frames with a few bytes
    changed, or with a valid envelope around nonsense."""
    kind = rng.randrange(6)
    size = rng.choice([spec.COMPACT.size, spec.FULL.size, spec.ACK_SIZE, spec.MULTI_ACK_SIZE])
    if kind == 0:  # the two frames and their family
        n = rng.randrange(8, 64)
        body = rng.choice([b"\x83\x43\xa1\x01\x0a\xa1" + shared_value_dag(n) + b"\x00\x40",
                           b"\x83" + shared_value_dag(n) + b"\xa0\x40"])
        return body.ljust(size, b"\0")[:size]
    if kind == 1:
        return (b"\x83" + cbor_item(rng) + cbor_item(rng) + cbor_item(rng)).ljust(size, b"\0")[:size]
    if kind == 2:
        return _mutate(rng, rng.choice(valid))
    if kind == 3:  # a valid envelope prefix, then anything
        base = rng.choice(valid)
        cut = rng.randrange(8, 22)
        return (base[:cut] + cbor_item(rng)).ljust(len(base), b"\0")[:len(base)]
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.choice([size, rng.randrange(700)])))
    return cbor_item(rng)


def plaintext_like(rng: random.Random, size: int) -> bytes:
    """A plaintext for the authenticated path: one hostile item (or a near-valid outcome)
    at the head, then padding that is usually zero."""
    body = cbor_item(rng) if rng.random() < 0.7 else _mutate(rng, bytes(spec.encode_outcome(
        spec.FULL if size == spec.FULL.plaintext_len else spec.COMPACT, 1, 3, 1, 2, 200,
        bytes(16 if size == spec.FULL.plaintext_len else 4))))
    body = body[:size]
    pad = bytearray(size - len(body))
    if pad and rng.random() < 0.1:
        pad[rng.randrange(len(pad))] = 1
    return body + bytes(pad)


def stream_like(rng: random.Random, valid: list[bytes]) -> bytes:
    """A chunk of a serial byte stream: records of frames, damaged records, long runs
    without a delimiter, and noise."""
    parts = []
    for _ in range(rng.randrange(1, 5)):
        kind = rng.randrange(4)
        if kind == 0:
            parts.append(stream.encode(rng.choice(valid)))
        elif kind == 1:
            parts.append(_mutate(rng, stream.encode(rng.choice(valid))))
        elif kind == 2:
            parts.append(bytes(rng.randrange(1, 256) for _ in range(rng.choice([10, 700, 2000]))))
        else:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
    return b"".join(parts)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def mqtt_like(rng: random.Random, valid: list[bytes]) -> bytes:
    """Bytes a broker (or whoever sits on its port) could send a device: packets of every
    type and flag, remaining lengths that lie or run to 5 bytes, topics longer than their
    body, and valid PUBLISHes of frames with a few bytes changed."""
    parts = []
    for _ in range(rng.randrange(1, 5)):
        kind = rng.randrange(6)
        if kind == 0:
            parts.append(rng.choice(valid))
        elif kind == 1:
            parts.append(_mutate(rng, rng.choice(valid)))
        elif kind == 2:  # any type and flags, a body of the claimed length or not
            body = bytes(rng.randrange(256) for _ in range(rng.randrange(8)))
            claim = len(body) if rng.random() < 0.7 else rng.choice([0, 2, 300, 1 << 20, (1 << 28) - 1])
            parts.append(bytes([rng.randrange(256)]) + _varint(claim) + body)
        elif kind == 3:  # a remaining length of 5 bytes
            parts.append(b"\x30\xff\xff\xff\xff\x7f")
        elif kind == 4:  # a PUBLISH whose topic length runs past its body
            tlen = rng.choice([0, 5, 200, 65535])
            parts.append(b"\x32" + _varint(4) + tlen.to_bytes(2, "big") + b"ab")
        else:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(32))))
    return b"".join(parts)


def at_like(rng: random.Random, valid: list[bytes]) -> bytes:
    """A chunk of AT module output: +OK, +ERR, +RCV lines of frames (their data may hold
    CR, LF and commas), lines whose length field lies, long lines, missing tails, noise."""
    parts = []
    for _ in range(rng.randrange(1, 5)):
        kind = rng.randrange(7)
        payload = rng.choice(valid)
        if kind == 0:
            parts.append(rng.choice([b"+OK\r\n", b"+ERR=12\r\n", b"+READY\r\n", b"+BAND=868100000\r\n"]))
        elif kind == 1:
            parts.append(b"+RCV=%d,%d," % (rng.randrange(70000), len(payload)) + payload + b",-%d,%d\r\n"
                         % (rng.randrange(130), rng.randrange(-20, 15)))
        elif kind == 2:  # a length that lies
            claim = rng.choice([0, len(payload) - 1, len(payload) + 1, 255, 256, 999, 10 ** 6])
            parts.append(b"+RCV=1,%d," % claim + payload + b",-60,9\r\n")
        elif kind == 3:
            parts.append(_mutate(rng, b"+RCV=5,%d," % len(payload) + payload + b",-60,9\r\n"))
        elif kind == 4:
            parts.append(b"+" + bytes(rng.randrange(32, 127) for _ in range(rng.choice([10, 70, 300]))) + b"\r\n")
        elif kind == 5:
            parts.append(b"+RCV=" + b"9" * rng.choice([3, 6, 40]) + b"," * rng.randrange(4))
        else:
            parts.append(bytes(rng.randrange(256) for _ in range(rng.randrange(64))))
    return b"".join(parts)
