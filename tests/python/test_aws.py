"""The AWS endpoint with the real AWS SDK for Python (boto3), unchanged,
pointed at tidewire with `endpoint_url`: SigV4 with the configured access
keys, STS GetCallerIdentity, and AWS's error codes for bad signatures.
"""

import os
import tempfile

import boto3
import botocore
import pytest
from botocore.config import Config

from conftest import Tidewire


def start(tmp, extra=""):
    config = os.path.join(tmp, "tidewire.toml")
    with open(config, "w") as f:
        f.write(f"""
[aws]
account_id = "123456789012"

[[aws.credentials]]
access_key_id = "AKIDBACKEND"
secret_access_key = "backend-secret"
user = "backend"

[[aws.credentials]]
access_key_id = "AKIDROOT"
secret_access_key = "root-secret"

[[users]]
username = "backend"
sql = ["events"]
{extra}
""")
    return Tidewire(os.path.join(tmp, "data"), config).start()


@pytest.fixture
def server():
    with tempfile.TemporaryDirectory() as tmp:
        s = start(tmp)
        try:
            yield s
        finally:
            s.stop()


def sts(server, key=None, secret=None, unsigned=False):
    kwargs = {}
    if unsigned:
        kwargs["config"] = Config(signature_version=botocore.UNSIGNED)
    return boto3.client(
        "sts",
        endpoint_url=f"http://127.0.0.1:{server.http_port}",
        region_name="eu-west-1",
        aws_access_key_id=key or "unused",
        aws_secret_access_key=secret or "unused",
        **kwargs,
    )


def test_get_caller_identity_names_the_mapped_user_or_the_account(server):
    backend = sts(server, "AKIDBACKEND", "backend-secret").get_caller_identity()
    assert backend["Account"] == "123456789012"
    assert backend["Arn"] == "arn:aws:iam::123456789012:user/backend"
    assert backend["UserId"] == "AKIDBACKEND"
    root = sts(server, "AKIDROOT", "root-secret").get_caller_identity()
    assert root["Arn"] == "arn:aws:iam::123456789012:root"


def test_bad_signatures_get_aws_error_codes(server):
    for key, secret, code in [
        ("AKIDBACKEND", "wrong-secret", "SignatureDoesNotMatch"),
        ("AKIDNOBODY", "x", "InvalidClientTokenId"),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            sts(server, key, secret).get_caller_identity()
        assert refused.value.response["Error"]["Code"] == code
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403


def test_unsigned_requests_follow_the_anonymous_rule():
    with tempfile.TemporaryDirectory() as tmp:
        server = start(tmp)
        try:
            anonymous = sts(server, unsigned=True).get_caller_identity()
            assert "anonymous" in anonymous["Arn"]
        finally:
            server.stop()
    with tempfile.TemporaryDirectory() as tmp:
        server = start(tmp, "[auth]\nallow_anonymous = false\n")
        try:
            with pytest.raises(botocore.exceptions.ClientError) as refused:
                sts(server, unsigned=True).get_caller_identity()
            assert refused.value.response["Error"]["Code"] == "MissingAuthenticationToken"
            # Signed requests still work.
            sts(server, "AKIDBACKEND", "backend-secret").get_caller_identity()
        finally:
            server.stop()
