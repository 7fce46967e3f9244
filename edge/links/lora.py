# LoRa link over the modem API of micropython-lib's `lora` drivers (SX1261/2, SX1276..9
# over machine.SPI; the unix board's emulated radio speaks the same API): each frame is
# one LoRa packet, as it is (the radio's CRC and the frame's tag do the rest).
#
# Rules
# - Uplinks go out on uplink_khz, under that sub-band's EU868 duty cycle (1 %: after T on
#   air, 99 T off): send_delay_ms() says how long until the next may go, so the device
#   loop hands over a frame only when it can be sent at once. Time on air is the driver's
#   get_time_on_air_us() (the Semtech formula).
# - Between uplinks the radio receives continuously on downlink_khz (the gateway's
#   downlinks, EU868 RX2 at 10 %), so ACKs and multi-ACKs are heard whenever the radio is
#   not transmitting. A packet that is not a frame for this device fails the node's checks.
# - A transmission the radio refuses (OSError) is counted and left to the node: the frame
#   stays in the outbox and is sent again.
# - time_scale > 1 only on an emulated medium that runs that many times faster than real
#   time: the duty cycle's off time shrinks with it.
from ..airtime import DutyCycle
from ..compat import sleep_ms, ticks_add, ticks_diff, ticks_ms

_POLL_MS = 5  # how often a modem without an interrupt line is polled


class LoraLink:
    def __init__(self, modem, uplink_khz=868100, downlink_khz=869525, time_scale=1):
        self._modem = modem
        self._up = uplink_khz
        self._down = downlink_khz
        self._duty = DutyCycle(uplink_khz, time_scale)
        self._wait = getattr(modem, "wait", None)  # the emulated radio can block until a packet
        self.closed = False
        self.sent = 0
        self.refused = 0
        self._listen()

    def _listen(self):
        self._modem.configure({"freq_khz": self._down})
        self._modem.start_recv(continuous=True)

    def send_delay_ms(self):
        return self._duty.ready_in_ms(ticks_ms())

    def send(self, frame):
        self._modem.standby()
        self._modem.configure({"freq_khz": self._up})
        try:
            end = self._modem.send(frame)
            self.sent += 1
        except OSError:
            end = ticks_ms()
            self.refused += 1
        self._duty.spend(end, self._modem.get_time_on_air_us(len(frame)))
        self._listen()

    def receive(self, timeout_ms):
        """The packets received within timeout_ms (a list of bytes)."""
        deadline = ticks_add(ticks_ms(), timeout_ms)
        frames = []
        while True:
            rx = self._modem.poll_recv()
            if rx is not True and rx is not False and rx is not None:
                frames.append(bytes(rx))
                continue
            left = ticks_diff(deadline, ticks_ms())
            if frames or left <= 0:
                return frames
            if self._wait is not None:
                self._wait(left)
            else:
                sleep_ms(left if left < _POLL_MS else _POLL_MS)
