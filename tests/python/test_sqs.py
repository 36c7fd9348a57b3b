"""The SQS-compatible endpoint with the real AWS SDK for Python (boto3) and
the AWS CLI, unchanged, pointed at tidewire with `endpoint_url`: queues and
their attributes, messages with attributes (their MD5 digests checked the
way the Java, Go and JavaScript SDKs check them; botocore does not), batches
with partial failures, long polls, visibility timeouts, dead letters and
redrive, FIFO order and deduplication, SQS's error codes for bad input, and
permissions of signed callers.
"""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time

import boto3
import botocore
import pytest
from botocore.config import Config

from conftest import Tidewire

ACCOUNT = "123456789012"
REGION = "eu-west-1"


def start(tmp):
    config = os.path.join(tmp, "tidewire.toml")
    with open(config, "w") as f:
        f.write(f"""
[aws]
account_id = "{ACCOUNT}"

[[aws.credentials]]
access_key_id = "AKIDROOT"
secret_access_key = "root-secret"

[[aws.credentials]]
access_key_id = "AKIDWORKER"
secret_access_key = "worker-secret"
user = "worker"

[[users]]
username = "worker"
queues = ["allowed"]
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


def client(server, key="AKIDROOT", secret="root-secret", **config):
    return boto3.client(
        "sqs",
        endpoint_url=f"http://127.0.0.1:{server.http_port}",
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": 1}, **config),
    )


@pytest.fixture
def sqs(server):
    return client(server)


def md5_of_attributes(attributes):
    """SQS's digest of message attributes: sorted by name, each name, data
    type and value length-prefixed (u32 big-endian), with a transport byte
    (1: String/Number, 2: Binary) before the value."""
    digest = hashlib.md5()

    def prefixed(data):
        digest.update(struct.pack(">I", len(data)))
        digest.update(data)

    for name in sorted(attributes):
        value = attributes[name]
        prefixed(name.encode())
        prefixed(value["DataType"].encode())
        if "BinaryValue" in value:
            digest.update(b"\x02")
            prefixed(value["BinaryValue"])
        else:
            digest.update(b"\x01")
            prefixed(value["StringValue"].encode())
    return digest.hexdigest()


def md5(text):
    return hashlib.md5(text.encode()).hexdigest()


def error_of(call, *args, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        call(*args, **kwargs)
    response = refused.value.response
    return response["Error"]["Code"], response["ResponseMetadata"]["HTTPStatusCode"]


def arn(name):
    return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"


def wait_for(check, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_md5_of_attributes_matches_a_known_vector():
    # The vector the Rust unit test (broker/aws/src/sqs/md5.rs) checks too.
    assert md5_of_attributes({
        "trace": {"DataType": "String", "StringValue": "abc"},
        "count": {"DataType": "Number.int", "StringValue": "42"},
        "blob": {"DataType": "Binary", "BinaryValue": bytes([0, 1, 2, 255])},
    }) == "559942ffeceac82243719e7ae616ea3a"


def test_create_list_url_and_attributes(server, sqs):
    url = sqs.create_queue(QueueName="jobs", Attributes={
        "VisibilityTimeout": "45",
        "MessageRetentionPeriod": "3600",
        "MaximumMessageSize": "2048",
        "DelaySeconds": "0",
    })["QueueUrl"]
    assert url == f"http://127.0.0.1:{server.http_port}/{ACCOUNT}/jobs"
    # The same attributes (or none) answer the existing queue; others refuse.
    assert sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "45"})["QueueUrl"] == url
    assert sqs.create_queue(QueueName="jobs")["QueueUrl"] == url
    with pytest.raises(sqs.exceptions.QueueNameExists) as exists:
        sqs.create_queue(QueueName="jobs", Attributes={"VisibilityTimeout": "46"})
    assert exists.value.response["Error"]["Code"] == "QueueAlreadyExists"
    for name in ["jobs-b", "jobs-c", "other"]:
        sqs.create_queue(QueueName=name)

    assert sqs.get_queue_url(QueueName="jobs")["QueueUrl"] == url
    assert sqs.list_queues(QueueNamePrefix="jobs")["QueueUrls"] == [
        url, url + "-b", url + "-c"]
    first = sqs.list_queues(QueueNamePrefix="jobs", MaxResults=2)
    assert first["QueueUrls"] == [url, url + "-b"]
    second = sqs.list_queues(QueueNamePrefix="jobs", MaxResults=2, NextToken=first["NextToken"])
    assert second["QueueUrls"] == [url + "-c"] and "NextToken" not in second
    assert "QueueUrls" not in sqs.list_queues(QueueNamePrefix="none")

    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert attributes["QueueArn"] == arn("jobs")
    assert attributes["VisibilityTimeout"] == "45"
    assert attributes["MessageRetentionPeriod"] == "3600"
    assert attributes["MaximumMessageSize"] == "2048"
    assert attributes["DelaySeconds"] == "0"
    assert attributes["ReceiveMessageWaitTimeSeconds"] == "0"
    assert attributes["ApproximateNumberOfMessages"] == "0"
    assert attributes["ApproximateNumberOfMessagesNotVisible"] == "0"
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "0"
    assert abs(int(attributes["CreatedTimestamp"]) - time.time()) < 60
    assert "FifoQueue" not in attributes and "RedrivePolicy" not in attributes
    # A queue may be named by its bare name; only what is asked is answered.
    named = sqs.get_queue_attributes(QueueUrl="jobs", AttributeNames=["VisibilityTimeout"])
    assert named["Attributes"] == {"VisibilityTimeout": "45"}

    sqs.set_queue_attributes(QueueUrl=url, Attributes={"VisibilityTimeout": "60", "DelaySeconds": "2"})
    changed = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    assert changed["VisibilityTimeout"] == "60" and changed["DelaySeconds"] == "2"
    assert changed["MaximumMessageSize"] == "2048"
    assert int(changed["LastModifiedTimestamp"]) >= int(changed["CreatedTimestamp"])

    sqs.delete_queue(QueueUrl=url)
    with pytest.raises(sqs.exceptions.QueueDoesNotExist) as gone:
        sqs.get_queue_url(QueueName="jobs")
    assert gone.value.response["Error"]["Code"] == "AWS.SimpleQueueService.NonExistentQueue"
    assert gone.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_send_receive_delete_with_attributes(sqs):
    url = sqs.create_queue(QueueName="work")["QueueUrl"]
    attributes = {
        "trace": {"DataType": "String", "StringValue": "abc-123"},
        "priority": {"DataType": "Number.int", "StringValue": "7"},
        "blob": {"DataType": "Binary", "BinaryValue": bytes([0, 1, 2, 254, 255])},
        "app.kind": {"DataType": "String", "StringValue": "invoice"},
    }
    body = "héllo, wörld ✓"
    sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
    assert sent["MD5OfMessageBody"] == md5(body)
    assert sent["MD5OfMessageAttributes"] == md5_of_attributes(attributes)
    plain = sqs.send_message(QueueUrl=url, MessageBody="plain")
    assert plain["MD5OfMessageBody"] == md5("plain")
    assert "MD5OfMessageAttributes" not in plain and "SequenceNumber" not in plain

    got = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"])["Messages"]
    assert [m["Body"] for m in got] == [body, "plain"]
    first = got[0]
    assert first["MessageId"] == sent["MessageId"]
    assert first["MD5OfBody"] == md5(body)
    assert first["MessageAttributes"] == attributes
    assert first["MD5OfMessageAttributes"] == md5_of_attributes(attributes)
    system = first["Attributes"]
    assert system["ApproximateReceiveCount"] == "1"
    assert system["SenderId"] == "AKIDROOT"
    assert abs(int(system["SentTimestamp"]) / 1000 - time.time()) < 60
    assert int(system["ApproximateFirstReceiveTimestamp"]) >= int(system["SentTimestamp"])
    assert "MessageAttributes" not in got[1] and "MD5OfMessageAttributes" not in got[1]
    for m in got:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert "Messages" not in sqs.receive_message(QueueUrl=url)

    # Selected attributes, by name and by prefix; the digest covers those.
    sqs.send_message(QueueUrl=url, MessageBody="x", MessageAttributes=attributes)
    m = sqs.receive_message(
        QueueUrl=url, MessageAttributeNames=["trace", "app.*"],
        AttributeNames=["ApproximateReceiveCount"])["Messages"][0]
    selected = {k: attributes[k] for k in ["trace", "app.kind"]}
    assert m["MessageAttributes"] == selected
    assert m["MD5OfMessageAttributes"] == md5_of_attributes(selected)
    assert m["Attributes"] == {"ApproximateReceiveCount": "1"}
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    wait_for(lambda: sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    )["Attributes"] == {"ApproximateNumberOfMessages": "0", "ApproximateNumberOfMessagesNotVisible": "0"})


def test_batches_with_partial_failures(sqs):
    url = sqs.create_queue(QueueName="batch", Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    sent = sqs.send_message_batch(QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "one"},
        {"Id": "b", "MessageBody": "two", "MessageAttributes": {
            "AWS.reserved": {"DataType": "String", "StringValue": "x"}}},
        {"Id": "c", "MessageBody": "three", "DelaySeconds": 0,
         "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "3"}}},
    ])
    assert sorted(s["Id"] for s in sent["Successful"]) == ["a", "c"]
    by_id = {s["Id"]: s for s in sent["Successful"]}
    assert by_id["a"]["MD5OfMessageBody"] == md5("one")
    assert by_id["c"]["MD5OfMessageAttributes"] == md5_of_attributes(
        {"n": {"DataType": "Number", "StringValue": "3"}})
    [failed] = sent["Failed"]
    assert failed["Id"] == "b" and failed["SenderFault"] is True
    assert failed["Code"] == "InvalidParameterValue"

    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert sorted(m["Body"] for m in got) == ["one", "three"]
    handles = [m["ReceiptHandle"] for m in got]

    changed = sqs.change_message_visibility_batch(QueueUrl=url, Entries=[
        {"Id": "x", "ReceiptHandle": handles[0], "VisibilityTimeout": 0},
        {"Id": "y", "ReceiptHandle": "not-a-handle", "VisibilityTimeout": 5},
    ])
    assert [s["Id"] for s in changed["Successful"]] == ["x"]
    assert changed["Failed"][0]["Id"] == "y"
    assert changed["Failed"][0]["Code"] == "ReceiptHandleIsInvalid"

    again = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(again) == 1 and again[0]["MessageId"] == got[0]["MessageId"]
    # The handle of an earlier receive is stale (once the message is
    # deleted, any of its handles deletes nothing and succeeds).
    deleted = sqs.delete_message_batch(QueueUrl=url, Entries=[
        {"Id": "stale", "ReceiptHandle": handles[0]},
        {"Id": "first", "ReceiptHandle": again[0]["ReceiptHandle"]},
        {"Id": "second", "ReceiptHandle": handles[1]},
    ])
    assert sorted(s["Id"] for s in deleted["Successful"]) == ["first", "second"]
    assert [(f["Id"], f["Code"], f["SenderFault"]) for f in deleted["Failed"]] == [
        ("stale", "ReceiptHandleIsInvalid", True)]
    assert "Messages" not in sqs.receive_message(QueueUrl=url, VisibilityTimeout=0)

    # The whole batch may carry at most the queue's message size.
    code, status = error_of(sqs.send_message_batch, QueueUrl=url, Entries=[
        {"Id": "a", "MessageBody": "x" * 600}, {"Id": "b", "MessageBody": "y" * 600}])
    assert (code, status) == ("AWS.SimpleQueueService.BatchRequestTooLong", 400)


def test_long_poll_wakes_on_send(sqs):
    url = sqs.create_queue(QueueName="poll")["QueueUrl"]
    result = {}

    def receive():
        result["messages"] = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=10).get("Messages", [])
        result["at"] = time.monotonic()

    waiter = threading.Thread(target=receive)
    waiter.start()
    time.sleep(0.5)
    sent_at = time.monotonic()
    sqs.send_message(QueueUrl=url, MessageBody="wake up")
    waiter.join(timeout=15)
    assert [m["Body"] for m in result["messages"]] == ["wake up"]
    print(f"long poll woke {1000 * (result['at'] - sent_at):.1f} ms after the send was sent")


def test_visibility_expiry_redelivers_with_rising_receive_count(sqs):
    url = sqs.create_queue(QueueName="visible", Attributes={"VisibilityTimeout": "1"})["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody="again")
    counts, handles = [], []
    for _ in range(3):
        m = wait_for(lambda: sqs.receive_message(
            QueueUrl=url, AttributeNames=["ApproximateReceiveCount"]).get("Messages"))[0]
        counts.append(int(m["Attributes"]["ApproximateReceiveCount"]))
        handles.append(m["ReceiptHandle"])
    assert counts == [1, 2, 3]
    # Only the latest receive's handle is valid.
    code, status = error_of(sqs.delete_message, QueueUrl=url, ReceiptHandle=handles[0])
    assert (code, status) == ("ReceiptHandleIsInvalid", 404)
    # Visibility 0 hands it out again at once.
    sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=handles[-1], VisibilityTimeout=0)
    m = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    assert m["Attributes"]["ApproximateReceiveCount"] == "4"
    sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])


def test_dead_letters_and_redrive(sqs):
    dlq = sqs.create_queue(QueueName="jobs-dlq")["QueueUrl"]
    policy = json.dumps({"deadLetterTargetArn": arn("jobs-dlq"), "maxReceiveCount": 2})
    url = sqs.create_queue(QueueName="jobs", Attributes={"RedrivePolicy": policy})["QueueUrl"]
    stored = json.loads(sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["RedrivePolicy"])["Attributes"]["RedrivePolicy"])
    assert stored == {"deadLetterTargetArn": arn("jobs-dlq"), "maxReceiveCount": 2}
    assert sqs.list_dead_letter_source_queues(QueueUrl=dlq)["queueUrls"] == [url]

    sent = sqs.send_message(QueueUrl=url, MessageBody="poison")
    for expected in [1, 2]:
        m = sqs.receive_message(QueueUrl=url, VisibilityTimeout=0, AttributeNames=["All"])["Messages"][0]
        assert m["Attributes"]["ApproximateReceiveCount"] == str(expected)
    # The next receive moves it to the dead-letter queue.
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    depth = lambda q: sqs.get_queue_attributes(
        QueueUrl=q, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]["ApproximateNumberOfMessages"]
    assert wait_for(lambda: depth(dlq) == "1")

    handle = sqs.start_message_move_task(SourceArn=arn("jobs-dlq"))["TaskHandle"]
    tasks = wait_for(lambda: [
        t for t in sqs.list_message_move_tasks(SourceArn=arn("jobs-dlq"), MaxResults=10)["Results"]
        if t["Status"] == "COMPLETED"])
    assert tasks[0]["ApproximateNumberOfMessagesMoved"] == 1
    assert tasks[0]["SourceArn"] == arn("jobs-dlq")
    code, _ = error_of(sqs.cancel_message_move_task, TaskHandle=handle)
    assert code == "InvalidParameterValue"  # no longer running

    back = sqs.receive_message(QueueUrl=url, AttributeNames=["All"])["Messages"][0]
    assert back["Body"] == "poison" and back["MessageId"] == sent["MessageId"]
    assert back["Attributes"]["ApproximateReceiveCount"] == "1"
    assert depth(dlq) == "0"
    code, status = error_of(sqs.start_message_move_task, SourceArn=arn("missing"))
    assert (code, status) == ("ResourceNotFoundException", 404)


def test_fifo_order_and_deduplication(sqs):
    url = sqs.create_queue(QueueName="orders.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    ids = {}
    for group, n in [("a", 5), ("b", 3)]:
        for i in range(n):
            r = sqs.send_message(QueueUrl=url, MessageBody=f"{group}{i}",
                                 MessageGroupId=group, MessageDeduplicationId=f"{group}-{i}")
            ids[f"{group}{i}"] = r["MessageId"]
            assert r["SequenceNumber"]
    # The same deduplication id within the window: the same message, once.
    again = sqs.send_message(QueueUrl=url, MessageBody="a2 again", MessageGroupId="a",
                             MessageDeduplicationId="a-2")
    assert again["MessageId"] == ids["a2"]

    seen = {"a": [], "b": []}
    while len(seen["a"]) + len(seen["b"]) < 8:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                  MessageSystemAttributeNames=["All"]).get("Messages", [])
        assert got, "messages are missing"
        for m in got:
            group = m["Attributes"]["MessageGroupId"]
            assert m["Attributes"]["MessageDeduplicationId"] == f"{group}-{m['Body'][1:]}"
            seen[group].append(m["Body"])
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert seen == {"a": ["a0", "a1", "a2", "a3", "a4"], "b": ["b0", "b1", "b2"]}
    assert "Messages" not in sqs.receive_message(QueueUrl=url)

    # A group with a message in flight hands out nothing else from it.
    sqs.send_message(QueueUrl=url, MessageBody="c0", MessageGroupId="c", MessageDeduplicationId="c0")
    sqs.send_message(QueueUrl=url, MessageBody="c1", MessageGroupId="c", MessageDeduplicationId="c1")
    first = sqs.receive_message(QueueUrl=url)["Messages"][0]
    assert first["Body"] == "c0"
    assert "Messages" not in sqs.receive_message(QueueUrl=url)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=first["ReceiptHandle"])
    assert sqs.receive_message(QueueUrl=url)["Messages"][0]["Body"] == "c1"

    # Content-based deduplication: the same body twice is one message.
    cbd = sqs.create_queue(QueueName="cbd.fifo", Attributes={
        "FifoQueue": "true", "ContentBasedDeduplication": "true"})["QueueUrl"]
    one = sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")
    two = sqs.send_message(QueueUrl=cbd, MessageBody="same", MessageGroupId="g")
    assert one["MessageId"] == two["MessageId"]
    got = sqs.receive_message(QueueUrl=cbd, MaxNumberOfMessages=10)["Messages"]
    assert len(got) == 1
    attributes = sqs.get_queue_attributes(QueueUrl=cbd, AttributeNames=["All"])["Attributes"]
    assert attributes["FifoQueue"] == "true" and attributes["ContentBasedDeduplication"] == "true"


def test_bad_input_gets_sqs_errors(server, sqs):
    url = sqs.create_queue(QueueName="strict", Attributes={"MaximumMessageSize": "1024"})["QueueUrl"]
    fifo = sqs.create_queue(QueueName="strict.fifo", Attributes={"FifoQueue": "true"})["QueueUrl"]
    unvalidated = client(server, parameter_validation=False)
    entries = lambda n: [{"Id": f"e{i}", "MessageBody": "x"} for i in range(n)]
    cases = [
        ("oversize", sqs.send_message, dict(QueueUrl=url, MessageBody="x" * 1025),
         "InvalidParameterValue", 400),
        ("oversize with attributes", sqs.send_message, dict(
            QueueUrl=url, MessageBody="x" * 1000,
            MessageAttributes={"a": {"DataType": "String", "StringValue": "y" * 30}}),
         "InvalidParameterValue", 400),
        ("bad receipt handle", sqs.delete_message, dict(QueueUrl=url, ReceiptHandle="garbage"),
         "ReceiptHandleIsInvalid", 404),
        ("batch of 11", sqs.send_message_batch, dict(QueueUrl=url, Entries=entries(11)),
         "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", 400),
        ("empty batch", unvalidated.send_message_batch, dict(QueueUrl=url, Entries=[]),
         "AWS.SimpleQueueService.EmptyBatchRequest", 400),
        ("duplicate ids", sqs.delete_message_batch, dict(QueueUrl=url, Entries=[
            {"Id": "same", "ReceiptHandle": "h1"}, {"Id": "same", "ReceiptHandle": "h2"}]),
         "AWS.SimpleQueueService.BatchEntryIdsNotDistinct", 400),
        ("bad entry id", sqs.send_message_batch, dict(QueueUrl=url, Entries=[
            {"Id": "not valid!", "MessageBody": "x"}]),
         "AWS.SimpleQueueService.InvalidBatchEntryId", 400),
        ("visibility beyond 12 h", sqs.receive_message, dict(QueueUrl=url, VisibilityTimeout=43201),
         "InvalidParameterValue", 400),
        ("wait beyond 20 s", sqs.receive_message, dict(QueueUrl=url, WaitTimeSeconds=21),
         "InvalidParameterValue", 400),
        ("more than 10 messages", sqs.receive_message, dict(QueueUrl=url, MaxNumberOfMessages=11),
         "InvalidParameterValue", 400),
        ("unknown queue", sqs.send_message, dict(QueueUrl=url + "-missing", MessageBody="x"),
         "AWS.SimpleQueueService.NonExistentQueue", 400),
        ("another account's queue", sqs.send_message,
         dict(QueueUrl=url.replace(ACCOUNT, "999999999999"), MessageBody="x"),
         "AWS.SimpleQueueService.NonExistentQueue", 400),
        ("fifo without group", sqs.send_message, dict(QueueUrl=fifo, MessageBody="x",
                                                      MessageDeduplicationId="d"),
         "MissingParameter", 400),
        ("fifo without dedup id", sqs.send_message, dict(QueueUrl=fifo, MessageBody="x",
                                                         MessageGroupId="g"),
         "InvalidParameterValue", 400),
        ("unknown queue attribute", sqs.get_queue_attributes, dict(
            QueueUrl=url, AttributeNames=["Colour"]), "InvalidAttributeName", 400),
        ("unknown attribute on create", sqs.create_queue, dict(
            QueueName="other", Attributes={"Colour": "blue"}), "InvalidAttributeName", 400),
        ("bad attribute value", sqs.set_queue_attributes, dict(
            QueueUrl=url, Attributes={"VisibilityTimeout": "43201"}), "InvalidAttributeValue", 400),
        ("bad message attribute type", sqs.send_message, dict(
            QueueUrl=url, MessageBody="x",
            MessageAttributes={"a": {"DataType": "Integer", "StringValue": "1"}}),
         "InvalidParameterValue", 400),
        ("bad message attribute name", sqs.send_message, dict(
            QueueUrl=url, MessageBody="x",
            MessageAttributes={"a b": {"DataType": "String", "StringValue": "1"}}),
         "InvalidParameterValue", 400),
        ("not a number", sqs.send_message, dict(
            QueueUrl=url, MessageBody="x",
            MessageAttributes={"n": {"DataType": "Number", "StringValue": "ten"}}),
         "InvalidParameterValue", 400),
        ("bad characters", sqs.send_message, dict(QueueUrl=url, MessageBody="a\x00b"),
         "InvalidMessageContents", 400),
        ("empty body", sqs.send_message, dict(QueueUrl=url, MessageBody=""),
         "MissingParameter", 400),
        ("bad queue name", sqs.create_queue, dict(QueueName="no spaces"),
         "InvalidParameterValue", 400),
        ("unsupported action", sqs.tag_queue, dict(QueueUrl=url, Tags={"a": "b"}),
         "AWS.SimpleQueueService.UnsupportedOperation", 400),
    ]
    for what, call, kwargs, code, status in cases:
        assert error_of(call, **kwargs) == (code, status), what

    # Visibility beyond 12 h on a valid handle; and a message whose
    # visibility has run out is no longer in flight.
    sqs.send_message(QueueUrl=url, MessageBody="m")
    m = sqs.receive_message(QueueUrl=url, VisibilityTimeout=1)["Messages"][0]
    assert error_of(sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=m["ReceiptHandle"],
                    VisibilityTimeout=43201) == ("InvalidParameterValue", 400)
    time.sleep(1.2)
    assert error_of(sqs.change_message_visibility, QueueUrl=url, ReceiptHandle=m["ReceiptHandle"],
                    VisibilityTimeout=10) == ("AWS.SimpleQueueService.MessageNotInflight", 400)
    # Nothing was lost on the way.
    assert [x["Body"] for x in sqs.receive_message(QueueUrl=url)["Messages"]] == ["m"]


def test_signed_callers_need_queue_permissions(sqs, server):
    allowed = sqs.create_queue(QueueName="allowed")["QueueUrl"]
    forbidden = sqs.create_queue(QueueName="forbidden")["QueueUrl"]
    worker = client(server, "AKIDWORKER", "worker-secret")

    assert worker.list_queues()["QueueUrls"] == [allowed]
    worker.send_message(QueueUrl=allowed, MessageBody="hi")
    m = worker.receive_message(QueueUrl=allowed, AttributeNames=["SenderId"])["Messages"][0]
    assert m["Attributes"]["SenderId"] == "worker"
    worker.delete_message(QueueUrl=allowed, ReceiptHandle=m["ReceiptHandle"])

    for call, kwargs in [
        (worker.send_message, dict(QueueUrl=forbidden, MessageBody="x")),
        (worker.receive_message, dict(QueueUrl=forbidden)),
        (worker.get_queue_url, dict(QueueName="forbidden")),
        (worker.get_queue_attributes, dict(QueueUrl=forbidden, AttributeNames=["All"])),
        (worker.purge_queue, dict(QueueUrl=forbidden)),
        (worker.create_queue, dict(QueueName="new")),
        (worker.delete_queue, dict(QueueUrl=allowed)),
        (worker.set_queue_attributes, dict(QueueUrl=allowed, Attributes={"DelaySeconds": "1"})),
        (worker.start_message_move_task, dict(SourceArn=arn("allowed"))),
    ]:
        with pytest.raises(botocore.exceptions.ClientError) as refused:
            call(**kwargs)
        error = refused.value.response["Error"]
        assert error["Code"] == "AccessDenied", call
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "queues" in error["Message"] or "admin" in error["Message"]
    # Refusals change nothing.
    assert "forbidden" in sqs.get_queue_url(QueueName="forbidden")["QueueUrl"]

    bad = client(server, "AKIDWORKER", "wrong-secret")
    assert error_of(bad.list_queues) == ("SignatureDoesNotMatch", 403)


@pytest.mark.skipif(shutil.which("aws") is None, reason="the AWS CLI is not installed")
def test_aws_cli(server, sqs):
    env = dict(os.environ, AWS_ACCESS_KEY_ID="AKIDROOT", AWS_SECRET_ACCESS_KEY="root-secret",
               AWS_DEFAULT_REGION=REGION, AWS_CONFIG_FILE="/dev/null",
               AWS_SHARED_CREDENTIALS_FILE="/dev/null")
    endpoint = f"http://127.0.0.1:{server.http_port}"

    def aws(*args):
        out = subprocess.run(["aws", "--endpoint-url", endpoint, "--output", "json", "sqs", *args],
                             env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout) if out.stdout.strip() else {}

    url = aws("create-queue", "--queue-name", "cli")["QueueUrl"]
    assert url == f"{endpoint}/{ACCOUNT}/cli"
    assert url in aws("list-queues")["QueueUrls"]
    sent = aws("send-message", "--queue-url", url, "--message-body", "from the cli")
    assert sent["MD5OfMessageBody"] == md5("from the cli")
    got = aws("receive-message", "--queue-url", url, "--wait-time-seconds", "1")["Messages"]
    assert got[0]["Body"] == "from the cli"
    aws("delete-message", "--queue-url", url, "--receipt-handle", got[0]["ReceiptHandle"])
    assert aws("get-queue-attributes", "--queue-url", url, "--attribute-names",
               "ApproximateNumberOfMessages")["Attributes"] == {"ApproximateNumberOfMessages": "0"}
    # Binary attributes: CLI v1 sends a blob argument's text as its bytes
    # (base64 on the wire); they come back to boto3 as bytes.
    aws("send-message", "--queue-url", url, "--message-body", "b", "--message-attributes",
        json.dumps({"raw": {"DataType": "Binary", "BinaryValue": "bytes"}}))
    m = sqs.receive_message(QueueUrl=url, MessageAttributeNames=["All"])["Messages"][0]
    assert m["MessageAttributes"]["raw"]["BinaryValue"] == b"bytes"
    assert aws("receive-message", "--queue-url", url, "--visibility-timeout", "0") == {}
