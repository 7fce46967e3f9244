# Unix-port board: the emulated device (`qis device emulate` starts it).
#   micropython boards/unix/main.py STATE_DIR FRAMES REPLAY_FILE OFFSET
# Flash is STATE_DIR (config.json with the key, counter slots, outbox); the UART is
# stdin/stdout, which the host connects to a pty; the sensor replays a recorded ECG
# (int16 samples at 360 Hz) from OFFSET, looping. Events go to stderr as JSON lines.
import gc
import json
import sys

from edge import device, store
from edge.ccm import CCM
from edge.compat import ticks_ms, time_s, zeros
from edge.ecg.app import EcgApp
from edge.ecg.conclude import QemModel, RuleModel
from edge.frame import profile
from edge.links.uart import UartLink
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
    config = None  # the key is not kept around in plain sight
    # The largest long-lived buffers first, after a collection of what compiling the
    # modules left behind: the heap is least fragmented then.
    gc.collect()
    samples = replay(open(replay_path, "rb"), zeros("h", 512), offset)
    model = RuleModel() if model_file == "rule" else QemModel(model_file, model_id)
    app = EcgApp(samples, model, prof)
    ccm, counter = CCM(key), store.Counter(state)
    node = Node(ccm, kid, counter, store.Outbox(state), prof, retired=retired)
    asker = None
    if config_ask_every:  # only a device that asks loads the query code
        from edge.query import Asker

        asker = Asker(ccm, kid, counter, prof)
    link = UartLink(sys.stdin.buffer, sys.stdout.buffer)
    return device.run(node, link, app, frames, ticks_ms, time_s, report, asker, config_ask_every)


try:
    code = main(sys.argv)
except Exception as exc:  # stdout is the UART: a traceback must go to the log, not the line
    sys.print_exception(exc, sys.stderr)  # type: ignore[arg-type]  # the stubs want a MicroPython stream
    code = 3
sys.exit(code)
