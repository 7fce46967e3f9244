# The unix board's LoRa radio: an emulated SX127x with the modem API of micropython-lib's
# `lora` driver (configure, send, start_recv, poll_recv, standby, get_time_on_air_us,
# RxPacket), on the emulated medium of tools/sim/lora_medium.py (a unix socket; its
# protocol is described there). edge/links/lora.py drives it exactly as it drives a real
# SX1262/SX1276, so what the tests run is the real adapter.
#
# Rules: send() blocks until the medium says the transmission is over (as the driver's
# send() returns at TX done) and raises OSError if the medium refused it (a duty-cycle
# violation, a payload too long for the SF); packets the medium delivers while the radio
# is receiving are returned by poll_recv(), one per call.
import select
import socket
import struct

from edge.airtime import time_on_air_us
from edge.compat import ticks_ms

_REFUSED = {1: "duty cycle: off time not over", 2: "payload too long for the spreading factor",
            3: "radio not configured"}


class RxPacket(bytearray):
    def __init__(self, payload, ticks_ms=None, snr=None, rssi=None, valid_crc=True):
        super().__init__(payload)
        self.ticks_ms = ticks_ms
        self.snr = snr
        self.rssi = rssi
        self.valid_crc = valid_crc


class SimModem:
    def __init__(self, medium_path, address=0, name="", lora_cfg=None):
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # The unix port takes a raw sockaddr_un: family, then the NUL-terminated path.
        self._sock.connect(struct.pack("H", socket.AF_UNIX) + medium_path.encode() + b"\x00")
        self._poll = select.poll()
        self._poll.register(self._sock, select.POLLIN)
        self._cfg = {"freq_khz": 0, "sf": 7, "bw": 125, "coding_rate": 5, "preamble_len": 8}  # freq set by configure
        self._address = address
        self._name = name
        self._buf = b""
        self._rx = []  # packets received, oldest first
        self._receiving = False
        if lora_cfg:
            self.configure(lora_cfg)

    def configure(self, lora_cfg):
        self._cfg.update(lora_cfg)
        c = self._cfg
        body = struct.pack(">IBHBHH", c["freq_khz"], c["sf"], int(c["bw"]), c["coding_rate"], c["preamble_len"],
                           self._address) + self._name.encode()
        self._sock.send(b"C" + struct.pack(">H", len(body)) + body)

    def get_time_on_air_us(self, payload_len):
        c = self._cfg
        return time_on_air_us(payload_len, c["sf"], int(c["bw"]), c["coding_rate"], c["preamble_len"])

    def send(self, packet, tx_at_ms=None):
        self._sock.send(b"T" + struct.pack(">H", len(packet)) + bytes(packet))
        while True:
            for kind, body in self._messages(-1):
                if kind == b"D":
                    if body[0]:
                        raise OSError("medium refused the transmission: " + _REFUSED.get(body[0], str(body[0])))
                    return ticks_ms()

    def start_recv(self, timeout_ms=None, continuous=False, rx_length=0xFF):
        self._receiving = True
        return False  # no interrupt: the caller polls

    def standby(self):
        self._receiving = False

    def poll_recv(self, rx_packet=None):
        if not self._rx:
            self._messages(0)
        if self._rx:
            return self._rx.pop(0)
        return self._receiving

    def wait(self, timeout_ms):
        """Block until the medium has something for the radio (the emulation's interrupt line)."""
        if not self._rx:
            self._messages(timeout_ms)

    def _messages(self, timeout_ms):
        """Read what the medium sent within timeout_ms (-1: until something arrives); the
        D messages are returned, received packets queued while receiving."""
        out = []
        if self._poll.poll(timeout_ms):
            data = self._sock.recv(4096)
            if not data:
                raise OSError("the LoRa medium closed the connection")
            self._buf += data
        while len(self._buf) >= 3:
            n = (self._buf[1] << 8) | self._buf[2]
            if len(self._buf) < 3 + n:
                break
            kind, body, self._buf = self._buf[:1], self._buf[3:3 + n], self._buf[3 + n:]
            if kind == b"R":
                if self._receiving:
                    addr, rssi, snr = struct.unpack(">Hhb", body[:5])
                    self._rx.append(RxPacket(body[5:], ticks_ms(), snr * 4, rssi))
            else:
                out.append((kind, body))
        return out
