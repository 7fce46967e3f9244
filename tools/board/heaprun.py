# MicroPython script: the whole device loop of a build (CNN, fingerprint, sealing,
# outbox, stream framing) with a link that acknowledges every frame itself, to measure
# the heap the loop needs. `qis board build` runs it with MICROPYPATH = the unix build.
#   micropython heaprun.py STATE_DIR MODEL_FILE_OR_rule MODEL_ID FRAMES REPLAY
# Prints one JSON line: resident (bytes live after setup) and high (most bytes live at any
# event of the loop: a collection at each event, so garbage is not counted).
import gc
import json
import sys

gc.collect()
_base = gc.mem_alloc()
from edge import device, frame, store, stream  # noqa: E402
from edge.ccm import CCM  # noqa: E402
from edge.compat import ticks_ms, time_s, zeros  # noqa: E402
from edge.ecg.app import EcgApp  # noqa: E402
from edge.ecg.conclude import QemModel, RuleModel  # noqa: E402
from edge.node import Node  # noqa: E402

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
    gc.collect()
    model = RuleModel() if model_file == "rule" else QemModel(model_file, model_id)
    app = EcgApp(replay(replay_path), model, prof)
    ccm = CCM(_KEY)
    node = Node(ccm, _KID, store.Counter(state), store.Outbox(state), prof)
    link = AckingLink(ccm)
    gc.collect()
    resident = gc.mem_alloc() - _base
    code = device.run(node, link, app, frames, ticks_ms, time_s, report)
    print(json.dumps({"resident": resident, "high": high[0] - _base, "acked": node.acked, "code": code}))


main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
