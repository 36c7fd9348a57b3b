"""TLS against the real binary with independent clients: paho-mqtt (TCP
and WebSocket), mosquitto_pub/mosquitto_sub from Debian, and Python's own
HTTPS client. The CA and certificates are made per run with openssl.
"""

import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
import pytest

from conftest import Tidewire


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(dir):
    """A CA; a server certificate for 127.0.0.1; a client certificate for
    CN=sensor-17 signed by the CA; and a self-signed one with the same CN."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
            "-subj", "/CN=tidewire test CA",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=dir)
    for name, cn, usage, alt in [
        ("server", "localhost", "serverAuth", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
        ("client", "sensor-17", "clientAuth", None),
    ]:
        openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                "-subj", f"/CN={cn}", cwd=dir)
        with open(os.path.join(dir, f"{name}.ext"), "w") as f:
            f.write("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n")
            f.write(f"extendedKeyUsage={usage}\n")
            if alt:
                f.write(alt + "\n")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                "-extfile", f"{name}.ext", cwd=dir)
    openssl("req", "-x509", *ec, "-keyout", "rogue.key", "-out", "rogue.pem", "-days", "2",
            "-subj", "/CN=sensor-17", cwd=dir)
    return {name: os.path.join(dir, name) for name in os.listdir(dir)}


def password_hash(password):
    out = subprocess.run(
        [os.environ.get("TIDEWIRE_BIN", "target/debug/tidewire"), "hash-password"],
        input=password, capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture
def pki():
    with tempfile.TemporaryDirectory() as tmp:
        yield make_pki(tmp)


def start(pki, tmp, require_client_cert=False):
    config = os.path.join(tmp, "tidewire.toml")
    with open(config, "w") as f:
        f.write(f"""
[tls]
cert = "{pki['server.pem']}"
key = "{pki['server.key']}"
client_ca = "{pki['ca.pem']}"
require_client_cert = {str(require_client_cert).lower()}
identity_as_username = true

[mqtt]
tls_listen = "127.0.0.1:0"

[http]
tls = true

[auth]
allow_anonymous = false

[[users]]
username = "alice"
password_hash = "{password_hash('wonderland')}"
sql = ["*"]

