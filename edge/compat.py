# The one place for CPython fallbacks of MicroPython-only modules. Stateless.
#
# Viper/native, the one fallback mechanism: every hot loop is written once.
# MicroPython's compiler recognises `@micropython.viper` and `@micropython.native` by their
# spelling at compile time (there is no runtime micropython.viper object), so a plain
# `viper(fn)` wrapper cannot work on a board. Write
#     from .compat import micropython, ptr8, ptr32
#     @micropython.viper
#     def f(buf: ptr8, n: int) -> int: ...
# On MicroPython `micropython` is the real module and the compiler handles the pointer
# annotations and casts; on CPython the decorators return the function unchanged and
# ptr8/ptr16/ptr32 are identities, so the same source runs as plain Python.
#
# Clocks: ticks_ms() wraps (every 2**30 ms, about 12.4 days, on MicroPython). Deadlines
# are ticks_add(now, ms) and compared with ticks_diff, never `now + ms` or `<`; CPython
# uses the same wrapping arithmetic, so a test near the wrap means the same on both.
import os
import sys
import time
from array import array

IS_MICROPYTHON = sys.implementation.name == "micropython"

if IS_MICROPYTHON:
    import cryptolib
    import micropython
    from micropython import const

    def aes_ecb(key):
        """AES in ECB mode; .encrypt(src, dst) encrypts whole blocks of src into dst."""
        return cryptolib.aes(key, 1)

    def ticks_ms():
        return time.ticks_ms()

    def sleep_ms(ms):
        time.sleep_ms(ms)

    def ticks_add(a, ms):
        """The ticks value ms milliseconds after a (ms may be negative)."""
        return time.ticks_add(a, ms)

    def ticks_diff(a, b):
        """a - b in milliseconds, correct across the wrap-around of ticks_ms()."""
        return time.ticks_diff(a, b)

    # Embedded ports count time.time() from 2000-01-01, the unix port from 1970.
    _EPOCH_OFFSET = 946684800 if time.gmtime(0)[0] == 2000 else 0

    def time_s():
        """Unix time in whole seconds."""
        return int(time.time()) + _EPOCH_OFFSET

    def zeros(typecode, n):
        """array(typecode) of n zeros, made in place: array(typecode, bytes(size)) needs a
        temporary of the same size beside it, which a small fragmented heap may not have."""
        a = array(typecode, range(n))  # sized once from range's length; values truncate
        for i in range(n):
            a[i] = 0
        return a

else:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    def const(x):
        return x

    class micropython:  # noqa: N801 - stands in for the MicroPython module
        @staticmethod
        def viper(fn):
            return fn

        @staticmethod
        def native(fn):
            return fn

    # CPython only (no such names on a board, see the top): identity decorators.
    viper = micropython.viper
    native = micropython.native

    class aes_ecb:  # noqa: N801 - a function on MicroPython
        """AES in ECB mode; .encrypt(src, dst) encrypts whole blocks of src into dst."""

        def __init__(self, key):
            self._enc = Cipher(algorithms.AES(bytes(key)), modes.ECB()).encryptor()

        def encrypt(self, src, dst):
            dst[: len(src)] = self._enc.update(src)

    TICKS_PERIOD = 1 << 30  # as MicroPython's ports: ticks wrap at 2**30
    _TICKS_HALF = TICKS_PERIOD >> 1

    def ticks_ms():
        return int(time.monotonic() * 1000) & (TICKS_PERIOD - 1)

    def sleep_ms(ms):
        time.sleep(ms / 1000)

    def ticks_add(a, ms):
        """The ticks value ms milliseconds after a (ms may be negative)."""
        return (a + ms) & (TICKS_PERIOD - 1)

    def ticks_diff(a, b):
        """a - b in milliseconds, correct across the wrap-around of ticks_ms()."""
        return ((a - b + _TICKS_HALF) & (TICKS_PERIOD - 1)) - _TICKS_HALF

    def time_s():
        """Unix time in whole seconds."""
        return int(time.time())

    def zeros(typecode, n):
        """array(typecode) of n zeros."""
        return array(typecode, bytes(n * array(typecode).itemsize))


def ptr8(buf):
    """Viper's pointer casts and annotations; only ever run on CPython (on MicroPython the
    viper compiler handles them inside @micropython.viper functions)."""
    return buf


ptr16 = ptr32 = ptr8


def urandom(n):
    return os.urandom(n)
