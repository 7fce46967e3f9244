# UART link: whole frames in and out of a byte stream, framed as COBS+CRC stream records
# (edge/stream.py). On a board it wraps machine.UART; on the unix port (emulation) the
# process's stdin/stdout, which the host connects to a pty; on a CPython host (Raspberry
# Pi) a pyserial port.
#
# Rules: send() writes one record from a preallocated buffer; receive() returns the whole
# frames that arrived within the timeout (records that fail COBS or CRC are line noise and
# dropped: only the tag decides what a frame means).
from .. import stream
from .serialio import ByteReader


class UartLink:
    def __init__(self, rx, tx=None, max_send=512, max_receive=128, bufsize=256):
        """rx: a machine.UART, or a binary stream; tx defaults to rx. max_send: the largest
        frame sent (a full outcome); max_receive: the largest accepted (a full answer)."""
        self._reader = ByteReader(rx, bufsize)
        self._tx = tx if tx is not None else rx
        self._wire = bytearray(stream.max_wire_size(max_send))
        self._max_send = max_send
        self._decoder = stream.Decoder(max_receive)

    @property
    def closed(self):
        return self._reader.closed

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
        data = self._reader.read(timeout_ms)
        if not data:
            return []
        return [value for kind, value in self._decoder.feed(data) if kind == "frame"]
