"""The decoders of untrusted bytes on hostile input (frames, ACKs and multi-ACKs, stream
records, MQTT packets, AT module output), under CPython (hypothesis) and under the real
MicroPython unix port (the `qis fuzz` targets, with bounded counts).

The only documented failure is a QisError subclass; and whatever the edge CBOR decoder
accepts must re-encode to the very same bytes (it accepts one deterministic form only).
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qis.edge import cbor, stream
from qis.edge.ccm import CCM
from qis.edge.errors import QisError
from qis.edge.frame import open_ack
from qis.tools.fuzz import inputs
from qis.tools.fuzz.run import DEVICE, MP_TARGETS, fuzz, valid_frames

VALID = valid_frames()


@settings(max_examples=600, deadline=None)
@given(rng=st.randoms(use_true_random=False), tags=st.booleans())
def test_edge_cbor_decoder_on_cpython(rng, tags):
    data = inputs.cbor_item(rng)
    try:
        value = cbor.loads(data, tags)
    except QisError:
        return
    assert cbor.dumps(value) == data


@settings(max_examples=300, deadline=None)
@given(rngs=st.lists(st.randoms(use_true_random=False), min_size=1, max_size=8))
def test_device_stream_decoder_and_ack_check_on_cpython(rngs):
    decoder = stream.Decoder(64)
    ccm = CCM(DEVICE.key)
    for rng in rngs:
        for kind, value in decoder.feed(inputs.stream_like(rng, VALID)):
            assert kind in ("frame", "error")
            if kind == "frame":
                try:
                    open_ack(ccm, DEVICE.kid, value)
                except QisError:
                    pass


@pytest.mark.parametrize("target", MP_TARGETS)
def test_micropython_targets(target):
    report = fuzz(target, seconds=60, limit=20_000, seed=7)
    assert report["inputs"] >= 20_000
    assert report["unexpected"] == 0, report["examples"]
    # A guard against hangs, not a benchmark: the long runs' numbers are in docs/EVIDENCE.md.
    assert report["retimed_worst_us"] < 50_000


@settings(max_examples=300, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_device_mqtt_decoder_and_at_parser_on_cpython(rng):
    from qis.edge.links.lora_at import AtParser
    from qis.edge.links.mqtt_codec import Decoder

    try:
        for event in Decoder(1024).feed(inputs.mqtt_like(rng, [VALID[0]])):
            assert event[0] in ("connack", "publish", "puback", "suback", "pingresp")
    except QisError:
        pass
    for event in AtParser().feed(inputs.at_like(rng, VALID[:1])):
        assert event[0] in ("ok", "err", "ready", "value", "rcv", "error")
        if event[0] == "rcv":
            assert len(event[2]) <= 255


@pytest.mark.parametrize("target", ["frame", "plaintext", "cbor", "stream", "at"])
def test_host_targets_of_qis_fuzz(target):
    report = fuzz(target, seconds=60, limit=5_000, seed=7)
    assert report["inputs"] >= 5_000 and report["unexpected"] == 0, report["examples"]
