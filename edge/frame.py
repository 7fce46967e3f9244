# Outcome, ACK, query and answer frames: fixed-size COSE_Encrypt0 messages
# (docs/PROTOCOL.md).
#
# Rules
# - A frame is an untagged COSE_Encrypt0 [h'a1010a', {4: kid, 6: piv}, ciphertext] with a
#   4-byte key id and a 4-byte partial IV (the device counter, big-endian). Every frame of
#   a profile has exactly the profile's size: the plaintext is one deterministic CBOR array
#   followed by zero bytes up to the profile's plaintext size, all inside the ciphertext.
# - Nonce = piv left-padded to 13 bytes XOR a base IV that names the direction (uplink
#   0x01..., downlink 0x02...), so a device key never seals two messages under one nonce:
#   uplink counters never repeat (store.Counter), and a downlink ACK for counter N always
#   has the same plaintext, so re-sending it re-sends identical bytes.
# - A query takes a counter like an outcome and is answered, not acknowledged: the answer
#   is the only downlink message under its counter, and the gateway stores it and re-sends
#   the same bytes for a repeated query, so a downlink nonce still seals one message.
# - The version is the first element of the plaintext; the type the second.
# - A multi-ACK (type 4, the LoRa downlink) names up to 33 counters in its partial IV:
#   the highest counter (4 bytes) and a bitmap of the 32 below it (4 bytes), under its own
#   base IV (0x03...). Its plaintext is constant, so a (key, nonce) pair always seals the
#   same message: the same set of counters, the same bytes; no state on the gateway.
from . import cbor, cose
from .errors import EncodeError, FrameError

from .compat import const


VERSION = const(1)
TYPE_OUTCOME = const(1)
TYPE_ACK = const(2)
TYPE_QUERY = const(3)
TYPE_MULTI_ACK = const(4)
TYPE_ANSWER = const(5)

# Answer status (docs/PROTOCOL.md, "Query and answer")
ANSWERED = const(0)  # from aggregates above the release thresholds
TOO_FEW = const(1)  # not enough similar cases (fewer than k outcomes or m sites)
UNKNOWN_SPEC = const(2)  # the gateway knows no fingerprint spec for the query's domain
PARTIAL = const(3)  # answered from what arrived in time; some owners did not answer
UNAVAILABLE = const(4)  # no owner of any of the query's addresses could be asked

KID_LEN = const(4)
PIV_LEN = const(4)
TAG_LEN = const(8)
UPLINK_IV = b"\x01" + bytes(12)
DOWNLINK_IV = b"\x02" + bytes(12)
MULTI_ACK_IV = b"\x03" + bytes(12)
MULTI_ACK_SPAN = const(33)  # counters one multi-ACK can name: the highest and the 32 below it
_MULTI_PIV_LEN = const(8)

# Bytes of a frame outside the ciphertext string: array header (1), protected header
# bstr (4), unprotected map {4: kid, 6: piv} (1 + 1+1+4 + 1+1+4 = 13).
_FIXED_OVERHEAD = const(18)


def _bstr_header_len(n):
    return 1 if n < 24 else 2 if n < 256 else 3


def plaintext_size(frame_size):
    """Plaintext bytes that make a sealed frame exactly frame_size bytes long."""
    for header in (1, 2, 3):
        ct = frame_size - _FIXED_OVERHEAD - header
        if ct >= TAG_LEN and _bstr_header_len(ct) == header:
            return ct - TAG_LEN
    raise FrameError("no plaintext size gives a %d-byte frame" % frame_size)


class Profile:
    """A frame size and what fits in it."""

    def __init__(self, name, size, fingerprint_tables, fingerprint_bits, topk_max, answer_size, answer_labels,
                 answer_models):
        self.name = name
        self.size = size  # outcome and query frames
        self.fingerprint_tables = fingerprint_tables  # SimHash: L tables of k bits
        self.fingerprint_bits = fingerprint_bits
        self.fingerprint_len = fingerprint_tables * fingerprint_bits // 8
        self.topk_max = topk_max  # 0: the profile carries no top-k list and no extensions
        self.plaintext_len = plaintext_size(size)
        self.answer_size = answer_size  # the answer frame (downlink)
        self.answer_plaintext_len = plaintext_size(answer_size)
        self.answer_labels = answer_labels  # leading labels an answer carries
        self.answer_models = answer_models  # per-model confirmation tallies (0: none)


