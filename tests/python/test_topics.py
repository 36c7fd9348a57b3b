"""Fan-out topics against the real binary, through /api/v1/topics and MQTT,
delivering to real webhook receivers started by each test: a receiver that
fails half of its requests (500s and timeouts), a target that is down and
comes back, a broker killed with SIGKILL mid-backlog, dead letters with
their reasons, one topic fanned out to 100 subscriptions with different
filters, and the refusals of bad subscriptions.
"""

import http.server
import json
import os
import signal
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import Tidewire


class Receiver:
    """A webhook receiver on a free port. `fail(n)` decides, per request
    number n (from 0), whether to answer 500 ("500"), stall past the
    subscription's timeout ("stall") or take it (None)."""

    def __init__(self, fail=lambda n: None, port=0):
        self.fail = fail
        self.lock = threading.Lock()
        self.requests = 0
        self.taken = []  # (path, headers, body)
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    n = receiver.requests
                    receiver.requests += 1
                verdict = receiver.fail(n)
                if verdict == "stall":
                    time.sleep(1.5)
                    return self.reply(200)
                if verdict == "500":
                    return self.reply(500)
                with receiver.lock:
                    receiver.taken.append((self.path, dict(self.headers), body))
                self.reply(200)

            def reply(self, status):
                self.send_response(status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path="/hook"):
        return f"http://127.0.0.1:{self.port}{path}"

    def bodies(self, path=None):
        with self.lock:
            return [b for (p, _, b) in self.taken if path is None or p == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def api(server, method, path, body=None, query=None):
    url = f"http://127.0.0.1:{server.http_port}{path}"
    if query:
        url += "?" + urllib.parse.urlencode(query)
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            text = answer.read()
            return answer.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def publish(server, topic, body, **attributes):
    query = {f"attr.{k}": v for k, v in attributes.items()}
    status, answer = api(server, "POST", f"/api/v1/topics/{topic}/publish", body.encode(), query)
    assert status == 200, answer
    return answer["message_id"]


def wait_for(predicate, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def tmp():
    with tempfile.TemporaryDirectory() as d:
        yield d


def start(tmp, config=""):
    path = os.path.join(tmp, "tidewire.toml")
    with open(path, "w") as f:
        f.write(config)
    return Tidewire(os.path.join(tmp, "data"), path).start()


def make_topic(server, name, **fields):
    status, answer = api(server, "POST", "/api/v1/topics", {"name": name, **fields})
    assert status == 201, answer


def subscribe(server, topic, **fields):
    status, answer = api(server, "POST", f"/api/v1/topics/{topic}/subscriptions", fields)
    assert status == 201, answer
    return answer


def test_a_receiver_failing_half_the_time_gets_every_matching_message(tmp):
    # Every other request fails: 500s and stalls past the 1 s timeout.
    receiver = Receiver(fail=lambda n: ("500" if n % 4 == 1 else "stall") if n % 2 else None)
    server = start(tmp, '[[topics]]\nname = "alerts"\nfrom = ["alerts/#"]\n')
    try:
        subscribe(
            server, "alerts", name="hook", target=receiver.url(),
            filter={"severity": ["high"]}, timeout="1s", max_in_flight=8,
            delivery={"retries": 20, "min_delay": "50ms", "max_delay": "200ms"},
        )
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        client.connect("127.0.0.1", server.mqtt_port)
        client.loop_start()
        expected = set()
        for i in range(40):
            severity = "high" if i % 2 == 0 else "low"
            props = Properties(PacketTypes.PUBLISH)
            props.UserProperty = [("severity", severity)]
            body = json.dumps({"i": i, "via": "mqtt"})
            client.publish(f"alerts/dev{i}", body, qos=1, properties=props).wait_for_publish()
            if severity == "high":
                expected.add(body)
        client.disconnect()
        client.loop_stop()
        for i in range(40):
            severity = "high" if i % 2 == 0 else "low"
            body = json.dumps({"i": i, "via": "http"})
            publish(server, "alerts", body, severity=severity)
            if severity == "high":
                expected.add(body)
        wait_for(lambda: expected <= {b.decode() for b in receiver.bodies()}, "every matching message")
        got = {b.decode() for b in receiver.bodies()}
        assert got == expected, "only matching messages arrive"
        status, sub = api(server, "GET", "/api/v1/topics/alerts/subscriptions/hook")
        stats = sub["stats"]
        assert stats["failed"] > 0 and stats["retries"] > 0 and stats["lost"] == 0
        assert stats["dead_lettered"] == 0
    finally:
        server.stop()
        receiver.close()


def test_a_target_down_then_back_receives_everything_in_order_and_holds_up_nobody(tmp):
    port = free_port()
    server = start(tmp, '[[topics]]\nname = "t"\n')
    try:
        # Subscribing probes the webhook, so a receiver answers then goes.
        first = Receiver(port=port)
        subscribe(server, "t", name="s", target=f"http://127.0.0.1:{port}/hook", max_in_flight=1)
        first.close()
        # Another subscription of the same topic does not wait for it.
        other = Receiver()
        subscribe(server, "t", name="other", target=other.url())
        sent = [publish(server, "t", f"m{i}") for i in range(30)]
        wait_for(lambda: len(other.bodies()) >= 30, "the other subscription's deliveries", timeout=30)
        other.close()

        def stats():
            return api(server, "GET", "/api/v1/topics/t/subscriptions/s")[1]["stats"]

        # The lag is refreshed every second while the pump waits to retry.
        wait_for(lambda: stats()["pending"] == 30, "the lag to show the backlog", timeout=30)
        assert stats()["last_error"]
        back = Receiver(port=port)
        try:
            wait_for(lambda: len(back.bodies()) >= 30, "the backlog")
            assert [b.decode() for b in back.bodies()] == [f"m{i}" for i in range(30)]
            assert len(set(sent)) == 30
        finally:
            back.close()
    finally:
        server.stop()


def test_the_backlog_survives_sigkill(tmp):
    port = free_port()
    down = Receiver(port=port, fail=lambda n: "500")
    config = f"""
[[topics]]
name = "orders"
from = ["orders/#"]

[[topics.subscriptions]]
name = "hook"
target = "http://127.0.0.1:{port}/hook"
filter = {{ kind = ["paid"] }}
"""
    server = start(tmp, config)
    try:
        expected = set()
        for i in range(50):
            kind = "paid" if i % 5 else "cart"
            body = f"order-{i}"
            publish(server, "orders", body, kind=kind)
            if kind == "paid":
                expected.add(body)
        wait_for(lambda: down.requests > 0, "a first attempt")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    finally:
        down.close()
    up = Receiver(port=port)
    server = Tidewire(os.path.join(tmp, "data"), os.path.join(tmp, "tidewire.toml")).start()
    try:
        wait_for(lambda: expected <= {b.decode() for b in up.bodies()}, "the backlog after a restart")
        assert {b.decode() for b in up.bodies()} == expected
    finally:
        server.stop()
        up.close()


def test_exhausted_retries_go_to_the_dead_letter_queue_with_their_reason(tmp):
    receiver = Receiver(fail=lambda n: "500")
    server = start(tmp, '[[queues]]\nname = "dlq"\n\n[[topics]]\nname = "t"\n')
    try:
        subscribe(
            server, "t", name="fragile", target=receiver.url(),
            delivery={"retries": 2, "min_delay": "20ms", "max_delay": "50ms"},
            dead_letter="queue:dlq",
        )
        for i in range(3):
            publish(server, "t", f"doomed-{i}", severity="high")
        got = []

        def drained():
            status, answer = api(server, "POST", "/api/v1/queues/dlq/receive", {"max": 10})
            got.extend(answer["messages"])
            return len(got) >= 3

        wait_for(drained, "three dead letters", timeout=60)
        assert sorted(m["body"] for m in got) == ["doomed-0", "doomed-1", "doomed-2"]
        for message in got:
            attributes = message["attributes"]
            assert "500" in attributes["tidewire.failure"]["value"]
            assert attributes["tidewire.attempts"]["value"] == "3"
            assert attributes["tidewire.subscription"]["value"].endswith(":t:fragile")
            assert attributes["severity"]["value"] == "high"
        status, sub = api(server, "GET", "/api/v1/topics/t/subscriptions/fragile")
        assert sub["stats"]["dead_lettered"] == 3 and sub["stats"]["retries"] == 6
        assert receiver.requests == 9
    finally:
        server.stop()
        receiver.close()


def test_one_topic_to_a_hundred_subscriptions_with_different_filters(tmp):
    receiver = Receiver()
    server = start(tmp)
    try:
        make_topic(server, "fan")
        for i in range(100):
            subscribe(
                server, "fan", name=f"s{i}", target=receiver.url(f"/s/{i}"),
                filter_scope="body", filter={"kind": [f"k{i % 10}"], "n": [{"numeric": [">=", i // 10]}]},
            )
        for n in range(10):
            for k in range(10):
                api(server, "POST", "/api/v1/topics/fan/publish", json.dumps({"kind": f"k{k}", "n": n}).encode())
        # Subscription i gets kind k(i%10) with n >= i//10: 10 - i//10 messages.
        expected = {i: 10 - i // 10 for i in range(100)}
        wait_for(lambda: len(receiver.bodies()) >= sum(expected.values()), "every delivery")
        time.sleep(0.5)
        for i, count in expected.items():
            bodies = [json.loads(b) for b in receiver.bodies(f"/s/{i}")]
            assert len(bodies) == count, (i, bodies)
            assert all(b["kind"] == f"k{i % 10}" and b["n"] >= i // 10 for b in bodies)
        status, topic = api(server, "GET", "/api/v1/topics/fan")
        assert len(topic["subscriptions"]) == 100
    finally:
        server.stop()
        receiver.close()


def test_bad_subscriptions_are_refused_with_the_reason(tmp):
    receiver = Receiver()
    server = start(tmp, '[[topics]]\nname = "t"\nfrom = ["sensors/#"]\n')
    try:
        cases = [
            ({"name": "a", "target": receiver.url(), "filter": {"x": [{"prefix": 5}]}}, "filter"),
            ({"name": "b", "target": f"http://127.0.0.1:{free_port()}/gone"}, "unreachable"),
            ({"name": "c", "target": "queue:nope"}, "no queue named"),
            ({"name": "d", "target": "stream:nope"}, "no stream named"),
            ({"name": "e", "target": "mqtt:sensors/out"}, "loop"),
            ({"name": "f", "target": "ftp://x"}, "unknown target kind"),
            ({"name": "g", "target": "queue:q", "dead_letter": "mqtt:x"}, "dead_letter"),
        ]
        for body, says in cases:
            status, answer = api(server, "POST", "/api/v1/topics/t/subscriptions", body)
            assert status == 400, (body, answer)
            assert says in answer["error"], (body, answer)
        status, answer = api(server, "POST", "/api/v1/topics/missing/subscriptions",
                             {"name": "x", "target": receiver.url()})
        assert status == 404
        status, answer = api(server, "GET", "/api/v1/topics/t/subscriptions")
        assert answer["subscriptions"] == []
        status, answer = api(server, "POST", "/api/v1/topics/t/publish", b"x" * (300 * 1024))
        assert status == 413
    finally:
        server.stop()
        receiver.close()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_publishing_over_ws(tmp):
    from websockets.sync.client import connect

    receiver = Receiver()
    server = start(tmp, '[[topics]]\nname = "t"\n')
    try:
        subscribe(server, "t", name="s", target=receiver.url(), filter={"level": ["warn"]})
        with connect(f"ws://127.0.0.1:{server.http_port}/ws") as ws:
            ws.send(json.dumps({"op": "topic_publish", "id": 1, "topic": "t",
                                "message": {"disk": 93}, "attributes": {"level": "warn"}}))
            answer = json.loads(ws.recv(timeout=10))
            assert answer["type"] == "result" and answer["id"] == 1 and answer["message_id"]
            ws.send(json.dumps({"op": "topic_publish", "id": 2, "topic": "t",
                                "message": "quiet", "attributes": {"level": "info"}}))
            assert json.loads(ws.recv(timeout=10))["id"] == 2
            ws.send(json.dumps({"op": "topic_publish", "id": 3, "topic": "nope", "message": 1}))
            error = json.loads(ws.recv(timeout=10))
            assert error["type"] == "error" and "no topic named" in error["error"]
        wait_for(lambda: receiver.bodies(), "the delivery")
        time.sleep(0.5)
        assert [json.loads(b) for b in receiver.bodies()] == [{"disk": 93}]
    finally:
        server.stop()
        receiver.close()


def test_email_reaches_a_real_smtp_server_after_it_refused_once(tmp):
    from aiosmtpd.controller import Controller

    class Handler:
        def __init__(self):
            self.attempts = 0
            self.received = []

        async def handle_DATA(self, server, session, envelope):
            self.attempts += 1
            if self.attempts == 1:
                return "451 4.3.0 Try again later"
            self.received.append(envelope)
            return "250 OK"

    handler = Handler()
    smtp = Controller(handler, hostname="127.0.0.1", port=free_port())
    smtp.start()
    config = f"""
[smtp]
host = "127.0.0.1"
port = {smtp.port}
tls = "none"
from = "tidewire@example.com"

[[topics]]
name = "alarms"

[[topics.subscriptions]]
name = "oncall"
target = "mailto:oncall@example.com"
filter = {{ severity = ["critical"] }}
email_subject = "[{{attr.severity}}] {{topic}}: {{subject}}"
email_body = "Alarm: {{message}}"
"""
    server = start(tmp, config)
    try:
        publish_query = {"subject": "boiler", "attr.severity": "critical"}
        status, _ = api(server, "POST", "/api/v1/topics/alarms/publish", b"pressure 9 bar", publish_query)
        assert status == 200
        status, _ = api(server, "POST", "/api/v1/topics/alarms/publish", b"all fine",
                        {"attr.severity": "info"})
        assert status == 200
        wait_for(lambda: handler.received, "the email", timeout=60)
        time.sleep(1)
        assert handler.attempts == 2 and len(handler.received) == 1
        mail = handler.received[0]
        assert mail.rcpt_tos == ["oncall@example.com"]
        text = mail.content.decode()
        assert "Subject: [critical] alarms: boiler" in text
        assert "Alarm: pressure 9 bar" in text
        status, sub = api(server, "GET", "/api/v1/topics/alarms/subscriptions/oncall")
        assert sub["stats"]["delivered"] == 1 and sub["stats"]["failed"] == 1
        assert "451" in sub["stats"]["last_error"]
    finally:
        server.stop()
        smtp.stop()
