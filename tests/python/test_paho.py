"""tidewire against paho-mqtt, an independent MQTT client, in both protocol
versions: QoS 2 round trips, MQTT 5 properties, retained messages, wills
and persistent sessions."""

import queue
import socket
import time

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 10


def client(server, version, client_id="", websocket=False, **kwargs):
    """A connected paho client, over TCP or, with `websocket`, over
    ws://HTTP_ADDR/mqtt."""
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=version,
        transport="websockets" if websocket else "tcp",
        **({} if version == mqtt.MQTTv5 else {"clean_session": kwargs.pop("clean_session", True)}),
    )
    if websocket:
        c.ws_set_options(path="/mqtt")
    c.received = queue.Queue()
    c.on_message = lambda _c, _u, msg: c.received.put(msg)
    connected = queue.Queue()
    c.on_connect = lambda _c, _u, flags, rc, props: connected.put((flags, rc))
    if "will" in kwargs:
        topic, payload = kwargs.pop("will")
        c.will_set(topic, payload, qos=1, properties=kwargs.pop("will_properties", None))
    port = server.http_port if websocket else server.mqtt_port
    c.connect("127.0.0.1", port, keepalive=30, **kwargs)
    c.loop_start()
    flags, rc = connected.get(timeout=TIMEOUT)
    assert not rc.is_failure, rc
    c.session_present = flags.session_present
    return c


def subscribe(c, topic, qos):
    done = queue.Queue()
    c.on_subscribe = lambda _c, _u, mid, codes, props: done.put(codes)
    c.subscribe(topic, qos)
    codes = done.get(timeout=TIMEOUT)
    assert not codes[0].is_failure, codes
    return codes


def test_qos2_round_trip_in_both_versions(tidewire):
    for version in (mqtt.MQTTv311, mqtt.MQTTv5):
        sub = client(tidewire, version)
        subscribe(sub, "paho/qos2/#", 2)
        pub = client(tidewire, version)
        info = pub.publish("paho/qos2/x", b"exactly once", qos=2)
        info.wait_for_publish(timeout=TIMEOUT)
        assert info.is_published()
        msg = sub.received.get(timeout=TIMEOUT)
        assert (msg.topic, msg.payload, msg.qos) == ("paho/qos2/x", b"exactly once", 2)
        time.sleep(0.2)
        assert sub.received.empty(), "delivered exactly once"
        for c in (sub, pub):
            c.disconnect()
            c.loop_stop()


def test_mqtt5_properties_round_trip(tidewire):
    sub = client(tidewire, mqtt.MQTTv5)
    subscribe(sub, "paho/props", 1)
    pub = client(tidewire, mqtt.MQTTv5)
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [("site", "north"), ("rack", "7")]
    props.ContentType = "text/plain"
    props.ResponseTopic = "paho/reply"
    props.CorrelationData = b"\x00\x01"
    pub.publish("paho/props", b"with properties", qos=1, properties=props).wait_for_publish(timeout=TIMEOUT)
    msg = sub.received.get(timeout=TIMEOUT)
    got = msg.properties
    assert got.UserProperty == [("site", "north"), ("rack", "7")]
    assert got.ContentType == "text/plain"
    assert got.ResponseTopic == "paho/reply"
    assert got.CorrelationData == b"\x00\x01"


def test_retained_message_reaches_a_late_subscriber(tidewire):
    pub = client(tidewire, mqtt.MQTTv311)
    pub.publish("paho/retained", b"last known", qos=1, retain=True).wait_for_publish(timeout=TIMEOUT)
    late = client(tidewire, mqtt.MQTTv5)
    subscribe(late, "paho/#", 1)
    msg = late.received.get(timeout=TIMEOUT)
    assert (msg.topic, msg.payload, msg.retain) == ("paho/retained", b"last known", True)


def test_will_is_sent_when_a_client_vanishes(tidewire):
    watcher = client(tidewire, mqtt.MQTTv5)
    subscribe(watcher, "paho/will", 1)
    doomed = client(tidewire, mqtt.MQTTv311, will=("paho/will", b"offline"))
    vanish(doomed)
    msg = watcher.received.get(timeout=TIMEOUT)
    assert (msg.topic, msg.payload) == ("paho/will", b"offline")


def vanish(c):
    """Drops a client's connection without a DISCONNECT."""
    c.loop_stop()
    c.socket().shutdown(socket.SHUT_RDWR)
    c.socket().close()


def test_will_delay_is_cancelled_by_a_resume_and_cut_short_by_a_clean_start(tidewire):
    watcher = client(tidewire, mqtt.MQTTv5)
    subscribe(watcher, "paho/will-delay/#", 1)
    connect = Properties(PacketTypes.CONNECT)
    connect.SessionExpiryInterval = 60

    def delayed(secs):
        props = Properties(PacketTypes.WILLMESSAGE)
        props.WillDelayInterval = secs
        return props

    # Back within the delay, resuming the session: no will.
    resumer = client(tidewire, mqtt.MQTTv5, client_id="paho-wd-resume", will=("paho/will-delay/resume", b"resume"),
                     will_properties=delayed(2), clean_start=False, properties=connect)
    vanish(resumer)
    back = client(tidewire, mqtt.MQTTv5, client_id="paho-wd-resume", clean_start=False, properties=connect)
    assert back.session_present
    # The delay passes, and then some: nothing arrives.
    try:
        msg = watcher.received.get(timeout=4)
        raise AssertionError(f"unexpected will {msg.topic}")
    except queue.Empty:
        pass

    # Back within the delay but with a clean start: the old session ends,
    # and its will is published then, not a minute later.
    restarter = client(tidewire, mqtt.MQTTv5, client_id="paho-wd-clean", will=("paho/will-delay/clean", b"clean"),
                       will_properties=delayed(60), clean_start=False, properties=connect)
    vanish(restarter)
    time.sleep(0.5)
    client(tidewire, mqtt.MQTTv5, client_id="paho-wd-clean", clean_start=True, properties=connect)
    msg = watcher.received.get(timeout=TIMEOUT)
    assert (msg.topic, msg.payload) == ("paho/will-delay/clean", b"clean")

    # Not back at all: the will follows its delay.
    leaver = client(tidewire, mqtt.MQTTv5, client_id="paho-wd-gone", will=("paho/will-delay/gone", b"gone"),
                    will_properties=delayed(1), clean_start=False, properties=connect)
    vanish(leaver)
    msg = watcher.received.get(timeout=TIMEOUT)
    assert (msg.topic, msg.payload) == ("paho/will-delay/gone", b"gone")


def test_persistent_session_resumes_with_queued_messages(tidewire):
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    resumable = client(tidewire, mqtt.MQTTv5, client_id="paho-resume", clean_start=True, properties=props)
    subscribe(resumable, "paho/queued", 1)
    resumable.disconnect()
    resumable.loop_stop()
    pub = client(tidewire, mqtt.MQTTv311)
    pub.publish("paho/queued", b"while you were away", qos=1).wait_for_publish(timeout=TIMEOUT)
    back = client(tidewire, mqtt.MQTTv5, client_id="paho-resume", clean_start=False, properties=props)
    assert back.session_present
    msg = back.received.get(timeout=TIMEOUT)
    assert msg.payload == b"while you were away"
