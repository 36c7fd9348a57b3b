"""MQTT over WebSocket (ws://HTTP_ADDR/mqtt) with paho-mqtt's websocket
transport, in both protocol versions, interoperating with TCP clients."""

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from test_paho import TIMEOUT, client, subscribe


def test_websocket_and_tcp_clients_talk_in_both_versions(tidewire):
    for version in (mqtt.MQTTv311, mqtt.MQTTv5):
        ws_sub = client(tidewire, version, websocket=True)
        subscribe(ws_sub, "ws/+/data", 1)
        tcp_pub = client(tidewire, version)
        info = tcp_pub.publish("ws/tcp/data", b"from tcp", qos=1)
        info.wait_for_publish(timeout=TIMEOUT)
        msg = ws_sub.received.get(timeout=TIMEOUT)
        assert (msg.topic, msg.payload, msg.qos) == ("ws/tcp/data", b"from tcp", 1)

        tcp_sub = client(tidewire, version)
        subscribe(tcp_sub, "ws/+/back", 2)
        ws_pub = client(tidewire, version, websocket=True)
        big = bytes(range(256)) * 400  # spans many WebSocket frames
        info = ws_pub.publish("ws/sock/back", big, qos=2)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published()
        msg = tcp_sub.received.get(timeout=TIMEOUT)
        assert (msg.topic, msg.payload, msg.qos) == ("ws/sock/back", big, 2)
        for c in (ws_sub, tcp_pub, tcp_sub, ws_pub):
            c.disconnect()
            c.loop_stop()


def test_mqtt5_properties_and_retain_over_websocket(tidewire):
    pub = client(tidewire, mqtt.MQTTv5, websocket=True)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("k", "v")]
    props.ContentType = "text/plain"
    pub.publish("ws/retained", b"kept", qos=1, retain=True, properties=props).wait_for_publish(
        timeout=TIMEOUT
    )
    sub = client(tidewire, mqtt.MQTTv5, websocket=True)
    subscribe(sub, "ws/retained", 1)
    msg = sub.received.get(timeout=TIMEOUT)
    assert (msg.payload, msg.retain) == (b"kept", True)
    assert msg.properties.UserProperty == [("k", "v")]
    assert msg.properties.ContentType == "text/plain"
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
