# Power-loss-safe device state on a file system: the frame counter and the outbox.
#
# Rules
# - The counter is the COSE nonce: a value handed out is never handed out again, across
#   reboots and power loss. It is persisted AHEAD in blocks: before the first value of a
#   block is used, the block's end is written to flash. After a reboot counting resumes at
#   the last reservation, so up to one block of values is skipped, never reused.
# - A reservation is written to two slots (A/B) alternately, each with a sequence number
#   and a CRC; at boot the valid slot with the highest sequence wins. A write torn by power
#   loss corrupts at most the slot being written, and the other still holds the previous
#   reservation, which is >= every value handed out so far.
# - The outbox holds every sealed frame until the gateway acknowledges it: one file per
#   frame, written to a temporary name and renamed into place, so a frame file is either
#   complete or absent. A frame is removed only after its ACK has been verified.
import binascii
import os
import struct

from .errors import FlashError

from .compat import const


_SLOT_FMT = "<4sIQI"  # magic, sequence, reserved-until counter, crc32 of the first 16 bytes
_SLOT_SIZE = const(20)
_MAGIC = b"QCTR"
_MAX_COUNTER = 0xFFFFFFFF  # the partial IV is 4 bytes (not const: above the small-int range on 32-bit ports)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _write_file(path, data):
    """Write data to path atomically: a temporary file, flushed, then renamed over path."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if hasattr(os, "fsync"):  # CPython; MicroPython's VFS writes through on close
            os.fsync(f.fileno())
    os.rename(tmp, path)


def _read_file(path, into=None):
    """The file's bytes, read into `into` when it has the file's size, else into one new
    buffer of that size (read() would grow a buffer)."""
    with open(path, "rb") as f:
        n = f.seek(0, 2)
        data = into if into is not None and len(into) == n else bytearray(n)
        f.seek(0)
        f.readinto(data)
    return data


class Counter:
    """A monotonic counter that never repeats a value, persisted ahead in blocks."""

    def __init__(self, directory, block=64):
        if block < 1:
            raise FlashError("counter block must be >= 1, got %d" % block)
        self._paths = (directory + "/counter.a", directory + "/counter.b")
        self._block = block
        seq, reserved = self._load()
        self._seq = seq
        self._next = reserved  # first value this boot may hand out
        self._reserved = reserved  # values below this are covered by a flash reservation

    def _load(self):
        best = None
        for path in self._paths:
            if not _exists(path):
                continue
            raw = _read_file(path)
            if len(raw) != _SLOT_SIZE:
                continue  # torn write: the other slot holds an older, still valid reservation
            magic, seq, value, crc = struct.unpack(_SLOT_FMT, raw)
            if magic != _MAGIC or binascii.crc32(raw[:16]) & 0xFFFFFFFF != crc:
                continue
            if best is None or seq > best[0]:
                best = (seq, value)
        if best is None:
            if _exists(self._paths[0]) or _exists(self._paths[1]):
                # Both slots exist and neither is valid: resuming at 0 could reuse nonces.
                raise FlashError("counter state is corrupt in both slots; refusing to reuse nonces")
            return 0, 0
        return best

    def _reserve(self, until):
        self._seq += 1
        slot = bytearray(_SLOT_SIZE)
        struct.pack_into("<4sIQ", slot, 0, _MAGIC, self._seq, until)
        struct.pack_into("<I", slot, 16, binascii.crc32(slot[:16]) & 0xFFFFFFFF)
        _write_file(self._paths[self._seq & 1], slot)
        self._reserved = until

    def next(self):
        """The next counter value; reserves a new block on flash first when needed."""
        value = self._next
        if value > _MAX_COUNTER:
            raise FlashError("counter exhausted: this device key must be replaced")
        if value >= self._reserved:
            self._reserve(min(value + self._block, _MAX_COUNTER + 1))
        self._next = value + 1
        return value

    def peek(self):
        """The value next() would return (nothing is reserved)."""
        return self._next


class Outbox:
    """Sealed frames awaiting acknowledgement, one file each, keyed by counter."""

    def __init__(self, directory):
        self._dir = directory + "/outbox"
        if not _exists(self._dir):
            os.mkdir(self._dir)
        self._counters = []
        for name in os.listdir(self._dir):
            if name.endswith(".tmp"):
                os.remove(self._dir + "/" + name)  # a write torn by power loss: never acknowledged
            elif name.endswith(".f"):
                self._counters.append(int(name[:-2], 16))
        self._counters.sort()

    def _path(self, counter):
        return "%s/%08x.f" % (self._dir, counter)

    def put(self, counter, frame):
        _write_file(self._path(counter), frame)
        self._counters.append(counter)

    def get(self, counter, into=None):
        """The frame of counter (read into `into`, reused, when it has the frame's size)."""
        return _read_file(self._path(counter), into)

    def remove(self, counter):
        """Forget an acknowledged frame; False if it was not (or no longer) pending."""
        if counter not in self._counters:
            return False
        self._counters.remove(counter)
        os.remove(self._path(counter))
        return True

    def pending(self):
        """Counters of the unacknowledged frames, oldest first (the list is the outbox's own)."""
        return self._counters

    def __len__(self):
        return len(self._counters)
