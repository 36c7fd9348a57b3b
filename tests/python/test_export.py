"""Stream export to Parquet against the real binary: pyarrow reads the
files and finds every record once, typed as documented; SIGKILLs during
flushes leave no duplicated and no missing offset; S3 through a real
S3-compatible server (moto in server mode, started by the test) survives
an outage; bad definitions are refused naming the field.
"""

import glob
import json
import os
import random
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import boto3
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import Tidewire


def api(server, method, path, body=None):
    url = f"http://127.0.0.1:{server.http_port}{path}"
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    request = urllib.request.Request(url, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            text = answer.read()
            return answer.status, (json.loads(text) if text else None)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def publish(server, topic, payload):
    status, answer = api(server, "POST", f"/api/v1/publish/{topic}?qos=1", payload.encode())
    assert status == 200, answer
    return answer["stored"][0]["offset"]


def wait_for(predicate, what, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


STREAM = """
[[streams]]
name = "readings"
filters = ["sensors/#"]
[streams.schema]
temp = { type = "double", path = "temp" }
site = { type = "varchar", path = "site" }
"""


def start(tmp, extra):
    path = os.path.join(tmp, "tidewire.toml")
    with open(path, "w") as f:
        f.write(STREAM + extra)
    return Tidewire(os.path.join(tmp, "data"), path).start()


def read_local(lake):
    files = sorted(glob.glob(os.path.join(lake, "**", "*.parquet"), recursive=True))
    return files, [pq.read_table(f) for f in files]


def exported(server, name):
    return api(server, "GET", f"/api/v1/exports/{name}")[1]["stats"]


def test_pyarrow_reads_every_record_once_typed_as_documented():
    with tempfile.TemporaryDirectory() as tmp:
        lake = os.path.join(tmp, "lake")
        server = start(tmp, f"""
[[exports]]
name = "lake"
stream = "readings"
url = "file://{lake}"
max_interval = "200ms"
""")
        try:
            for i in range(300):
                publish(server, f"sensors/s{i % 3}", json.dumps({"temp": 20 + i / 10, "site": f"s{i % 3}"}))
            wait_for(lambda: exported(server, "lake")["lag_records"] == 0
                     and exported(server, "lake")["records"] >= 300, "the export to catch up")
            files, tables = read_local(lake)
            assert files and all("/dt=" in f and "/hour=" in f for f in files)
            table = pa.concat_tables(tables)
            offsets = table.column("offset").to_pylist()
            assert sorted(offsets) == list(range(300))
            schema = table.schema
            assert schema.field("offset").type == pa.int64()
            assert schema.field("ts").type == pa.timestamp("ms", tz="UTC")
            assert schema.field("topic").type == pa.string()
            assert schema.field("qos").type == pa.int8()
            assert schema.field("payload_bytes").type == pa.binary()
            assert schema.field("temp").type == pa.float64()
            assert schema.field("site").type == pa.string()
            by_offset = {row["offset"]: row for row in table.to_pylist()}
            assert by_offset[10]["temp"] == pytest.approx(21.0)
            assert by_offset[10]["site"] == "s1"
            # Each file's name carries the range of offsets it holds.
            for f, t in zip(files, tables):
                first, last = os.path.basename(f)[:-len(".parquet")].split("-")[-2:]
                got = t.column("offset").to_pylist()
                assert min(got) == int(first) and max(got) == int(last)
                assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "ZSTD"
            stats = exported(server, "lake")
            assert stats["files"] == len(files) and stats["records"] == 300 and stats["lost"] == 0
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.http_port}/metrics").read().decode()
            assert 'tidewire_export_records_total{export="lake"} 300' in metrics
        finally:
            server.stop()


def test_sigkill_during_flushes_loses_and_duplicates_nothing():
    with tempfile.TemporaryDirectory() as tmp:
        lake = os.path.join(tmp, "lake")
        extra = f"""
[[exports]]
name = "lake"
stream = "readings"
url = "file://{lake}"
max_bytes = "4KiB"
max_interval = "100ms"
"""
        published = 0
        rng = random.Random(17)
        for round_ in range(4):
            server = start(tmp, extra) if round_ == 0 else Tidewire(
                os.path.join(tmp, "data"), os.path.join(tmp, "tidewire.toml")).start()
            for _ in range(150):
                publish(server, "sensors/a", json.dumps({"temp": published, "site": "a"}))
                published += 1
            # Kill while files are being written.
            time.sleep(rng.uniform(0.0, 0.3))
            server.proc.send_signal(signal.SIGKILL)
            server.proc.wait()
        server = Tidewire(os.path.join(tmp, "data"), os.path.join(tmp, "tidewire.toml")).start()
        try:
            wait_for(lambda: exported(server, "lake")["lag_records"] == 0, "the export to catch up")
            files, tables = read_local(lake)
            offsets = sorted(pa.concat_tables(tables).column("offset").to_pylist())
            assert offsets == list(range(published)), "each offset exactly once"
            assert not glob.glob(os.path.join(lake, "**", "*.tmp"), recursive=True)
        finally:
            server.stop()


@pytest.fixture
def moto():
    port = free_port()
    process = subprocess.Popen(
        ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(endpoint), "moto to listen", timeout=30)
    yield process, endpoint, port
    process.kill()
    process.wait()


def _up(endpoint):
    try:
        urllib.request.urlopen(endpoint, timeout=1)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def s3_client(endpoint):
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id="test", aws_secret_access_key="test")