# compact: one LoRaWAN EU868 DR0 payload (51 bytes) each way. full: serial and MQTT.
COMPACT = Profile("compact", 51, 4, 8, 0, 51, 2, 0)
FULL = Profile("full", 512, 8, 16, 5, 128, 4, 3)
PROFILES = {"compact": COMPACT, "full": FULL}
ACK_SIZE = const(32)
ACK_PLAINTEXT_LEN = plaintext_size(ACK_SIZE)


def profile(name):
    p = PROFILES.get(name)
    if p is None:
        raise FrameError("unknown profile %r (known: %s)" % (name, ", ".join(sorted(PROFILES))))
    return p


def _uint(name, value, limit):
    if not isinstance(value, int) or value < 0 or value > limit:
        raise EncodeError("%s must be an integer in 0..%d, got %r" % (name, limit, value))


def _pad(body, size, what, out=None):
    """body padded with zeros to size; into out (a bytearray of size) when given, which is
    then returned (reused by the caller's next call): no padded copy on the heap."""
    n = len(body)
    if n > size:
        raise EncodeError("%s needs %d plaintext bytes, its frame holds %d" % (what, n, size))
    if out is None:
        return body + bytes(size - n)
    if len(out) != size:
        raise EncodeError("%s plaintext buffer holds %d bytes, its frame %d" % (what, len(out), size))
    out[:n] = body
    for i in range(n, size):
        out[i] = 0
    return out


def encode_outcome(prof, time, model, domain, label, confidence, fingerprint, topk=(), ext=None, out=None):
    """The padded plaintext of an outcome frame of profile prof (into out, a reused
    bytearray of prof.plaintext_len, when given)."""
    _uint("time", time, 0xFFFFFFFF)
    _uint("model", model, 0xFFFF)
    _uint("domain", domain, 0xFFFF)
    _uint("label", label, 0xFFFF)
    _uint("confidence", confidence, 255)
    if len(fingerprint) != prof.fingerprint_len:
        raise EncodeError(
            "profile %s needs a %d-byte fingerprint, got %d" % (prof.name, prof.fingerprint_len, len(fingerprint))
        )
    fields = [VERSION, TYPE_OUTCOME, time, model, domain, label, confidence, bytes(fingerprint)]
    if prof.topk_max:
        if len(topk) > prof.topk_max:
            raise EncodeError("profile %s carries at most %d top-k scores" % (prof.name, prof.topk_max))
        pairs = []
        for cls, score in topk:
            _uint("top-k label", cls, 0xFFFF)
            _uint("top-k score", score, 255)
            pairs.append([cls, score])
        fields.append(pairs)
        fields.append(ext or {})
    elif topk or ext:
        raise EncodeError("profile %s carries no top-k scores or extensions" % prof.name)
    return _pad(cbor.dumps(fields), prof.plaintext_len, "outcome", out)


def piv_bytes(counter):
    if counter < 0 or counter > 0xFFFFFFFF:
        raise EncodeError("counter %d does not fit the 4-byte partial IV" % counter)
    return bytes(((counter >> 24) & 0xFF, (counter >> 16) & 0xFF, (counter >> 8) & 0xFF, counter & 0xFF))


def seal(ccm, kid, counter, plaintext, base_iv, out=None):
    """Seal a padded plaintext into a frame (uplink: base_iv=UPLINK_IV); with out (a
    writable buffer), into out, returning a view of it (reused by the caller's next call)."""
    if len(kid) != KID_LEN:
        raise EncodeError("key id must be %d bytes, got %d" % (KID_LEN, len(kid)))
    return cose.encrypt0(ccm, kid, piv_bytes(counter), plaintext, base_iv, out)


def ack_plaintext():
    return _pad(cbor.dumps([VERSION, TYPE_ACK]), ACK_PLAINTEXT_LEN, "ack")


def seal_ack(ccm, kid, counter):
    """The ACK for counter; always the same bytes for the same (key, counter)."""
    return seal(ccm, kid, counter, ack_plaintext(), DOWNLINK_IV)


