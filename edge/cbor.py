# Deterministic CBOR (RFC 8949 section 4.2.1, core deterministic encoding) for a subset:
# integers in -2**64 .. 2**64-1, byte and text strings, arrays, maps with int/str/bytes keys,
# false/true/null and tags. No floats, no other simple values, no indefinite lengths.
# `dumps` writes only the deterministic form; `loads` accepts only the deterministic form and
# raises DecodeError (naming the problem and the byte offset) for anything else.
# Stateless: no module-level buffers, so both functions are safe to call from anywhere.
#
# The decoder is safe on hostile input: time and memory are linear in the input (every
# length is checked against the bytes left before anything is allocated, nesting is
# bounded by MAX_DEPTH, map keys are only ints and strings, so nothing composite is
# hashed), and with tags=False it refuses every tag, as the protocol's schemas do.
import struct

from .compat import const, micropython, ptr8
from .errors import DecodeError, EncodeError

MAX_DEPTH = const(16)  # arrays, maps and tags nested deeper than this are refused both ways

_MT_UINT = const(0)
_MT_NINT = const(1)
_MT_BYTES = const(2)
_MT_TEXT = const(3)
_MT_ARRAY = const(4)
_MT_MAP = const(5)
_MT_TAG = const(6)
_MT_SIMPLE = const(7)

_FALSE = const(0xF4)
_TRUE = const(0xF5)
_NULL = const(0xF6)

_U64_END = 2**64  # first integer that no longer fits an argument
_ARG_FORMATS = (">B", ">H", ">I", ">Q")  # arguments of additional info 24 .. 27
_NAMES = ("unsigned int", "negative int", "byte string", "text string", "array", "map", "tag")


