# Streaming R-peak detection, RR rhythm rule and beat windows for a 360 Hz ECG (sans-IO).
#
# State rules:
# - BeatDetector.feed() takes one ADC sample (int, clamped to int16) per call, in order,
#   and does a fixed amount of integer work per sample with no allocation: every buffer is
#   a preallocated ring (array 'h'/'i') indexed by the absolute sample number & mask.
# - The pipeline is Pan-Tompkins in integer arithmetic, re-dimensioned for the sample rate:
#   low-pass (two cascaded moving sums of fs/30 samples: zeros at 30, 60, 90 Hz at 360 Hz,
#   so US mains is cancelled), high-pass (sample delayed minus a ~160 ms moving average),
#   5-point derivative, squaring, 150 ms moving-window integration (MWI). Both filters are
#   linear phase, so the R peak is the band-passed maximum shifted back by a fixed delay.
# - The first 2 s only learn the signal and noise levels (no beat is reported). Then an MWI
#   peak above THR1 = NPK + (SPK - NPK)/4 is a QRS unless it falls in the 200 ms refractory
#   period, or within 360 ms of the last QRS with less than half its slope (a T wave).
#   A peak below THR1 updates the noise level and, above THR1/2, is kept for search back:
#   when no QRS came for 1.66 mean RR, the best kept peak is taken as the missed QRS.
# - A detected beat waits in a small FIFO until the samples of its window have arrived
#   (about one mean RR after the R peak), then feed() returns it and fills the caller's
#   window. A beat is therefore reported about one beat late; its R index is exact.

from ..compat import const, zeros
from ..errors import ConfigError


WINDOW = const(140)  # samples per beat window, as in ECG5000
_PRE = const(3)  # window samples before the R peak (ECG5000 beats put R at index ~3)
_DSHIFT = const(3)  # derivative scaling before squaring; keeps every sum below 2**30
_DCLAMP = const(23170)  # |derivative| clamp: 23170**2 < 2**29, so squares stay small ints
_SQSHIFT = const(7)
_QUEUE = const(8)  # pending beats (R, rr, mean_rr, window start, span)
_NRR = const(8)  # RR intervals in the running mean
# Premature when rr < 0.85 x the mean of the preceding RR intervals. Prematurity indices of
# 0.8-0.9 are the usual cut for ectopic beats (a PVC's coupling interval is typically
# 50-80 % of the sinus RR); 0.85 sits between sinus-arrhythmia jitter (+-10 %) and that.
_PREM_PERMILLE = const(850)
_CONF_SPAN = const(150)  # per-mille distance from the cut that gives full confidence 255


def _pow2_at_least(n):
    size = 1
    while size < n:
        size <<= 1
    return size


