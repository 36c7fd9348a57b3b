"""Starts the real tidewire binary on free ports for each test.

The binary is taken from TIDEWIRE_BIN (tests/run.sh sets it to the one
`cargo test` just built).
"""

import os
import re
import subprocess
import tempfile

import pytest


class Tidewire:
    def __init__(self, data_dir, config=None):
        self.data_dir = data_dir
        self.config = config
        self.proc = None
        self.mqtt_port = None
        self.mqtts_port = None
        self.http_port = None

    def start(self):
        extra = ["--config", self.config] if self.config else []
        self.proc = subprocess.Popen(
            [
                os.environ.get("TIDEWIRE_BIN", "target/debug/tidewire"),
                "serve",
                "--data-dir", self.data_dir,
                "--mqtt-listen", "127.0.0.1:0",
                "--http-listen", "127.0.0.1:0",
                *extra,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for line in self.proc.stdout:
            match = re.match(r"(mqtts|mqtt|http) listening on 127\.0\.0\.1:(\d+)", line)
            if match and match.group(1) == "mqtt":
                self.mqtt_port = int(match.group(2))
            if match and match.group(1) == "mqtts":
                self.mqtts_port = int(match.group(2))
            if match and match.group(1) == "http":
                self.http_port = int(match.group(2))
                return self
        raise RuntimeError("tidewire exited before listening")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def tidewire():
    with tempfile.TemporaryDirectory() as tmp:
        server = Tidewire(os.path.join(tmp, "data")).start()
        try:
            yield server
        finally:
            server.stop()
