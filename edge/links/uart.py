# UART link: whole frames in and out of a byte stream, framed as COBS+CRC stream records
# (edge/stream.py). On a board it wraps machine.UART; on the unix port (emulation) the
# process's stdin/stdout, which the host connects to a pty; on a CPython host (Raspberry
# Pi) a pyserial port.
#
# Rules: send() writes one record from a preallocated buffer; receive() returns the whole
# frames that arrived within the timeout (records that fail COBS or CRC are line noise and
# dropped: only the tag decides what a frame means).
import select

from .. import stream

_POLL_ERR = select.POLLHUP | select.POLLERR


class UartLink:
    def __init__(self, rx, tx=None, max_send=512, max_receive=64, bufsize=256):
        """rx: a machine.UART, or a binary stream; tx defaults to rx. max_send: the largest
        frame sent (a full outcome); max_receive: the largest accepted (an ACK)."""
        self._rx = rx
        self._tx = tx if tx is not None else rx
        self._buf = bytearray(bufsize)
        self._view = memoryview(self._buf)
        self._wire = bytearray(stream.max_wire_size(max_send))
        self._max_send = max_send
        self._decoder = stream.Decoder(max_receive)
        self._poll = select.poll()
        self._poll.register(rx, select.POLLIN)
        self._has_any = hasattr(rx, "any")  # machine.UART knows how many bytes wait
        self._has_in_waiting = hasattr(rx, "in_waiting")  # so does pyserial
        self.closed = False

    def send_delay_ms(self):
        """0: a UART takes a frame whenever asked (its write blocks while the line is busy)."""
        return 0

    def send(self, frame):
        n = stream.encode_into(frame, self._wire, self._max_send)
        self._tx.write(memoryview(self._wire)[:n])
        if hasattr(self._tx, "flush"):
            self._tx.flush()

    def receive(self, timeout_ms):
        """The frames that arrived within timeout_ms (a list, often empty)."""
        data = self._read(timeout_ms)
        if not data:
            return []
        return [value for kind, value in self._decoder.feed(data) if kind == "frame"]

    def _read(self, timeout_ms):
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
