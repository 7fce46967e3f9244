# ESP32 board: the ECG device on an analog front end, talking to a gateway over a UART.
#
# Flash (littlefs): /config.json (its key: written by `qis board deploy`, never printed),
# /model.qem (unless the firmware froze the model as the module model_qem), /state (the
# counter slots and the outbox), /lib (the edge package as .mpy files, unless frozen).
# The config is the unix board's (device, kid, key, retired, profile, model, model_id,
# ask_every) plus "pins", "link", "frames" and "watchdog_ms" (boards/esp32/README.md).
# Events go to the USB console (UART0) as JSON lines; the link has its own UART.
import gc
import json

import machine

from edge import device, store
from edge.ccm import CCM
from edge.compat import ticks_ms, time_s
from edge.ecg.app import EcgApp
from edge.ecg.conclude import QemModel, RuleModel
from edge.frame import profile
from edge.links.uart import UartLink
from edge.node import Node
from pins import pins
from sensor import AdcSampler

_FOREVER = 1 << 29  # "frames": 0 in the config: conclude until reset


def report(ev, **fields):
    fields["ev"] = ev
    print(json.dumps(fields))


class WatchedLink:
    """The UART link, feeding the watchdog whenever the loop waits on it."""

    def __init__(self, link, wdt):
        self._link = link
        self._wdt = wdt

    @property
    def closed(self):
        return self._link.closed

    def send(self, frame):
        self._link.send(frame)

    def send_delay_ms(self):
        return self._link.send_delay_ms()

    def receive(self, timeout_ms):
        self._wdt.feed()
        return self._link.receive(timeout_ms)


def model_source(name):
    """The model: bytes frozen into the firmware (model_qem.DATA stays in flash) or a file."""
    try:
        import model_qem  # type: ignore[import-not-found]  # only in firmware built from manifest.py

        return model_qem.DATA or name
    except ImportError:
        return name


def main():
    with open("/config.json") as f:
        config = json.load(f)
    link_cfg = config.get("link", {"kind": "uart"})
    if link_cfg.get("kind", "uart") != "uart":
        raise ValueError("link %r: this board's firmware has the uart link only" % link_cfg.get("kind"))
    wiring = pins(config)
    prof = profile(config["profile"])
    key, kid = bytes.fromhex(config["key"]), bytes.fromhex(config["kid"])
    retired = [(bytes.fromhex(r["kid"]), CCM(bytes.fromhex(r["key"]))) for r in config.get("retired", ())]
    model_file, model_id = config["model"], config["model_id"]
    ask_every = config.get("ask_every", 0)
    frames = config.get("frames", 0) or _FOREVER
    wdt = machine.WDT(timeout=config.get("watchdog_ms", 30000))
    config = None  # the key is not kept around in plain sight
    gc.collect()  # the largest long-lived buffers first, while the heap is least fragmented
    model = RuleModel() if model_file == "rule" else QemModel(model_source(model_file), model_id)
    sampler = AdcSampler(wiring["adc"], wiring["timer"])
    app = EcgApp(sampler.samples(wdt.feed), model, prof)
    ccm, counter = CCM(key), store.Counter("/state")
    node = Node(ccm, kid, counter, store.Outbox("/state"), prof, retired=retired)
    asker = None
    if ask_every:
        from edge.query import Asker

        asker = Asker(ccm, kid, counter, prof)
    uart = machine.UART(wiring["uart"], baudrate=link_cfg.get("baud", wiring["uart_baud"]), tx=wiring["uart_tx"],
                        rx=wiring["uart_rx"], rxbuf=1024)
    link = WatchedLink(UartLink(uart), wdt)
    try:
        return device.run(node, link, app, frames, ticks_ms, time_s, report, asker, ask_every)
    finally:
        sampler.stop()


try:
    main()
except Exception as exc:  # noqa: BLE001 - log and reset: the watchdog would reset anyway
    import sys

    sys.print_exception(exc)
    import time

    time.sleep(5)  # a window for `mpremote` to interrupt before the reset
    machine.reset()
