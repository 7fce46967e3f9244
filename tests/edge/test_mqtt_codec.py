from edgetest import load, raises

m = load("links.mqtt_codec")
errors = load("errors")


def test_connect_with_will_and_credentials_matches_the_3_1_1_layout():
    pkt = m.connect("dev-a", 30, False, (b"qis/v1/dev-a/state", b"offline", 1, True), "dev-a", "pw")
    assert pkt[0] == 0x10 and pkt[1] == len(pkt) - 2
    assert pkt[2:9] == b"\x00\x04MQTT\x04"
    assert pkt[9] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04  # user, password, will retain, will QoS 1, will
    assert pkt[10:12] == b"\x00\x1e"  # keep-alive 30 s
    assert pkt[12:19] == b"\x00\x05dev-a"
    assert pkt.endswith(b"\x00\x05dev-a\x00\x02pw")
    clean = m.connect("x", 0, True)
    assert clean[9] == 0x02 and clean[10:12] == b"\x00\x00"


def test_connect_refuses_what_3_1_1_does_not_allow():
    raises(errors.EncodeError, m.connect, "x", 70000)
    raises(errors.EncodeError, m.connect, "x", 30, False, None, None, "pw")
    raises(errors.EncodeError, m.connect, "x", 30, False, (b"t", b"m", 2, False))


def test_publish_into_a_reused_buffer_and_decode_it_back():
    topic = b"qis/v1/dev-a/down"
    buf = bytearray(m.publish_size(topic, 300))
    n = m.publish_into(buf, topic, bytes(range(256)) + bytes(44), 513)
    assert n == len(buf)
    assert buf[0] == 0x32 and buf[1:3] == b"\xc1\x02"  # QoS 1; remaining length 2+17+2+300 = 321, a 2-byte varint
    # what a broker forwards is the same packet; decode it byte by byte and all at once
    d1, d2 = m.Decoder(512), m.Decoder(512)
    events = []
    for b in bytes(buf[:n]):
        events += d1.feed(bytes([b]))
    assert events == d2.feed(bytes(buf[:n])) == [("publish", topic, bytes(range(256)) + bytes(44), 1, 513)]


def test_small_packets():
    assert m.subscribe(7, b"qis/v1/a/down") == b"\x82\x12\x00\x07\x00\x0dqis/v1/a/down\x01"
    assert m.puback(0x0102) == b"\x40\x02\x01\x02"
    d = m.Decoder()
    assert d.feed(b"\x20\x02\x01\x00\x90\x03\x00\x07\x80\xd0\x00\x40\x02\xff\xff") == [
        ("connack", 1, 0), ("suback", 7, b"\x80"), ("pingresp",), ("puback", 0xFFFF)]
    assert d.feed(b"\x30\x05\x00\x01tab") == [("publish", b"t", b"ab", 0, 0)]


def test_decoder_refuses_what_a_broker_may_not_send():
    bad = [
        b"\x10\x00",  # CONNECT: a client packet
        b"\x82\x00",  # SUBSCRIBE
        b"\x21\x02\x00\x00",  # CONNACK with flags
        b"\x20\x03\x00\x00\x00",  # CONNACK of 3 bytes
        b"\x20\x02\x02\x00",  # CONNACK with reserved flag bits
        b"\x36\x04\x00\x01t\x00",  # PUBLISH with QoS 3
        b"\x32\x05\x00\x01t\x00\x00",  # QoS 1 with packet id 0
        b"\x30\x03\x00\x09t",  # topic longer than the body
        b"\x90\x03\x00\x01\x05",  # SUBACK return code 5
        b"\xd0\x01\x00",  # PINGRESP with a body
        b"\x30\xff\xff\xff\xff\x01",  # remaining length of 5 bytes
    ]
    for data in bad:
        raises(errors.DecodeError, m.Decoder().feed, data)
    # a packet longer than max_packet is refused from its length, before its body arrives
    err = raises(errors.DecodeError, m.Decoder(64).feed, b"\x30\xc1\x00")
    assert "at most 64" in str(err)
