# A CPython device (a Raspberry Pi) on the MQTT link, with paho-mqtt: the same interface and
# the same topics as edge/links/mqtt.py, which is MicroPython's (send, receive, `closed`,
# send_delay_ms). A board's main builds it with the device id, its password and the
# clinic CA file, and hands it to edge.device.run like any other link.
#
# Rules (as edge/links/mqtt.py): a PUBACK only says the broker has a frame, so send()
# never waits for one; the session is persistent and the downlink subscription QoS 1, so
# ACKs published while the device was away arrive when it returns; paho reconnects with
# a back-off (1 s to 60 s) and send_delay_ms() holds frames back while it does.
import queue

import paho.mqtt.client as mqtt


class PahoMqttLink:
    def __init__(self, host, port, device, password=None, ca_file=None, prefix="qis/v1", keepalive_s=30):
        self.up = "%s/%s/up" % (prefix, device)
        self.down = "%s/%s/down" % (prefix, device)
        state = "%s/%s/state" % (prefix, device)
        self._frames = queue.Queue()
        self.closed = False
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=device, clean_session=False,
                        protocol=mqtt.MQTTv311)
        c.username_pw_set(device, password)
        if ca_file is not None:
            c.tls_set(ca_certs=str(ca_file))
        c.will_set(state, b"offline", qos=1, retain=True)
        c.reconnect_delay_set(1, 60)

        def on_connect(client, userdata, flags, reason, properties):
            if not reason.is_failure:
                client.subscribe(self.down, qos=1)
                client.publish(state, b"online", qos=1, retain=True)

        def on_message(client, userdata, message):
            if message.topic == self.down:
                self._frames.put(bytes(message.payload))

        c.on_connect = on_connect
        c.on_message = on_message
        c.connect_async(host, port, keepalive=keepalive_s)
        c.loop_start()
        self._client = c

    def send_delay_ms(self):
        return 0 if self._client.is_connected() else 100

    def send(self, frame):
        if self._client.is_connected():
            self._client.publish(self.up, bytes(frame), qos=1)

    def receive(self, timeout_ms):
        try:
            frames = [self._frames.get(timeout=timeout_ms / 1000)]
        except queue.Empty:
            return []
        while not self._frames.empty():
            frames.append(self._frames.get_nowait())
        return frames

    def close(self):
        self._client.disconnect()
        self._client.loop_stop()
