# The analog ECG front end: an ADC pin sampled at 360 Hz by a hardware timer.
#
# Rules: the timer callback only stores one reading into a preallocated ring (no
# allocation, so it may run as a hard interrupt); the device loop drains the ring through
# samples(), a generator that waits (idle) while the ring is empty. A ring that overflows
# (the loop was busy for longer than the ring holds, 512 samples = 1.4 s) drops the oldest
# samples and counts them in `dropped`, so a gap is visible instead of silent.
from array import array

import machine
import micropython

_RING = micropython.const(512)  # a power of two


class AdcSampler:
    def __init__(self, pin, timer, fs=360):
        self._adc = machine.ADC(machine.Pin(pin), atten=machine.ADC.ATTN_11DB)
        self._ring = array("h", bytes(2 * _RING))
        self._head = 0  # next slot the timer writes (counts up, & (_RING - 1))
        self._tail = 0  # next slot samples() reads
        self.dropped = 0
        self._timer = machine.Timer(timer)
        self._timer.init(freq=fs, mode=machine.Timer.PERIODIC, callback=self._tick)

    def _tick(self, _t):
        # 16-bit reading -> signed counts around mid-scale, like the replayed int16 ECG
        self._ring[self._head & (_RING - 1)] = (self._adc.read_u16() >> 1) - 16384
        self._head += 1
        if self._head - self._tail > _RING:
            self._tail += 1
            self.dropped += 1

    def samples(self, idle):
        """Yield samples as they arrive; idle() runs while none waits (feed the watchdog)."""
        while True:
            while self._tail == self._head:
                idle()
                machine.idle()
            v = self._ring[self._tail & (_RING - 1)]
            self._tail += 1
            yield v

    def stop(self):
        self._timer.deinit()
