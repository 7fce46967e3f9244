# The ECG domain's similarity features, version 1 (fingerprint spec "ecg-beat" v1, domain
# 1): what every ECG device computes from the raw lead, whatever model it runs, so that
# devices with different models put similar beats at the same fingerprint addresses
# (docs/PROTOCOL.md, "Fingerprint specs"). The models conclude; this decides similarity.
#
# Rules: integers only (int16 ADC counts in, int8 features out, floor division), so every
# interpreter, 32-bit boards included, computes the same bits from the same samples; every
# intermediate stays below 2**30 for spans up to 4096 samples. Stateless; `out` is the
# caller's array('b', DIM), filled and returned.
from ..compat import const
from ..errors import ConfigError

VERSION = const(1)
DIM = const(16)  # 15 shape segments + the RR ratio
_SEGS = const(15)
_SHAPE_SCALE = const(16)  # a segment 8 mean absolute deviations from the mean saturates
_RR_SCALE = const(128)  # (rr - mean_rr) / mean_rr x 128: -0.3 (premature) is -38


def beat_features(samples, mask, start, span, rr, mean_rr, out):
    """Fill out with the features of the beat whose raw samples are samples[(start + i) &
    mask] for i < span (a ring as ecg.beats.BeatDetector keeps it; mask -1 for a plain
    array), with RR interval rr and mean RR mean_rr in samples (0: not known yet).

    out[0..14]: the beat's mean over 15 equal segments, minus the beat's mean, over its
    mean absolute deviation, x16; out[15]: (rr - mean_rr) / mean_rr x 128, 0 when unknown.
    All clamped to -127..127.
    """
    if span < _SEGS or span > 4096:
        raise ConfigError("a beat of %d samples is outside 15..4096" % span)
    if len(out) != DIM:
        raise ConfigError("features output must hold %d values, got %d" % (DIM, len(out)))
    if rr < 0 or mean_rr < 0:
        raise ConfigError("features need rr and mean_rr >= 0, got %d and %d" % (rr, mean_rr))
    total = 0
    for i in range(start, start + span):
        total += samples[i & mask]
    mean = total // span
    dev = 0
    for i in range(start, start + span):
        d = samples[i & mask] - mean
        dev += d if d >= 0 else -d
    mad = dev // span or 1
    for s in range(_SEGS):
        a = start + (s * span) // _SEGS
        b = start + ((s + 1) * span) // _SEGS
        seg = 0
        for i in range(a, b):
            seg += samples[i & mask]
        out[s] = _clamp8(((seg // (b - a) - mean) * _SHAPE_SCALE) // mad)
    out[_SEGS] = _clamp8(((rr - mean_rr) * _RR_SCALE) // mean_rr) if rr and mean_rr else 0
    return out


def _clamp8(v):
    return 127 if v > 127 else (-127 if v < -127 else v)