[[users]]
username = "sensor-17"
publish = ["devices/%u/#"]
subscribe = ["devices/%u/#"]
""")
    return Tidewire(os.path.join(tmp, "data"), config).start()


@pytest.fixture
def server(pki):
    with tempfile.TemporaryDirectory() as tmp:
        s = start(pki, tmp)
        try:
            yield s
        finally:
            s.stop()


def https_get(server, pki, path, auth=("alice", "wonderland")):
    context = ssl.create_default_context(cafile=pki["ca.pem"])
    request = urllib.request.Request(f"https://127.0.0.1:{server.http_port}{path}")
    if auth:
        import base64
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


def tls_client(pki, client_id, cert=None, transport="tcp"):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv311, transport=transport)
    if cert:
        c.tls_set(ca_certs=pki["ca.pem"], certfile=pki[f"{cert}.pem"], keyfile=pki[f"{cert}.key"])
    else:
        c.tls_set(ca_certs=pki["ca.pem"])
    return c


def connect(c, port, path=None):
    done = threading.Event()
    result = {}

    def on_connect(client, userdata, flags, reason, properties):
        result["reason"] = reason
        done.set()

    c.on_connect = on_connect
    if path:
        c.ws_set_options(path=path)
    c.connect("127.0.0.1", port)
    c.loop_start()
    assert done.wait(10), "no CONNACK"
    return result["reason"]


def test_paho_over_tls_with_a_password_and_over_wss(server, pki):
    for transport, port, path in [("tcp", server.mqtts_port, None),
                                  ("websockets", server.http_port, "/mqtt")]:
        c = tls_client(pki, f"alice-{transport}", transport=transport)
        c.username_pw_set("alice", "wonderland")
        assert connect(c, port, path) == 0
        got = threading.Event()
        c.on_message = lambda client, userdata, message: got.set()
        c.subscribe("lab/#", qos=1)
        time.sleep(0.3)
        c.publish("lab/" + transport, b"over tls", qos=1).wait_for_publish(10)
        assert got.wait(10), transport
        c.loop_stop()
        c.disconnect()


def test_a_client_certificate_names_the_user_whose_rules_apply(server, pki):
    c = tls_client(pki, "dev-1", cert="client")
    c.username_pw_set("alice", "ignored: the certificate names the user")
    assert connect(c, server.mqtts_port) == 0
    c.publish("devices/sensor-17/temp", b"21.5", qos=1).wait_for_publish(10)
    c.publish("devices/other/temp", b"denied", qos=1).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()
    records = https_get(server, pki, "/api/v1/streams/events/records")["records"]
    assert [r["topic"] for r in records] == ["devices/sensor-17/temp"]


def test_https_needs_credentials_and_serves_the_api(server, pki):
    assert "events" in [s["name"] for s in https_get(server, pki, "/api/v1/streams")["streams"]]
    with pytest.raises(urllib.error.HTTPError) as refused:
        https_get(server, pki, "/api/v1/streams", auth=None)
    assert refused.value.code == 401


def test_plain_text_on_the_tls_ports_is_closed_and_the_server_lives(server, pki):
    for port in [server.mqtts_port, server.http_port]:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00" if port == server.mqtts_port
                      else b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(10)
            try:
                data = s.recv(1024)
            except ConnectionResetError:
                data = b""
            # A TLS alert at most, never an MQTT or HTTP answer.
            assert not data.startswith(b"\x20") and not data.startswith(b"HTTP/")
    assert https_get(server, pki, "/healthz", auth=None)["status"] == "ok"


def test_mosquitto_clients_over_tls(server, pki):
    common = ["-h", "127.0.0.1", "-p", str(server.mqtts_port), "--cafile", pki["ca.pem"],
              "-u", "alice", "-P", "wonderland", "-q", "1"]
    sub = subprocess.Popen(["mosquitto_sub", *common, "-t", "plant/#", "-C", "1", "-W", "20"],
                           stdout=subprocess.PIPE, text=True)
    time.sleep(1)
    subprocess.run(["mosquitto_pub", *common, "-t", "plant/line1", "-m", "hello over tls"],
                   check=True, timeout=20)
    out, _ = sub.communicate(timeout=30)
    assert out.strip() == "hello over tls"
    # With the client certificate instead of a password.
    cert = ["-h", "127.0.0.1", "-p", str(server.mqtts_port), "--cafile", pki["ca.pem"],
            "--cert", pki["client.pem"], "--key", pki["client.key"], "-q", "1"]
    subprocess.run(["mosquitto_pub", *cert, "-t", "devices/sensor-17/x", "-m", "1"],
                   check=True, timeout=20)


def connack_over_tls(pki, port, cert):
    """Sends an MQTT 3.1.1 CONNECT over TLS with `cert` (or none): the
    first byte the server answers, or None when it closes or fails the
    handshake."""
    context = ssl.create_default_context(cafile=pki["ca.pem"])
    if cert:
        context.load_cert_chain(pki[f"{cert}.pem"], pki[f"{cert}.key"])
    connect = b"\x10\x0c\x00\x04MQTT\x04\x02\x00\x3c\x00\x00"
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                tls.sendall(connect)
                answer = tls.recv(4)
                return answer[0] if answer else None
    except (ssl.SSLError, ConnectionError):
        return None


def test_required_client_certificates_refuse_strangers(pki):
    with tempfile.TemporaryDirectory() as tmp:
        server = start(pki, tmp, require_client_cert=True)
        try:
            assert connack_over_tls(pki, server.mqtts_port, None) is None
            assert connack_over_tls(pki, server.mqtts_port, "rogue") is None
            assert connack_over_tls(pki, server.mqtts_port, "client") == 0x20
            metrics = urllib.request.urlopen(
                f"https://127.0.0.1:{server.http_port}/metrics",
                context=_client_context(pki), timeout=10).read().decode()
            failures = [l for l in metrics.splitlines()
                        if l.startswith("tidewire_tls_handshake_failures_total")]
            assert sum(float(l.split()[-1]) for l in failures) >= 2, failures
        finally:
            server.stop()


def _client_context(pki):
    """HTTPS with the client certificate (the listener requires one)."""
    context = ssl.create_default_context(cafile=pki["ca.pem"])
    context.load_cert_chain(pki["client.pem"], pki["client.key"])
    return context