class BeatDetector:
    """Streaming QRS detector; feed() one sample at a time, get (r, rr, mean_rr) tuples.

    r is the absolute sample index of the R peak (first sample fed is 0), rr the samples
    since the previous beat (0 for the first beat), mean_rr the mean of up to 8 RR
    intervals before this one (0 while none is known). When a window array('f', 140) is
    given, it receives each reported beat's window: about one mean RR from just before the
    R peak, resampled to 140 points by linear interpolation and z-normalised (ddof 1) like
    ECG5000. The same array is overwritten by every beat.

    The reported beat's raw samples stay readable until more are fed: indices
    start .. start + span - 1 of the ring `samples` (array('h'), index & mask).
    """

    def __init__(self, fs=360, window=None):
        if not isinstance(fs, int) or fs < 100 or fs > 1000:
            raise ConfigError("BeatDetector fs must be an int sample rate in 100..1000 Hz, got %r" % (fs,))
        if window is not None and len(window) != WINDOW:
            raise ConfigError("beat window must hold %d samples, got %d" % (WINDOW, len(window)))
        self.fs = fs
        self.window = window
        self._m = max(2, fs // 30)  # low-pass moving-sum length
        self._hpn = ((fs * 4) // 25) | 1  # high-pass moving-average length (odd)
        self._w = (fs * 3) // 20  # MWI length, 150 ms
        self._delay = (self._m - 1) + (self._hpn - 1) // 2  # band-pass group delay
        self._refractory = fs // 5  # 200 ms
        self._twave = (fs * 36) // 100  # 360 ms
        self._near = fs // 12  # R search radius around the band-pass maximum, 83 ms
        self._learn = 2 * fs
        self._span_min = (fs * 2) // 5  # window span limits: 0.4 s .. 1.5 s
        self._span_max = (fs * 3) // 2
        self._rr_max = 2 * fs
        self._rawn = _pow2_at_least(4 * fs + self._span_max)
        self._x = zeros("h", self._rawn)
        self.samples = self._x  # the raw ring, read-only for callers (ecg.features)
        self.mask = self._rawn - 1
        self._s1 = zeros("i", _pow2_at_least(self._m + 1))
        self._lp = zeros("i", _pow2_at_least(self._hpn + 1))
        self._hp = zeros("i", _pow2_at_least(2 * self._w + 16))
        self._sq = zeros("i", _pow2_at_least(self._w + 1))
        self._rr = zeros("i", _NRR)
        self._queue = zeros("i", 5 * _QUEUE)
        self.reset()

    def reset(self):
        """Forget all signal history and levels; the next sample is index 0 again."""
        self.n = 0  # samples fed so far
        self.dropped = 0  # beats lost because the pending queue was full
        self._s1sum = self._lpsum = self._hpsum = self._mwi = 0
        self._prev_mwi = 0
        self._cand = 0  # running MWI maximum since the last peak (0: waiting for a rise)
        self._cand_i = 0
        self._spk = self._npk = 0
        self._learn_max = self._learn_sum = 0
        self._last_r = -1
        self._last_slope = 0
        self._sb = self._sb_r = self._sb_slope = 0  # best search-back candidate
        self._nrr = self._rr_i = 0
        self._q_head = self._q_len = 0
        self.start = self.span = 0  # raw span of the last reported beat

    def _prime(self, x):
        # Start every filter in the steady state of a constant input x, so the first
        # sample does not look like a huge step.
        m = self._m
        for i in range(len(self._x)):
            self._x[i] = x
        for i in range(len(self._s1)):
            self._s1[i] = m * x
        for i in range(len(self._lp)):
            self._lp[i] = m * m * x
        self._s1sum = m * x
        self._lpsum = m * m * x
        self._hpsum = self._hpn * m * m * x

    def feed(self, sample):
        """Process one ADC sample; return (r, rr, mean_rr) of a finished beat, or None."""
        if sample > 32767:
            sample = 32767
        elif sample < -32768:
            sample = -32768
        n = self.n
        if n == 0:
            self._prime(sample)
        xs = self._x
        xm = len(xs) - 1
        xs[n & xm] = sample
        # low-pass: two cascaded moving sums of m samples
        m = self._m
        self._s1sum += sample - xs[(n - m) & xm]
        s1 = self._s1
        s1m = len(s1) - 1
        s1[n & s1m] = self._s1sum
        self._lpsum += self._s1sum - s1[(n - m) & s1m]
        # high-pass: the sample at the centre of the average minus the moving average
        lp = self._lp
        lpm = len(lp) - 1
        hpn = self._hpn
        lp[n & lpm] = self._lpsum
        self._hpsum += self._lpsum - lp[(n - hpn) & lpm]
        h = lp[(n - (hpn >> 1)) & lpm] - self._hpsum // hpn
        hp = self._hp
        hpm = len(hp) - 1
        hp[n & hpm] = h
        # derivative, squaring, moving-window integration
        d = (2 * h + hp[(n - 1) & hpm] - hp[(n - 3) & hpm] - 2 * hp[(n - 4) & hpm]) >> _DSHIFT
        if d > _DCLAMP:
            d = _DCLAMP
        elif d < -_DCLAMP:
            d = -_DCLAMP
        sq = self._sq
        sqm = len(sq) - 1
        e = (d * d) >> _SQSHIFT
        self._mwi += e - sq[(n - self._w) & sqm]
        sq[n & sqm] = e
        mwi = self._mwi
        self.n = n + 1
        if n < self._learn:
            if n >= self._delay + self._w:  # past the filters' start-up
                if mwi > self._learn_max:
                    self._learn_max = mwi
                self._learn_sum += mwi >> 10
            if n == self._learn - 1:
                self._spk = self._learn_max // 3
                self._npk = ((self._learn_sum // (self._learn - self._delay - self._w)) << 10) >> 1
            self._prev_mwi = mwi
            return None
        self._peak(n, mwi)
        self._prev_mwi = mwi
        self._search_back(n)
        return self._pop_ready(n)

    def _peak(self, n, mwi):
        # Track the MWI maximum from a rise on; the peak is confirmed once the MWI has
        # fallen to half of it, or 150 ms have passed without a new maximum.
        if self._cand == 0:
            if mwi > self._prev_mwi:
                self._cand = mwi
                self._cand_i = n
            return
        if mwi > self._cand:
            self._cand = mwi
            self._cand_i = n
            return
        if 2 * mwi > self._cand and n - self._cand_i < self._w:
            return
        pk = self._cand
        self._cand = 0
        r, slope = self._locate(self._cand_i)
        thr1 = self._npk + ((self._spk - self._npk) >> 2)
        last = self._last_r
        if pk > thr1:
            if last >= 0 and r - last < self._refractory:
                return
            if last >= 0 and r - last < self._twave and 2 * slope < self._last_slope:
                self._npk += (pk - self._npk) >> 3  # a T wave
                return
            self._spk += (pk - self._spk) >> 3
            self._accept(r, slope)
            return
        self._npk += (pk - self._npk) >> 3
        if 2 * pk > thr1 and pk > self._sb and (last < 0 or r - last >= self._refractory):
            self._sb = pk
            self._sb_r = r
            self._sb_slope = slope

    def _locate(self, p):
        # The QRS: the largest |band-passed| sample under the MWI window ending at p, shifted
        # back by the band-pass delay; slope = its steepest step there (for the T-wave rule).
        hp = self._hp
        hpm = len(hp) - 1
        best = -1
        best_i = p
        slope = 0
        prev = hp[(p - self._w - 4) & hpm]
        for i in range(p - self._w - 3, p + 1):
            v = hp[i & hpm]
            a = v if v >= 0 else -v
            if a > best:
                best = a
                best_i = i
            s = v - prev
            if s < 0:
                s = -s
            if s > slope:
                slope = s
            prev = v
        # The R peak proper: the largest raw sample within 83 ms of the band-pass maximum
        # (the main deflection of a lead with a positive R wave, such as MLII). For a wide
        # PVC this is its apex, not one of its slopes.
        xs = self._x
        xm = len(xs) - 1
        c = best_i - self._delay
        r = c
        top = xs[c & xm]
        for i in range(c - self._near, c + self._near + 1):
            if xs[i & xm] > top:
                top = xs[i & xm]
                r = i
        return r, slope

    def _search_back(self, n):
        last = self._last_r
        if self._sb == 0 or last < 0 or self._nrr == 0:
            return
        if 100 * (n - last) * self._nrr <= 166 * self._rr_sum():
            return
        self._spk += (self._sb - self._spk) >> 2
        self._accept(self._sb_r, self._sb_slope)

    def _rr_sum(self):
        total = 0
        for i in range(self._nrr):
            total += self._rr[i]
        return total

    def _accept(self, r, slope):
        last = self._last_r
        rr = r - last if last >= 0 else 0
        mean_rr = self._rr_sum() // self._nrr if self._nrr else 0
        if rr:
            v = rr if rr < self._rr_max else self._rr_max
            self._rr[self._rr_i] = v
            self._rr_i = (self._rr_i + 1) % _NRR
            if self._nrr < _NRR:
                self._nrr += 1
        self._last_r = r
        self._last_slope = slope
        self._sb = 0
        span = mean_rr or rr or (self._fs_span())
        if span < self._span_min:
            span = self._span_min
        elif span > self._span_max:
            span = self._span_max
        if self._q_len == _QUEUE:  # drop the oldest pending beat
            self._q_head = (self._q_head + 1) % _QUEUE
            self._q_len -= 1
            self.dropped += 1
        q = self._queue
        k = 5 * ((self._q_head + self._q_len) % _QUEUE)
        q[k] = r
        q[k + 1] = rr
        q[k + 2] = mean_rr
        q[k + 3] = r - (span * _PRE) // WINDOW
        q[k + 4] = span
        self._q_len += 1

    def _fs_span(self):
        return (self.fs * 3) // 4  # 80 bpm, while no RR is known

    def _pop_ready(self, n):
        if self._q_len == 0:
            return None
        q = self._queue
        k = 5 * self._q_head
        if q[k + 3] + q[k + 4] > n + 1:
            return None
        self._q_head = (self._q_head + 1) % _QUEUE
        self._q_len -= 1
        self.start = q[k + 3]
        self.span = q[k + 4]
        if self.window is not None:
            self._cut(q[k + 3], q[k + 4], self.window)
        return (q[k], q[k + 1], q[k + 2])

    def _cut(self, start, span, out):
        # Linear interpolation of `span` raw samples from `start` onto WINDOW points, then
        # z-normalisation with the sample standard deviation (ddof 1), as in ECG5000.
        xs = self._x
        xm = len(xs) - 1
        last = WINDOW - 1
        total = 0.0
        for j in range(WINDOW):
            num = j * (span - 1)
            i = start + num // last
            a = xs[i & xm]
            frac = num % last
            v = a + (xs[(i + 1) & xm] - a) * frac / last if frac else float(a)
            out[j] = v
            total += v
        mean = total / WINDOW
        ss = 0.0
        for j in range(WINDOW):
            dv = out[j] - mean
            ss += dv * dv
        std = (ss / last) ** 0.5
        for j in range(WINDOW):
            out[j] = (out[j] - mean) / std if std > 1e-6 else 0.0


def classify_rr(rr, mean_rr):
    """(label, confidence 0..255) from the RR rule: 1 premature, 0 normal.

    This is the stand-in model until the int8 CNN classifies the beat windows. A beat is
    premature when rr < 0.85 x mean_rr; the confidence grows linearly with the distance
    from that cut and saturates 0.15 x mean_rr away from it. rr or mean_rr of 0 (not known
    yet, the first beats) gives (0, 0).
    """
    if rr < 0 or mean_rr < 0:
        raise ConfigError("classify_rr needs rr and mean_rr >= 0, got %r and %r" % (rr, mean_rr))
    if rr == 0 or mean_rr == 0:
        return 0, 0
    ratio = (rr * 1000) // mean_rr
    dist = ratio - _PREM_PERMILLE
    label = 1 if dist < 0 else 0
    if dist < 0:
        dist = -dist
    conf = (dist * 255) // _CONF_SPAN
    return label, conf if conf < 255 else 255

