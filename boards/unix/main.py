# Unix-port board: the emulated device (`qis device emulate` starts it).
#   micropython boards/unix/main.py STATE_DIR FRAMES REPLAY_FILE OFFSET
# Flash is STATE_DIR (config.json with the key, counter slots, outbox); the sensor replays
# a recorded ECG (int16 samples at 360 Hz) from OFFSET, looping. Events go to stderr as
# JSON lines. The link is the config's "link":
#   uart  (default) stdin/stdout, which the host connects to a pty
#   mqtt  a socket to the clinic broker (TLS with the CA in STATE_DIR/ca.der)
#   lora  radio "sx127x": the emulated SX127x (simradio.py) on the medium's socket;
#         radio "at": a RYLR998-class module on stdin/stdout (the host's emulated modem)
# Each link gets the window and first timeout that fit it (the node measures the rest).
import gc
import json
import sys

from edge import device, store
from edge.ccm import CCM
from edge.compat import ticks_ms, time_s, zeros
from edge.ecg.app import EcgApp
from edge.ecg.conclude import QemModel, RuleModel
from edge.frame import profile
from edge.node import Node


def report(ev, **fields):
    fields["ev"] = ev
    sys.stderr.write(json.dumps(fields) + "\n")


def replay(f, buf, offset):
    """Yield int16 samples from the open file f, starting at offset, looping; buf (an
    array('h')) is reused. The caller opens f and makes buf before the large buffers: a
    generator runs only at its first next(), and what it allocated then would land in
    whatever hole the heap has left."""
    f.seek(2 * offset)
    while True:
        n = f.readinto(buf) // 2
        if n == 0:
            f.seek(0)
            continue
        for i in range(n):
            yield buf[i]


def main(argv):
    state, frames, replay_path, offset = argv[1], int(argv[2]), argv[3], int(argv[4])
    with open(state + "/config.json") as f:
        config = json.load(f)
    prof = profile(config["profile"])
    key, kid = bytes.fromhex(config["key"]), bytes.fromhex(config["kid"])
    retired = [(bytes.fromhex(r["kid"]), CCM(bytes.fromhex(r["key"]))) for r in config.get("retired", ())]
    model_file, model_id = config["model"], config["model_id"]
    config_ask_every = config.get("ask_every", 0)
    link_config = config.get("link") or {"kind": "uart"}
    config = None  # the key is not kept around in plain sight
    # The link's code and its small buffers first (importing a module later, between the
    # model's big buffers, may find no free block of its size in a small heap); then the
    # largest long-lived buffers, after a collection of what loading the modules left
    # behind: the heap is least fragmented then.
    link, tuning = make_link(link_config, state)
    gc.collect()
    samples = replay(open(replay_path, "rb"), zeros("h", 512), offset)
    model = RuleModel() if model_file == "rule" else QemModel(model_source(model_file), model_id)
    app = EcgApp(samples, model, prof)
    ccm, counter = CCM(key), store.Counter(state)
    node = Node(ccm, kid, counter, store.Outbox(state), prof, retired=retired, **tuning)
    asker = None
    if config_ask_every:  # only a device that asks loads the query code
        from edge.query import Asker

        asker = Asker(ccm, kid, counter, prof)
    code = device.run(node, link, app, frames, ticks_ms, time_s, report, asker, config_ask_every)
    if hasattr(link, "close"):
        link.close()
    return code

def model_source(path):
    """A model file in the ROMFS image (romboot.py mounts it at /rom) is used in place, as
    from flash: the runtime views its weights instead of copying them into the heap."""
    if path.startswith("/rom/"):
        with open(path, "rb") as f:
            return memoryview(f)
    return path


def make_link(cfg, state):
    """(link, Node keyword arguments) for the config's link."""
    kind = cfg["kind"]
    if kind == "uart":
        from edge.links.uart import UartLink

        # 8 KiB in flight: ~0.7 s of a 115200-baud line, so a noisy line rarely loses a whole window
        return UartLink(sys.stdin.buffer, sys.stdout.buffer), {"window_bytes": 8192}
    if kind == "mqtt":
        from edge.links.mqtt import MqttLink

        ca = None
        if cfg.get("tls"):
            with open(state + "/ca.der", "rb") as f:
                ca = f.read()
        link = MqttLink(cfg["host"], cfg["port"], cfg["device"], cfg.get("password"), ca, report=report)
        return link, {"window_bytes": 8192, "rto_ms": 2000}
    if kind == "lora":
        from edge.airtime import duty_divisor, time_on_air_us

        scale = cfg.get("time_scale", 1)
        link = _lora_link(cfg, scale)
        # A few compact frames in flight, so one multi-ACK can answer several. Timeouts in
        # uplink periods (the duty cycle's shortest time between two frames): the gateway
        # holds an ACK until 4 counters are pending or 3 periods have passed, so no timeout
        # is shorter than 4 periods (a retransmission costs a whole period of the budget);
        # losses under that are found by the multi-ACKs that leave a counter out (RACK).
        period_ms = time_on_air_us(51, cfg["sf"]) * duty_divisor(868100) // 1000 / scale
        return link, {"window_bytes": 8 * 51, "rto_ms": int(5 * period_ms), "min_rto_ms": int(4 * period_ms),
                      "max_rto_ms": int(60 * period_ms)}
    raise ValueError("unknown link %r in config.json" % kind)


def _lora_link(cfg, scale):
    """The LoRa link of the config's radio: an AT-command module on stdin/stdout, or the
    emulated SX127x on the medium's socket."""
    if cfg.get("radio", "sx127x") == "at":
        from edge.links.lora_at import AtLoraLink

        return AtLoraLink(sys.stdin.buffer, sys.stdout.buffer, sf=cfg["sf"], address=cfg.get("address", 1),
                          time_scale=scale)
    from edge.links.lora import LoraLink
    from simradio import SimModem

    modem = SimModem(cfg["medium"], cfg.get("address", 1), cfg.get("name", ""),
                     {"freq_khz": 869525, "sf": cfg["sf"], "bw": "125", "coding_rate": 5, "preamble_len": 8})
    return LoraLink(modem, time_scale=scale)


try:
    code = main(sys.argv)
except Exception as exc:  # stdout is the UART: a traceback must go to the log, not the line
    sys.print_exception(exc, sys.stderr)  # type: ignore[arg-type]  # the stubs want a MicroPython stream
    code = 3
sys.exit(code)
