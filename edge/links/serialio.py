# Reading what a byte stream has ready, within a timeout, without blocking on more: the
# one reader of the stream links (uart.py's COBS records, lora_at.py's AT responses).
# It takes a machine.UART (which knows how many bytes wait: any()), a pyserial port
# (in_waiting) or a plain binary stream such as stdin (read byte by byte while poll says
# more is ready). Rules: read() returns a view of a reused buffer (valid until the next
# call) or None; `closed` turns True when the other side hung up.
import select

_POLL_ERR = select.POLLHUP | select.POLLERR


class ByteReader:
    def __init__(self, rx, bufsize=256):
        self._rx = rx
        self._buf = bytearray(bufsize)
        self._view = memoryview(self._buf)
        self._poll = select.poll()
        self._poll.register(rx, select.POLLIN)
        self._has_any = hasattr(rx, "any")  # machine.UART knows how many bytes wait
        self._has_in_waiting = hasattr(rx, "in_waiting")  # so does pyserial
        self.closed = False

    def read(self, timeout_ms):
        """Bytes that arrived within timeout_ms (a view of a reused buffer), or None."""
        events = self._poll.poll(timeout_ms)
        if not events:
            return None
        if events[0][1] & _POLL_ERR and not events[0][1] & select.POLLIN:
            self.closed = True
            return None
        if self._has_any:
            n = self._rx.readinto(self._buf, min(self._rx.any(), len(self._buf))) or 0
            return self._view[:n] if n else None
        if self._has_in_waiting:
            n = self._rx.readinto(self._view[: min(self._rx.in_waiting, len(self._buf))]) or 0
            self.closed = n == 0 and not self._rx.is_open
            return self._view[:n] if n else None
        # A plain stream blocks until its whole buffer is filled, so take what is
        # ready one byte at a time while poll says more is waiting.
        n = 0
        while n < len(self._buf):
            got = self._rx.readinto(self._view[n:], 1)
            if not got:
                self.closed = n == 0  # end of file: the other side hung up
                break
            n += 1
            if not self._poll.poll(0):
                break
        return self._view[:n] if n else None