class Tag:
    """A CBOR tag: number `tag` (0 .. 2**64-1) wrapping `value`."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = None  # mutable, like the list or dict it may wrap

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


@micropython.viper
def _utf8_error(buf, n: int) -> int:
    """Offset of the first invalid UTF-8 sequence (RFC 3629) in buf[0:n], or -1 if valid."""
    p = ptr8(buf)
    i = 0
    while i < n:
        c = int(p[i])
        if c < 0x80:
            i += 1
            continue
        if c < 0xC2 or c > 0xF4:  # stray continuation byte, overlong 2-byte lead, > U+10FFFF
            return i
        # More bytes in the sequence, and the allowed range of the first continuation byte
        # (which excludes overlong forms, UTF-16 surrogates and code points past U+10FFFF).
        lo = 0x80
        hi = 0xBF
        if c < 0xE0:
            k = 1
        elif c < 0xF0:
            k = 2
            if c == 0xE0:
                lo = 0xA0
            elif c == 0xED:
                hi = 0x9F
        else:
            k = 3
            if c == 0xF0:
                lo = 0x90
            elif c == 0xF4:
                hi = 0x8F
        if i + k >= n:
            return i
        c = int(p[i + 1])
        if c < lo or c > hi:
            return i
        j = 2
        while j <= k:
            c = int(p[i + j])
            if c < 0x80 or c > 0xBF:
                return i
            j += 1
        i += k + 1
    return -1


# ---------------------------------------------------------------------------- encoding


def dumps(obj):
    """The deterministic CBOR encoding of obj as bytes; EncodeError if obj is outside the subset."""
    out = bytearray()
    _encode(out, obj, 0)
    return bytes(out)


def _head(out, major, n):
    """Append the shortest head for major type `major` with argument n (0 <= n < 2**64)."""
    ib = major << 5
    if n < 24:
        out.append(ib | n)
    elif n < 0x100:
        out.append(ib | 24)
        out.append(n)
    else:
        if n < 0x10000:
            ai, fmt, room = 25, ">BH", b"\0\0\0"
        elif n < 0x100000000:
            ai, fmt, room = 26, ">BI", b"\0\0\0\0\0"
        else:
            ai, fmt, room = 27, ">BQ", b"\0\0\0\0\0\0\0\0\0"
        at = len(out)
        out.extend(room)  # grow by the head size (constant bytes, no allocation), then fill
        struct.pack_into(fmt, out, at, ib | ai, n)


def _text_bytes(s):
    try:
        b = s.encode("utf-8")
    except UnicodeError:  # CPython: lone surrogates
        raise EncodeError("cbor: text string is not valid Unicode: %r" % s[:40])
    # MicroPython can hold surrogates or code points past U+10FFFF in a str: refuse them too.
    if len(b) != len(s) and _utf8_error(b, len(b)) >= 0:
        raise EncodeError("cbor: text string is not valid UTF-8: %r" % s[:40])
    return b


def _key_bytes(key):
    """Deterministic encoding of a map key; keys are int, str or bytes only."""
    if key is True or key is False or not isinstance(key, (int, str, bytes)):
        raise EncodeError("cbor: unsupported map key type %s: %r" % (type(key).__name__, key))
    kb = bytearray()
    _encode(kb, key, 0)
    return bytes(kb)


def _encode(out, v, depth):
    if v is False:
        out.append(_FALSE)
    elif v is True:
        out.append(_TRUE)
    elif v is None:
        out.append(_NULL)
    elif isinstance(v, int):
        if 0 <= v < _U64_END:
            _head(out, _MT_UINT, v)
        elif -_U64_END <= v < 0:
            _head(out, _MT_NINT, -1 - v)
        else:
            raise EncodeError("cbor: integer out of range -2**64 .. 2**64-1: %d" % v)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        _head(out, _MT_BYTES, len(v))
        out.extend(v)
    elif isinstance(v, str):
        b = _text_bytes(v)
        _head(out, _MT_TEXT, len(b))
        out.extend(b)
    else:
        depth += 1
        if depth > MAX_DEPTH:
            raise EncodeError("cbor: nesting deeper than %d" % MAX_DEPTH)
        if isinstance(v, (list, tuple)):
            _head(out, _MT_ARRAY, len(v))
            for item in v:
                _encode(out, item, depth)
        elif isinstance(v, dict):
            # RFC 8949 4.2.1: keys sorted by the bytewise order of their encodings.
            items = sorted([(_key_bytes(k), x) for k, x in v.items()], key=lambda kv: kv[0])
            _head(out, _MT_MAP, len(items))
            prev = None
            for kb, x in items:
                if kb == prev:
                    raise EncodeError("cbor: duplicate map key %s" % kb)
                prev = kb
                out.extend(kb)
                _encode(out, x, depth)
        elif isinstance(v, Tag):
            n = v.tag
            if n is True or n is False or not isinstance(n, int) or not 0 <= n < _U64_END:
                raise EncodeError("cbor: tag number must be an int in 0 .. 2**64-1: %r" % (n,))
            _head(out, _MT_TAG, v.tag)
            _encode(out, v.value, depth)
        else:
            raise EncodeError("cbor: cannot encode type %s" % type(v).__name__)


# ---------------------------------------------------------------------------- decoding


def loads(data, tags=True):
    """The value encoded by data (bytes, bytearray or memoryview), which must be exactly one
    deterministically encoded CBOR item of the subset; DecodeError otherwise. With
    tags=False a tag anywhere is refused."""
    value, pos = loads_prefix(data, tags)
    if pos != len(data):
        raise DecodeError("cbor: %d trailing bytes at offset %d" % (len(data) - pos, pos))
    return value


def loads_prefix(data, tags=True):
    """(value, end): the one item at the start of data and the offset just past it; the
    bytes after it are not looked at (a padded plaintext)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        name = type(data).__name__
        raise DecodeError("cbor: expected bytes, bytearray or memoryview, got %s" % name)
    mv = memoryview(data)
    if getattr(mv, "itemsize", 1) != 1:
        raise DecodeError("cbor: expected a byte buffer, got items of %d bytes" % mv.itemsize)
    return _decode(mv, 0, 0, tags)


