# MicroPython script: the whole device loop of a build (CNN, fingerprint, sealing,
# outbox, stream framing) with a link that acknowledges every frame itself, to measure
# the heap the loop needs. `qis board build` runs it with MICROPYPATH = the unix build.
#   micropython heaprun.py STATE_DIR MODEL_FILE_OR_rule MODEL_ID FRAMES REPLAY [ROMFS_IMAGE]
# With a ROMFS image the modules are imported from it in place (mounted at /rom before
# anything is counted: the image stands in for flash and is not part of the heap counted).
# Prints one JSON line: resident (bytes live after setup), high (most bytes live at any
# event of the loop: a collection at each event, so garbage is not counted), and parts:
# the live bytes each part added, in the order it was set up (gc.mem_alloc() after
# gc.collect() before and after).
import gc
import json
import sys

if len(sys.argv) > 6:
    import os

    import vfs

    _image = bytearray(os.stat(sys.argv[6])[6])
    with open(sys.argv[6], "rb") as _f:
        _f.readinto(_image)
    vfs.mount(vfs.VfsRom(_image), "/rom")
    sys.path[:] = ["/rom"]

gc.collect()
_base = gc.mem_alloc()
parts = []  # [name, bytes] in setup order (a list: MicroPython dicts keep no order)
_mark = [_base]


def part(name):
    gc.collect()
    now = gc.mem_alloc()
    parts.append([name, now - _mark[0]])
    _mark[0] = now


from edge import device, frame, store, stream  # noqa: E402
from edge.ccm import CCM  # noqa: E402
from edge.compat import ticks_ms, time_s, zeros  # noqa: E402
from edge.node import Node  # noqa: E402

part("code: protocol core (cbor, ccm, cose, frame, stream, store, node, device)")
from edge.ecg.app import EcgApp  # noqa: E402
from edge.ecg.conclude import QemModel, RuleModel  # noqa: E402

part("code: ECG application (beats, features, fingerprint, registry)")

_KEY = bytes(range(16))
_KID = b"\xa1\xb2\xc3\xd4"
high = [0]


class AckingLink:
    """Acknowledges each frame it is sent, through the same COBS+CRC framing as the UART."""

    closed = False

    def __init__(self, ccm):
        self._ccm = ccm
        self._wire = bytearray(stream.max_wire_size(512))
        self._acks = []

    def send(self, sealed):
        stream.encode_into(sealed, self._wire, 512)
        self._acks.append(frame.seal_ack(self._ccm, _KID, int.from_bytes(sealed[14:18], "big")))

    def send_delay_ms(self):
        return 0

    def receive(self, timeout_ms):
        acks, self._acks = self._acks, []
        return acks


def report(ev, **fields):
    gc.collect()
    used = gc.mem_alloc()
    if used > high[0]:
        high[0] = used


def replay(path):
    buf = zeros("h", 512)
    with open(path, "rb") as f:
        while True:
            n = f.readinto(buf) // 2
            if n == 0:
                f.seek(0)
                continue
            for i in range(n):
                yield buf[i]


def main(state, model_file, model_id, frames, replay_path):
    prof = frame.profile("full")
    if model_file == "rule":
        model = RuleModel()
    else:
        from edge import model as _runtime  # noqa: F401

        part("code: int8 model runtime (model, kernels)")
        model = QemModel(model_file, model_id)
        part("data: the loaded model (weights, parameters, arena, scratch, tables)")
    app = EcgApp(replay(replay_path), model, prof)
    part("data: ECG application (beat detector rings, window, SimHash planes)")
    ccm = CCM(_KEY)
    node = Node(ccm, _KID, store.Counter(state), store.Outbox(state), prof)
    link = AckingLink(ccm)
    part("data: node, key schedule, outbox and link buffers")
    resident = _mark[0] - _base
    code = device.run(node, link, app, frames, ticks_ms, time_s, report)
    parts.append(["loop: most live at any event, above setup", high[0] - _mark[0]])
    print(json.dumps({"resident": resident, "high": high[0] - _base, "acked": node.acked, "code": code,
                      "parts": parts}))


main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
