# The MicroPython side of `qis fuzz`: runs one decoder of untrusted bytes (CBOR, stream
# records, ACKs, multi-ACKs, MQTT packets, AT module output) over inputs read
# from stdin and prints one JSON summary line. Runs under the unix port with the edge
# package on MICROPYPATH:
#     micropython tools/fuzz/mp_target.py TARGET < records
# A record is 1 byte (0: a fuzz input, 1: a valid input timed as the baseline), a 4-byte
# little-endian length, and the bytes. Documented rejections are QisError subclasses;
# anything else (a MemoryError included) is reported as unexpected with its input.
import json
import struct
import sys
import time

from edge import cbor, stream
from edge.ccm import CCM
from edge.errors import QisError
from edge.frame import open_ack, open_multi_ack
from edge.links.lora_at import AtParser
from edge.links.mqtt_codec import Decoder as MqttDecoder

KEY = bytes(range(16))
KID = b"\xa1\xb2\xc3\xd4"


def run_cbor(data):
    try:
        value = cbor.loads(data)
    except QisError:
        return
    if cbor.dumps(value) != bytes(data):  # what decodes must be the one deterministic form
        raise ValueError("decoded a non-deterministic encoding")


_decoder = stream.Decoder(64)  # the device's own: it only receives 32-byte ACKs


def run_stream(data):
    _decoder.feed(data)


_ccm = CCM(KEY)


def run_ack(data):
    try:
        open_ack(_ccm, KID, data)
    except QisError:
        pass


def run_multiack(data):
    try:
        open_multi_ack(_ccm, KID, data)
    except QisError:
        pass


def run_mqtt(data):
    # A protocol error closes the connection: each input is a new connection's bytes.
    try:
        MqttDecoder(1024).feed(data)
    except QisError:
        pass


_at = AtParser()  # the device's own: one stream of module output, as on a board


def run_at(data):
    for event in _at.feed(data):
        if event[0] == "rcv" and len(event[2]) > 255:
            raise ValueError("+RCV payload longer than the parser's bound")


TARGETS = {"cbor": run_cbor, "stream": run_stream, "ack": run_ack, "multiack": run_multiack, "mqtt": run_mqtt,
           "at": run_at}


def main():
    fn = TARGETS[sys.argv[1]]
    src = sys.stdin.buffer
    counts = [0, 0]
    worst = [0, 0]
    slowest = []  # (us, input) of the 8 slowest fuzz inputs, re-timed at the end
    valid_us = []
    unexpected = []
    n_unexpected = 0
    while True:
        hdr = src.read(5)
        if not hdr or len(hdr) < 5:
            break
        kind = hdr[0]
        data = src.read(struct.unpack("<I", hdr[1:])[0])
        t0 = time.ticks_us()
        try:
            fn(data)
        except Exception as exc:  # the point of the run: report, never stop
            n_unexpected += 1
            if len(unexpected) < 5:
                unexpected.append([type(exc).__name__, str(exc)[:120], "".join("%02x" % b for b in data)])
        dt = time.ticks_diff(time.ticks_us(), t0)
        counts[kind] += 1
        if dt > worst[kind]:
            worst[kind] = dt
        if kind == 1:
            valid_us.append(dt)
        elif len(slowest) < 8 or dt > slowest[0][0]:
            slowest.append((dt, data))
            slowest.sort(key=lambda x: x[0])
            if len(slowest) > 8:
                slowest.pop(0)
    retimed = 0
    retimed_len = 0
    for _, data in slowest:  # fastest of 5: the input's own cost, not a collection's
        best = None
        for _ in range(5):
            t0 = time.ticks_us()
            try:
                fn(data)
            except Exception:
                pass
            dt = time.ticks_diff(time.ticks_us(), t0)
            best = dt if best is None or dt < best else best
        if best > retimed:
            retimed, retimed_len = best, len(data)
    valid_us.sort()
    median = valid_us[len(valid_us) // 2] if valid_us else 0
    print(json.dumps({"inputs": counts[0], "valid": counts[1], "worst_us": worst[0], "retimed_worst_us": retimed, "worst_input_bytes": retimed_len,
                      "valid_median_us": median,
                      "valid_worst_us": worst[1], "unexpected": n_unexpected, "examples": unexpected}))


main()
