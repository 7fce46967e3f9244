# LoRa time on air and the EU868 duty cycle, sans-IO, in integer microseconds (the same
# numbers on MicroPython and CPython). Stateless apart from DutyCycle.
#
# Time on air: Semtech AN1200.13 ("LoRa Modem Designer's Guide"), section 4:
#   Tsym     = 2^SF / BW
#   Tpreamble = (n_preamble + 4.25) Tsym
#   n_payload = 8 + max(ceil((8 PL - 4 SF + 28 + 16 CRC - 20 IH) / (4 (SF - 2 DE))) (CR + 4), 0)
# with PL the payload bytes, CRC 1 if the payload CRC is on, IH 1 for an implicit header,
# DE 1 when low data rate optimisation is on (Tsym > 16 ms: SF11 and SF12 at 125 kHz), and
# CR 1..4 for coding rates 4/5..4/8 (`coding_rate` 5..8 in micropython-lib's lora driver).
#
# Duty cycle: ETSI EN 300 220 sub-bands of EU868 (the LoRaWAN RP002 EU868 plan): after a
# transmission of T on air a transmitter stays off that sub-band for T (1/duty - 1).
# Payload limits: LoRaWAN RP002 EU868, the largest MACPayload per data rate (59 bytes at
# SF12..SF10, 123 at SF9, 250 at SF8 and SF7): what the medium and the links accept.
from .compat import ticks_add, ticks_diff, urandom
from .errors import ConfigError

MAX_PAYLOAD = {12: 59, 11: 59, 10: 59, 9: 123, 8: 250, 7: 250}
# (low kHz, high kHz, duty as 1/N): ETSI EN 300 220-2 sub-bands used by LoRaWAN EU868
_SUB_BANDS = ((863000, 865000, 1000), (865000, 868000, 100), (868000, 868600, 100), (868700, 869200, 1000),
              (869400, 869650, 10), (869700, 870000, 100))
_BANDWIDTHS = (125, 250, 500)


def time_on_air_us(payload_len, sf, bw_khz=125, coding_rate=5, preamble=8, crc=True, implicit_header=False):
    """Microseconds a LoRa packet of payload_len bytes takes on air."""
    if sf < 6 or sf > 12:
        raise ConfigError("spreading factor must be 6..12, got %r" % (sf,))
    if bw_khz not in _BANDWIDTHS:
        raise ConfigError("bandwidth must be 125, 250 or 500 kHz, got %r" % (bw_khz,))
    if coding_rate < 5 or coding_rate > 8:
        raise ConfigError("coding rate must be 5..8 (4/5..4/8), got %r" % (coding_rate,))
    if payload_len < 0 or payload_len > 255:
        raise ConfigError("a LoRa packet carries 0..255 bytes, got %r" % (payload_len,))
    t_sym = (1 << sf) * 1000 // bw_khz  # exact for 125, 250 and 500 kHz
    de = 1 if t_sym > 16000 else 0
    num = 8 * payload_len - 4 * sf + 28 + (16 if crc else 0) - (20 if implicit_header else 0)
    den = 4 * (sf - 2 * de)
    blocks = -(-num // den) if num > 0 else 0
    symbols = 8 + blocks * coding_rate  # CR + 4, CR = coding_rate - 4
    return (4 * preamble + 17) * t_sym // 4 + symbols * t_sym


def max_payload(sf):
    """The largest payload the EU868 plan allows at spreading factor sf."""
    n = MAX_PAYLOAD.get(sf)
    if n is None:
        raise ConfigError("EU868 uses spreading factors 7..12, got %r" % (sf,))
    return n


def duty_divisor(freq_khz):
    """N of the sub-band's 1/N duty cycle (100: 1 %, 10: 10 %); ConfigError outside EU868."""
    for low, high, n in _SUB_BANDS:
        if low <= freq_khz < high:
            return n
    raise ConfigError("%d kHz is in no EU868 sub-band" % freq_khz)


def off_time_us(airtime_us, freq_khz):
    """How long a transmitter must stay off the sub-band after airtime_us on air."""
    return airtime_us * (duty_divisor(freq_khz) - 1)


class DutyCycle:
    """One transmitter's budget in one sub-band: ready_in_ms() says how long until it may
    transmit again. time_scale > 1 runs the clock faster (an emulated medium that runs
    time_scale times faster than real time); 1 on real radios. jitter adds a random 0..1/8
    of the off time, so devices that share a channel do not stay in lock-step (two that
    collided once would otherwise collide every time)."""

    def __init__(self, freq_khz, time_scale=1, jitter=True):
        self.divisor = duty_divisor(freq_khz)
        self.time_scale = time_scale
        self.jitter = jitter
        self._free_at = None  # ticks_ms when the next transmission may start

    def spend(self, end_ms, airtime_us):
        """A transmission of airtime_us ended at end_ms (ticks_ms)."""
        off_ms = -(-(airtime_us * (self.divisor - 1)) // int(1000 * self.time_scale))
        if self.jitter:
            off_ms += (off_ms * urandom(1)[0]) >> 11  # 0..255/2048 of it
        self._free_at = ticks_add(end_ms, off_ms)

    def ready_in_ms(self, now_ms):
        if self._free_at is None:
            return 0
        wait = ticks_diff(self._free_at, now_ms)
        return wait if wait > 0 else 0