def s3_offsets(s3, bucket):
    offsets = []
    listed = s3.list_objects_v2(Bucket=bucket, Prefix="lake/").get("Contents", [])
    for obj in listed:
        assert obj["Key"].endswith(".parquet")
        body = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
        offsets += pq.read_table(pa.BufferReader(body)).column("offset").to_pylist()
    return sorted(offsets)


def test_s3_export_through_an_outage(moto):
    process, endpoint, port = moto
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket="tidewire")
    with tempfile.TemporaryDirectory() as tmp:
        server = start(tmp, f"""
[[exports]]
name = "lake"
stream = "readings"
url = "s3://tidewire/lake"
max_interval = "200ms"
[exports.s3]
endpoint = "{endpoint}"
region = "us-east-1"
access_key_id = "test"
secret_access_key = "test"
""")
        try:
            for i in range(50):
                publish(server, "sensors/a", json.dumps({"temp": i, "site": "a"}))
            wait_for(lambda: s3_offsets(s3, "tidewire") == list(range(50)), "the first files on S3")
            # The S3 server goes away; what is published meanwhile waits.
            process.kill()
            process.wait()
            for i in range(50, 80):
                publish(server, "sensors/a", json.dumps({"temp": i, "site": "a"}))
            wait_for(lambda: exported(server, "lake")["failures"] > 0, "a failed flush")
            assert exported(server, "lake")["last_error"]
            # A new S3 server on the same port (moto keeps nothing, so the
            # bucket is made again): the waiting records arrive.
            again = subprocess.Popen(
                ["moto_server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                wait_for(lambda: _up(endpoint), "moto to come back", timeout=30)
                s3.create_bucket(Bucket="tidewire")
                wait_for(lambda: s3_offsets(s3, "tidewire") == list(range(50, 80)),
                         "the records of the outage", timeout=120)
            finally:
                again.kill()
                again.wait()
        finally:
            server.stop()


def test_bad_exports_are_refused_naming_the_field(moto):
    _, endpoint, _ = moto
    with tempfile.TemporaryDirectory() as tmp:
        not_a_dir = os.path.join(tmp, "file")
        open(not_a_dir, "w").close()
        server = start(tmp, "")
        try:
            cases = [
                ({"name": "a", "stream": "readings", "url": f"file://{not_a_dir}/lake"}, "url"),
                ({"name": "b", "stream": "readings", "url": "s3://no-such-bucket/x",
                  "s3": {"endpoint": endpoint, "access_key_id": "test", "secret_access_key": "test"}}, "s3"),
                ({"name": "c", "stream": "readings", "url": f"file://{tmp}/c", "select": "offset, nope"}, "select"),
                ({"name": "d", "stream": "readings", "url": f"file://{tmp}/d", "partition": "dt={day}"}, "partition"),
                ({"name": "e", "stream": "nope", "url": f"file://{tmp}/e"}, "stream"),
                ({"name": "f", "stream": "readings", "url": "ftp://x/y"}, "url"),
            ]
            for body, field in cases:
                status, answer = api(server, "POST", "/api/v1/exports", body)
                assert status == 400, (body, answer)
                assert f"export.{field}" in answer["error"], (body, answer)
            assert api(server, "GET", "/api/v1/exports")[1]["exports"] == []
        finally:
            server.stop()
        # At start-up the same mistake stops the broker, naming the field.
        config = os.path.join(tmp, "bad.toml")
        with open(config, "w") as f:
            f.write(STREAM + f'[[exports]]\nname = "a"\nstream = "readings"\nurl = "file://{not_a_dir}/lake"\n')
        out = subprocess.run(
            [os.environ.get("TIDEWIRE_BIN", "target/debug/tidewire"), "serve", "--config", config,
             "--data-dir", os.path.join(tmp, "d2"), "--http-listen", "127.0.0.1:0",
             "--mqtt-listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode != 0
        assert "exports[0].url" in out.stderr


def test_a_projection_and_filter_export_only_what_they_select():
    with tempfile.TemporaryDirectory() as tmp:
        lake = os.path.join(tmp, "hot")
        server = start(tmp, "")
        try:
            status, answer = api(server, "POST", "/api/v1/exports", {
                "name": "hot", "stream": "readings", "url": f"file://{lake}",
                "max_interval": "200ms", "partition": "",
                "select": "\"offset\", ts, site, temp", "where": "temp > 30",
            })
            assert status == 201, answer
            assert [c["name"] for c in answer["columns"]] == ["offset", "ts", "site", "temp"]
            for i in range(20):
                publish(server, "sensors/b", json.dumps({"temp": 25 + i, "site": "b"}))
            wait_for(lambda: exported(server, "hot")["lag_records"] == 0
                     and exported(server, "hot")["files"] > 0, "the export")
            _, tables = read_local(lake)
            table = pa.concat_tables(tables)
            assert table.column_names == ["offset", "ts", "site", "temp"]
            assert sorted(table.column("temp").to_pylist()) == [float(t) for t in range(31, 45)]
            assert api(server, "DELETE", "/api/v1/exports/hot")[0] == 204
            assert api(server, "GET", "/api/v1/exports/hot")[0] == 404
            assert glob.glob(os.path.join(lake, "*.parquet")), "the files stay"
        finally:
            server.stop()


def sql(server, statement):
    status, answer = api(server, "POST", "/api/v1/sql", {"sql": statement})
    assert status == 200, (statement, answer)
    return answer["rows"]


def test_a_history_query_across_the_seam_equals_the_same_query_over_every_record():
    with tempfile.TemporaryDirectory() as tmp:
        lake = os.path.join(tmp, "lake")
        server = start(tmp, f"""
[[streams]]
name = "hist"
filters = ["hist/#"]
segment_bytes = "4KiB"
retention = {{ max_bytes = "12KiB" }}
[streams.schema]
temp = {{ type = "double", path = "temp" }}

[[exports]]
name = "hist-lake"
stream = "hist"
url = "file://{lake}"
max_bytes = "2KiB"
max_interval = "100ms"
""")
        try:
            temps = []
            for burst in range(12):
                for i in range(25):
                    t = burst * 25 + i
                    publish(server, "hist/a", json.dumps({"temp": t, "pad": "x" * 40}))
                    temps.append(t)
                wait_for(lambda: exported(server, "hist-lake")["lag_records"] == 0, "the export")
            wait_for(lambda: api(server, "GET", "/api/v1/streams/hist")[1]["stats"]["first_offset"] > 0,
                     "retention to drop the oldest segments")
            first_live = api(server, "GET", "/api/v1/streams/hist")[1]["stats"]["first_offset"]
            assert exported(server, "hist-lake")["lost"] == 0
            n = len(temps)
            rows = sql(server, 'SELECT count(*), min("offset"), max("offset"), sum(temp) FROM hist_history')
            assert rows == [[n, 0, n - 1, float(sum(temps))]]
            # The live table alone lacks what retention dropped.
            live = sql(server, 'SELECT count(*), min("offset") FROM hist')
            stats = api(server, "GET", "/api/v1/streams/hist")[1]["stats"]
            assert live[0][0] == n - live[0][1], (live, first_live, stats)
            # A range across the seam.
            lo, hi = first_live - 20, first_live + 20
            rows = sql(server, f'SELECT count(*), sum(temp) FROM hist_history WHERE "offset" >= {lo} AND "offset" < {hi}')
            assert rows == [[40, float(sum(temps[lo:hi]))]]
        finally:
            server.stop()