def _fail(what, pos):
    raise DecodeError("cbor: %s at offset %d" % (what, pos))


def _decode(mv, pos, depth, tags):
    """Decode the item at mv[pos]; return (value, offset just past it)."""
    end = len(mv)
    if pos >= end:
        _fail("truncated input: item expected", pos)
    ib = mv[pos]
    major = ib >> 5
    ai = ib & 31
    if major == _MT_SIMPLE:
        if ib == _FALSE:
            return False, pos + 1
        if ib == _TRUE:
            return True, pos + 1
        if ib == _NULL:
            return None, pos + 1
        if 25 <= ai <= 27:
            _fail("floats are not supported (initial byte 0x%02x)" % ib, pos)
        if ai == 31:
            _fail("indefinite length / break byte 0xff is not supported", pos)
        if 28 <= ai <= 30:
            _fail("reserved additional info %d" % ai, pos)
        _fail("unsupported simple value (initial byte 0x%02x)" % ib, pos)
    # Argument: a count, a length, an integer or a tag number, always in shortest form.
    if ai < 24:
        arg = ai
        nxt = pos + 1
    elif ai < 28:
        size = 1 << (ai - 24)
        nxt = pos + 1 + size
        if nxt > end:
            _fail("truncated input: %s head needs %d bytes" % (_NAMES[major], size + 1), pos)
        arg = struct.unpack_from(_ARG_FORMATS[ai - 24], mv, pos + 1)[0]
        if arg < (24, 0x100, 0x10000, 0x100000000)[ai - 24]:
            _fail("non-shortest %s head (additional info %d for %d)"
                  % (_NAMES[major], ai, arg), pos)
    elif ai < 31:
        _fail("reserved additional info %d" % ai, pos)
    elif _MT_BYTES <= major <= _MT_MAP:
        _fail("indefinite length %s is not supported" % _NAMES[major], pos)
    else:
        _fail("additional info 31 is not valid for a %s" % _NAMES[major], pos)

    if major == _MT_UINT:
        return arg, nxt
    if major == _MT_NINT:
        return -1 - arg, nxt
    if major <= _MT_TEXT:
        stop = nxt + arg
        if stop > end:
            _fail("truncated input: %s of %d bytes, %d left" % (_NAMES[major], arg, end - nxt), pos)
        if major == _MT_BYTES:
            return bytes(mv[nxt:stop]), stop
        raw = mv[nxt:stop]
        bad = _utf8_error(raw, arg)
        if bad >= 0:
            _fail("invalid UTF-8 in text string", nxt + bad)
        return str(raw, "utf-8"), stop

    depth += 1
    if depth > MAX_DEPTH:
        _fail("nesting deeper than %d" % MAX_DEPTH, pos)
    if major == _MT_TAG:
        if not tags:
            _fail("tags are not allowed here (tag %d)" % arg, pos)
        value, nxt = _decode(mv, nxt, depth, tags)
        return Tag(arg, value), nxt
    if arg > end - nxt:  # every item takes at least one byte: refuse before allocating
        _fail("truncated input: %s of %d items, %d bytes left"
              % (_NAMES[major], arg, end - nxt), pos)
    if major == _MT_ARRAY:
        items = []
        for _ in range(arg):
            value, nxt = _decode(mv, nxt, depth, tags)
            items.append(value)
        return items, nxt
    result = {}
    prev = None
    for _ in range(arg):
        kpos = nxt
        key, nxt = _decode(mv, nxt, depth, tags)
        if key is True or key is False or not isinstance(key, (int, str, bytes)):
            _fail("unsupported map key type %s" % type(key).__name__, kpos)
        kb = bytes(mv[kpos:nxt])
        if prev is not None and kb <= prev:
            _fail("duplicate map key" if kb == prev else "map keys out of order", kpos)
        prev = kb
        value, nxt = _decode(mv, nxt, depth, tags)
        result[key] = value
    return result, nxt