def ack_kid(data):
    """The key id an ACK or a multi-ACK is addressed to (read by the fixed-shape parser,
    nothing verified)."""
    if len(data) != ACK_SIZE and len(data) != MULTI_ACK_SIZE:
        raise FrameError("ACK must be %d bytes (a multi-ACK %d), got %d" % (ACK_SIZE, MULTI_ACK_SIZE, len(data)))
    return cose.parse0(data)[1]


def open_ack(ccm, kid, data):
    """Verify an ACK frame addressed to kid and return the counter it acknowledges."""
    if len(data) != ACK_SIZE:
        raise FrameError("ACK must be %d bytes, got %d" % (ACK_SIZE, len(data)))
    got_kid, piv, plaintext = cose.decrypt0(ccm, data, DOWNLINK_IV)
    if bytes(got_kid) != bytes(kid):
        raise FrameError("ACK is for key id %s, not ours" % bytes(got_kid).hex())
    if len(piv) != PIV_LEN:
        raise FrameError("ACK partial IV must be %d bytes" % PIV_LEN)
    if bytes(plaintext) != ack_plaintext():
        if plaintext[0] & 0xE0 == 0x80 and plaintext[1] < 24 and plaintext[1] != VERSION:
            raise FrameError("unsupported ACK version %d" % plaintext[1])  # [version, ...]
        raise FrameError("malformed ACK plaintext")
    return (piv[0] << 24) | (piv[1] << 16) | (piv[2] << 8) | piv[3]


# ------------------------------------------------------------------- query and answer


def encode_query(prof, time, model, domain, fingerprint, probe=0):
    """The padded plaintext of a query: what did cases with this fingerprint conclude?
    probe 0 asks the exact buckets, 1 also their neighbours at Hamming distance 1."""
    _uint("time", time, 0xFFFFFFFF)
    _uint("model", model, 0xFFFF)
    _uint("domain", domain, 0xFFFF)
    _uint("probe", probe, 1)
    if len(fingerprint) != prof.fingerprint_len:
        raise EncodeError(
            "profile %s needs a %d-byte fingerprint, got %d" % (prof.name, prof.fingerprint_len, len(fingerprint))
        )
    return _pad(cbor.dumps([VERSION, TYPE_QUERY, time, model, domain, probe, bytes(fingerprint)]), prof.plaintext_len,
                "query")


def encode_answer(prof, status, outcomes, sites, labels, confirmed, models):
    """The padded plaintext of an answer (the gateway's side; docs/PROTOCOL.md).

    labels: [[label, share 0..255]] best first; confirmed: [confirmed outcomes, agreement
    0..255]; models: [[model, confirmed, correct share 0..255]]. What the profile cannot
    carry is cut: labels and models beyond its counts, and for a compact answer counts
    above 255 are sent as 255 ("255 or more") and labels dropped from the end until the
    answer fits its 23 bytes.
    """
    _uint("status", status, 255)
    labels = [[_bounded(lab, 0xFFFF), _bounded(share, 255)] for lab, share in labels[: prof.answer_labels]]
    models = [[_bounded(m, 0xFFFF), _bounded(n, 0xFFFF), _bounded(s, 255)] for m, n, s in models[: prof.answer_models]]
    cap = 255 if prof.answer_plaintext_len < 64 else 0xFFFFFFFF
    fields = [VERSION, TYPE_ANSWER, status, _bounded(outcomes, cap), _bounded(sites, cap), labels,
              [_bounded(confirmed[0], cap), _bounded(confirmed[1], 255)], models]
    body = cbor.dumps(fields)
    while len(body) > prof.answer_plaintext_len and labels:
        labels.pop()
        body = cbor.dumps(fields)
    return _pad(body, prof.answer_plaintext_len, "answer")


def _bounded(value, limit):
    if not isinstance(value, int) or value < 0:
        raise EncodeError("answer values must be non-negative integers, got %r" % (value,))
    return value if value < limit else limit


def open_answer(ccm, kid, data, prof):
    """Verify an answer frame addressed to kid: (counter of the query it answers, answer)
    where answer is [status, outcomes, sites, labels [[label, share]], confirmed
    [count, agreement], models [[model, confirmed, correct share]]] (shares 0..255)."""
    if len(data) != prof.answer_size:
        raise FrameError("a %s answer must be %d bytes, got %d" % (prof.name, prof.answer_size, len(data)))
    got_kid, piv, plaintext = cose.decrypt0(ccm, data, DOWNLINK_IV)
    if bytes(got_kid) != bytes(kid):
        raise FrameError("answer is for key id %s, not ours" % bytes(got_kid).hex())
    # Authenticated: now the strict decoder (no tags), and the rest must be zero padding.
    value, end = cbor.loads_prefix(plaintext, False)
    for i in range(end, len(plaintext)):
        if plaintext[i]:
            raise FrameError("answer padding is not all zero")
    if not isinstance(value, list) or len(value) != 8 or value[0] != VERSION or value[1] != TYPE_ANSWER:
        raise FrameError("not a version %d answer [version, 5, status, outcomes, sites, labels, confirmed, models]"
                         % VERSION)
    return (piv[0] << 24) | (piv[1] << 16) | (piv[2] << 8) | piv[3], value[2:]

# -- multi-ACK (type 4): one downlink acknowledges up to 33 counters of one device ------

MULTI_ACK_PLAINTEXT = b"\x82\x01\x04"  # [1, 4]
MULTI_ACK_SIZE = const(34)  # 22-byte header (8-byte partial IV) + 1 + 3 + 8-byte tag


def multi_ack_piv(counters):
    """The 8-byte partial IV naming counters: the highest, then a bitmap whose bit i (MSB
    first) says that highest - 1 - i is acknowledged. Every counter must be within 32 below
    the highest (EncodeError otherwise)."""
    if not counters:
        raise EncodeError("a multi-ACK names at least one counter")
    top = max(counters)
    bits = 0
    for c in counters:
        gap = top - c
        if gap > MULTI_ACK_SPAN - 1:
            raise EncodeError("counter %d is more than %d below %d" % (c, MULTI_ACK_SPAN - 1, top))
        if gap:
            bits |= 1 << (32 - gap)
    return piv_bytes(top) + piv_bytes(bits)


def multi_ack_counters(piv):
    """The counters an 8-byte multi-ACK partial IV names, highest first."""
    top = (piv[0] << 24) | (piv[1] << 16) | (piv[2] << 8) | piv[3]
    bits = (piv[4] << 24) | (piv[5] << 16) | (piv[6] << 8) | piv[7]
    out = [top]
    for gap in range(1, MULTI_ACK_SPAN):
        if bits & (1 << (32 - gap)):
            if gap > top:
                raise FrameError("multi-ACK names a counter below 0")
            out.append(top - gap)
    return out


def seal_multi_ack(ccm, kid, counters):
    """The multi-ACK for counters; always the same bytes for the same (key, set)."""
    if len(kid) != KID_LEN:
        raise EncodeError("key id must be %d bytes, got %d" % (KID_LEN, len(kid)))
    return cose.encrypt0(ccm, kid, multi_ack_piv(counters), MULTI_ACK_PLAINTEXT, MULTI_ACK_IV)


def open_multi_ack(ccm, kid, data):
    """Verify a multi-ACK addressed to kid; the counters it acknowledges, highest first.
    Fixed layout first (cose.parse0), then the tag, then a byte compare of the plaintext."""
    if len(data) != MULTI_ACK_SIZE:
        raise FrameError("multi-ACK must be %d bytes, got %d" % (MULTI_ACK_SIZE, len(data)))
    got_kid, piv, plaintext = cose.decrypt0(ccm, data, MULTI_ACK_IV)
    if bytes(got_kid) != bytes(kid):
        raise FrameError("multi-ACK is for key id %s, not ours" % bytes(got_kid).hex())
    if len(piv) != _MULTI_PIV_LEN:
        raise FrameError("multi-ACK partial IV must be %d bytes" % _MULTI_PIV_LEN)
    if bytes(plaintext) != MULTI_ACK_PLAINTEXT:
        raise FrameError("malformed multi-ACK plaintext")
    return multi_ack_counters(piv)
