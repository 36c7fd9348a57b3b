"""The SNS-compatible endpoint with the real AWS SDK for Python (boto3),
unchanged, pointed at tidewire with `endpoint_url`: topics, SQS queues
subscribed with filter policies and raw delivery (received with boto3's
SQS client on the same endpoint), SNS's JSON envelope, an HTTP
subscription confirmed by following its SubscribeURL and removed by its
UnsubscribeURL, batches with partial failures, SNS's error codes, and the
permissions of signed callers with anonymous access off (where the links
still work: their token is their credential).

Most tests use the `tidewire` fixture (no config: anonymous access on
loopback may do everything), so the SDK's requests go unsigned, in the
default region.
"""

import base64
import http.server
import json
import os
import tempfile
import threading
import time
import urllib.error
import urllib.request

import boto3
import botocore
import pytest
from botocore.config import Config

from conftest import Tidewire

ACCOUNT = "000000000000"
REGION = "us-east-1"


def client(server, service, region=REGION, key=None, secret=None, **config):
    """A boto3 client of tidewire: unsigned unless given an access key."""
    if key is None:
        config["signature_version"] = botocore.UNSIGNED
    return boto3.client(
        service,
        endpoint_url=f"http://127.0.0.1:{server.http_port}",
        region_name=region,
        aws_access_key_id=key or "unused",
        aws_secret_access_key=secret or "unused",
        config=Config(retries={"max_attempts": 1}, **config),
    )


@pytest.fixture
def sns(tidewire):
    return client(tidewire, "sns")


@pytest.fixture
def sqs(tidewire):
    return client(tidewire, "sqs")


def error_of(call, *args, **kwargs):
    with pytest.raises(botocore.exceptions.ClientError) as refused:
        call(*args, **kwargs)
    response = refused.value.response
    return (
        response["Error"]["Code"],
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Message"],
    )


def wait_for(check, what, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def queue(sqs, name):
    """A new queue: its URL and ARN."""
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return url, arn


def receive(sqs, url, count, timeout=20):
    """At least `count` messages of the queue (deleted as they come), then
    whatever else arrives within a second."""
    got = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        got += take(sqs, url, wait=1)
    assert len(got) >= count, f"only {len(got)} of {count} messages arrived"
    return got + take(sqs, url, wait=1)


def take(sqs, url, wait):
    messages = sqs.receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=wait,
        MessageAttributeNames=["All"],
    ).get("Messages", [])
    for m in messages:
        sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    return messages


class Receiver:
    """An HTTP endpoint on a free port keeping every POST it is sent."""

    def __init__(self):
        self.posts = []  # (headers, body as JSON)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.posts.append((dict(self.headers), json.loads(body)))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sns"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def of_type(self, kind):
        with self.lock:
            return [doc for (headers, doc) in self.posts
                    if headers.get("x-amz-sns-message-type") == kind and doc["Type"] == kind]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def follow(url):
    """GETs a link as a browser or curl would: no signature."""
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_topics_are_created_listed_described_and_deleted(sns):
    arn = sns.create_topic(Name="alerts")["TopicArn"]
    assert arn == f"arn:aws:sns:{REGION}:{ACCOUNT}:alerts"
    # Creating it again answers the same topic, attributes or not.
    assert sns.create_topic(Name="alerts", Attributes={"DisplayName": "Alerts"})["TopicArn"] == arn

    attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
    assert attributes["TopicArn"] == arn
    assert attributes["Owner"] == ACCOUNT
    assert attributes["SubscriptionsConfirmed"] == "0"
    assert attributes["SubscriptionsPending"] == "0"
    assert attributes["SubscriptionsDeleted"] == "0"
    policy = json.loads(attributes["EffectiveDeliveryPolicy"])
    assert policy["http"]["defaultHealthyRetryPolicy"]["backoffFunction"] == "exponential"

    # ListTopics pages by 100.
    for i in range(104):
        sns.create_topic(Name=f"t{i:03d}")
    first = sns.list_topics()
    assert len(first["Topics"]) == 100 and first["NextToken"]
    second = sns.list_topics(NextToken=first["NextToken"])
    assert "NextToken" not in second
    listed = [t["TopicArn"] for t in first["Topics"] + second["Topics"]]
    assert len(listed) == 105 and len(set(listed)) == 105 and arn in listed
    paged = [t["TopicArn"] for page in sns.get_paginator("list_topics").paginate() for t in page["Topics"]]
    assert paged == listed

    sns.delete_topic(TopicArn=arn)
    assert error_of(sns.get_topic_attributes, TopicArn=arn)[:2] == ("NotFound", 404)
    # Deleting a topic that is not there succeeds, as in SNS.
    sns.delete_topic(TopicArn=arn)
    assert arn not in [t["TopicArn"] for t in sns.list_topics()["Topics"]]

    for name in ["orders.fifo", "bad name", "a" * 257]:
        code, status, message = error_of(sns.create_topic, Name=name)
        assert (code, status) == ("InvalidParameter", 400), name
    assert "FIFO topics are not supported" in error_of(sns.create_topic, Name="orders.fifo")[2]


def test_a_filtered_raw_sqs_subscription_gets_only_matching_messages(sns, sqs):
    topic = sns.create_topic(Name="readings")["TopicArn"]
    url, queue_arn = queue(sqs, "hot-readings")
    sub = sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
        Attributes={
            "FilterPolicy": json.dumps({"severity": ["high"], "temp": [{"numeric": [">", 50]}]}),
            "RawMessageDelivery": "true",
        },
    )["SubscriptionArn"]
    assert sub.startswith(f"{topic}:")
    # The same endpoint and attributes answer the same subscription.
    assert sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
        Attributes={
            "FilterPolicy": json.dumps({"severity": ["high"], "temp": [{"numeric": [">", 50]}]}),
            "RawMessageDelivery": "true",
        },
    )["SubscriptionArn"] == sub

    attributes = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attributes["TopicArn"] == topic
    assert attributes["Protocol"] == "sqs" and attributes["Endpoint"] == queue_arn
    assert attributes["PendingConfirmation"] == "false"
    assert attributes["RawMessageDelivery"] == "true"
    assert json.loads(attributes["FilterPolicy"]) == {"severity": ["high"], "temp": [{"numeric": [">", 50]}]}
    assert attributes["FilterPolicyScope"] == "MessageAttributes"
    listed = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
    assert listed == [{
        "SubscriptionArn": sub, "Owner": ACCOUNT, "Protocol": "sqs",
        "Endpoint": queue_arn, "TopicArn": topic,
    }]
    assert sub in [s["SubscriptionArn"] for s in sns.list_subscriptions()["Subscriptions"]]

    def attrs(severity, temp):
        return {
            "severity": {"DataType": "String", "StringValue": severity},
            "temp": {"DataType": "Number", "StringValue": str(temp)},
            "raw": {"DataType": "Binary", "BinaryValue": bytes([0, 1, 254])},
        }

    sns.publish(TopicArn=topic, Message="cold", MessageAttributes=attrs("high", 20))
    sns.publish(TopicArn=topic, Message="calm", MessageAttributes=attrs("low", 90))
    hot = sns.publish(TopicArn=topic, Message='{"temp": 91}', MessageAttributes=attrs("high", 91))
    assert len(hot["MessageId"]) == 36

    messages = receive(sqs, url, 1)
    assert [m["Body"] for m in messages] == ['{"temp": 91}'], "only the matching message, raw"
    got = messages[0]["MessageAttributes"]
    assert got["severity"] == {"DataType": "String", "StringValue": "high"}
    assert got["temp"] == {"DataType": "Number", "StringValue": "91"}
    assert got["raw"] == {"DataType": "Binary", "BinaryValue": bytes([0, 1, 254])}

    # A new filter applies to what is published next.
    sns.set_subscription_attributes(
        SubscriptionArn=sub, AttributeName="FilterPolicy",
        AttributeValue=json.dumps({"severity": ["low"]}),
    )
    assert json.loads(sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["FilterPolicy"]) == {"severity": ["low"]}
    sns.publish(TopicArn=topic, Message="now-high", MessageAttributes=attrs("high", 99))
    sns.publish(TopicArn=topic, Message="now-low", MessageAttributes=attrs("low", 1))
    assert [m["Body"] for m in receive(sqs, url, 1)] == ["now-low"]

    sns.unsubscribe(SubscriptionArn=sub)
    assert sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"] == []
    assert error_of(sns.get_subscription_attributes, SubscriptionArn=sub)[:2] == ("NotFound", 404)


def test_without_raw_delivery_the_queue_gets_snss_envelope(sns, sqs):
    topic = sns.create_topic(Name="orders")["TopicArn"]
    url, queue_arn = queue(sqs, "order-log")
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)["SubscriptionArn"]
    attributes = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert attributes["RawMessageDelivery"] == "false"
    assert "FilterPolicy" not in attributes

    sent = sns.publish(
        TopicArn=topic, Message="order 17 shipped", Subject="Shipped",
        MessageAttributes={"region": {"DataType": "String", "StringValue": "eu"}},
    )["MessageId"]
    [message] = receive(sqs, url, 1)
    envelope = json.loads(message["Body"])
    assert envelope["Type"] == "Notification"
    assert envelope["MessageId"] == sent
    assert envelope["TopicArn"] == topic
    assert envelope["Message"] == "order 17 shipped"
    assert envelope["Subject"] == "Shipped"
    assert envelope["MessageAttributes"] == {"region": {"Type": "String", "Value": "eu"}}
    assert envelope["UnsubscribeURL"].endswith(f"Action=Unsubscribe&SubscriptionArn={sub.replace(':', '%3A')}")


def test_an_http_subscription_is_confirmed_by_its_subscribe_url(sns):
    receiver = Receiver()
    try:
        topic = sns.create_topic(Name="webhooks")["TopicArn"]
        assert sns.subscribe(TopicArn=topic, Protocol="http", Endpoint=receiver.url)["SubscriptionArn"] == "pending confirmation"
        # Asked again, it answers the same (still pending) subscription's ARN.
        sub = sns.subscribe(
            TopicArn=topic, Protocol="http", Endpoint=receiver.url, ReturnSubscriptionArn=True,
        )["SubscriptionArn"]
        assert sub.startswith(f"{topic}:")
        assert sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["PendingConfirmation"] == "true"
        [listed] = sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"]
        assert listed["SubscriptionArn"] == "PendingConfirmation"
        assert (listed["Protocol"], listed["Endpoint"]) == ("http", receiver.url)
        assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["SubscriptionsPending"] == "1"

        [confirmation] = wait_for(lambda: receiver.of_type("SubscriptionConfirmation"), "the confirmation")
        assert confirmation["TopicArn"] == topic and confirmation["Token"]
        status, text = follow(confirmation["SubscribeURL"])
        assert status == 200, text
        assert "<ConfirmSubscriptionResponse" in text and f"<SubscriptionArn>{sub}</SubscriptionArn>" in text

        attributes = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
        assert attributes["PendingConfirmation"] == "false"
        assert sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"][0]["SubscriptionArn"] == sub
        assert sns.get_topic_attributes(TopicArn=topic)["Attributes"]["SubscriptionsConfirmed"] == "1"

        sent = sns.publish(TopicArn=topic, Message="hello, webhook", Subject="Greeting")["MessageId"]
        [notification] = wait_for(lambda: receiver.of_type("Notification"), "the notification")
        assert notification["MessageId"] == sent
        assert notification["Message"] == "hello, webhook"
        assert notification["Subject"] == "Greeting"
        assert notification["TopicArn"] == topic

        # The token is used up; a made-up one confirms nothing.
        code, status, _ = error_of(sns.confirm_subscription, TopicArn=topic, Token="0" * 64)
        assert (code, status) == ("InvalidParameter", 400)

        status, text = follow(notification["UnsubscribeURL"])
        assert status == 200 and "<UnsubscribeResponse" in text, text
        assert sns.list_subscriptions_by_topic(TopicArn=topic)["Subscriptions"] == []
    finally:
        receiver.close()


def test_publish_batch_answers_each_entry(sns, sqs):
    topic = sns.create_topic(Name="batch")["TopicArn"]
    url, queue_arn = queue(sqs, "batch-in")
    sns.subscribe(
        TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
        Attributes={"RawMessageDelivery": "true"},
    )
    answer = sns.publish_batch(TopicArn=topic, PublishBatchRequestEntries=[
        {"Id": "one", "Message": "first",
         "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "1"}}},
        {"Id": "bad", "Message": "second",
         "MessageAttributes": {"n": {"DataType": "Number", "StringValue": "not a number"}}},
        {"Id": "three", "Message": "third", "Subject": "s"},
    ])
    assert sorted(s["Id"] for s in answer["Successful"]) == ["one", "three"]
    assert all(len(s["MessageId"]) == 36 for s in answer["Successful"])
    [failed] = answer["Failed"]
    assert failed["Id"] == "bad" and failed["Code"] == "InvalidParameter" and failed["SenderFault"] is True
    assert "MessageAttributes" in failed["Message"]
    assert sorted(m["Body"] for m in receive(sqs, url, 2)) == ["first", "third"]

    entries = [{"Id": f"e{i}", "Message": "m"} for i in range(11)]
    assert error_of(sns.publish_batch, TopicArn=topic, PublishBatchRequestEntries=entries)[:2] == (
        "TooManyEntriesInBatchRequest", 400)
    twice = [{"Id": "same", "Message": "a"}, {"Id": "same", "Message": "b"}]
    assert error_of(sns.publish_batch, TopicArn=topic, PublishBatchRequestEntries=twice)[:2] == (
        "BatchEntryIdsNotDistinct", 400)
    # botocore refuses an empty list itself; without its check, SNS's code.
    unchecked = client_like(sns, parameter_validation=False)
    assert error_of(unchecked.publish_batch, TopicArn=topic, PublishBatchRequestEntries=[])[:2] == (
        "EmptyBatchRequest", 400)


def client_like(sns, **config):
    return boto3.client(
        "sns", endpoint_url=sns.meta.endpoint_url, region_name=REGION,
        config=Config(signature_version=botocore.UNSIGNED, retries={"max_attempts": 1}, **config),
    )


def test_refusals_get_snss_error_codes(sns, sqs):
    topic = sns.create_topic(Name="checked")["TopicArn"]
    _, queue_arn = queue(sqs, "checked-q")
    missing = f"arn:aws:sns:{REGION}:{ACCOUNT}:nope"

    assert error_of(sns.publish, TopicArn=missing, Message="m")[:2] == ("NotFound", 404)
    assert error_of(sns.subscribe, TopicArn=missing, Protocol="sqs", Endpoint=queue_arn)[:2] == ("NotFound", 404)
    assert error_of(sns.list_subscriptions_by_topic, TopicArn=missing)[:2] == ("NotFound", 404)

    code, status, message = error_of(
        sns.subscribe, TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
        Attributes={"FilterPolicy": json.dumps({"severity": [{"prefix": 1}]})},
    )
    assert (code, status) == ("InvalidParameter", 400)
    assert "FilterPolicy" in message and "severity" in message, message
    code, _, message = error_of(
        sns.subscribe, TopicArn=topic, Protocol="sqs", Endpoint=queue_arn,
        Attributes={"FilterPolicy": "{not json"},
    )
    assert code == "InvalidParameter" and "FilterPolicy" in message

    for protocol, endpoint in [("email", "ops@example.com"), ("sms", "+15555550100"),
                               ("lambda", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:f")]:
        code, status, message = error_of(sns.subscribe, TopicArn=topic, Protocol=protocol, Endpoint=endpoint)
        assert (code, status) == ("InvalidParameter", 400), protocol
        assert protocol in message, message
    assert error_of(sns.subscribe, TopicArn=topic, Protocol="http", Endpoint="https://x.example/h")[0] == "InvalidParameter"
    code, _, message = error_of(sns.subscribe, TopicArn=topic, Protocol="sqs",
                                Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT}:no-such-queue")
    assert code == "InvalidParameter" and "Endpoint" in message and "no-such-queue" in message

    code, _, message = error_of(sns.subscribe, TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={
        "DeliveryPolicy": json.dumps({"healthyRetryPolicy": {"numRetries": 500}})})
    assert code == "InvalidParameter" and "DeliveryPolicy" in message
    sub = sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={
        "DeliveryPolicy": json.dumps({"healthyRetryPolicy": {
            "numRetries": 5, "minDelayTarget": 1, "maxDelayTarget": 10, "backoffFunction": "exponential"}}),
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": queue_arn}),
    })["SubscriptionArn"]
    attributes = sns.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]
    assert json.loads(attributes["DeliveryPolicy"])["healthyRetryPolicy"]["numRetries"] == 5
    assert json.loads(attributes["EffectiveDeliveryPolicy"]) == json.loads(attributes["DeliveryPolicy"])
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": queue_arn}
    assert error_of(sns.set_subscription_attributes, SubscriptionArn=sub,
                    AttributeName="Nonsense", AttributeValue="x")[0] == "InvalidParameter"
    # Subscribing the same queue with other attributes is refused, as in SNS.
    assert error_of(sns.subscribe, TopicArn=topic, Protocol="sqs", Endpoint=queue_arn)[0] == "InvalidParameter"

    assert error_of(sns.publish, PhoneNumber="+15555550100", Message="m")[0] == "InvalidParameter"
    assert error_of(sns.publish, TopicArn=topic, Message="m", MessageStructure="json")[0] == "InvalidParameter"
    assert error_of(sns.publish, TopicArn=topic, Message="m", Subject="two\nlines")[0] == "InvalidParameter"
    eleven = {f"a{i}": {"DataType": "String", "StringValue": "v"} for i in range(11)}
    code, _, message = error_of(sns.publish, TopicArn=topic, Message="m", MessageAttributes=eleven)
    assert code == "InvalidParameter" and "exceeds the allowed maximum [10]" in message
    code, _, message = error_of(sns.publish, TopicArn=topic, Message="x" * (256 * 1024 + 1))
    assert code == "InvalidParameter" and "Message too long" in message
    assert error_of(sns.get_subscription_attributes, SubscriptionArn=f"{topic}:nope")[:2] == ("NotFound", 404)

    # GET follows only the links; any other action is a POST.
    status, text = follow(f"{sns.meta.endpoint_url}/?Action=ListTopics")
    assert status == 400 and "<Code>InvalidAction</Code>" in text


def test_signed_callers_and_links_with_anonymous_access_off():
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "tidewire.toml")
        with open(config, "w") as f:
            f.write("""
[auth]
allow_anonymous = false

[aws]
account_id = "123456789012"

[[aws.credentials]]
access_key_id = "AKIDROOT"
secret_access_key = "root-secret"

[[aws.credentials]]
access_key_id = "AKIDPUB"
secret_access_key = "pub-secret"
user = "publisher"

[[users]]
username = "publisher"
topics = ["news"]
""")
        server = Tidewire(os.path.join(tmp, "data"), config).start()
        receiver = Receiver()
        try:
            root = client(server, "sns", "eu-west-1", "AKIDROOT", "root-secret")
            publisher = client(server, "sns", "eu-west-1", "AKIDPUB", "pub-secret")
            news = root.create_topic(Name="news")["TopicArn"]
            # ARNs carry the region the request was signed in.
            assert news == "arn:aws:sns:eu-west-1:123456789012:news"
            other = root.create_topic(Name="other")["TopicArn"]

            assert error_of(publisher.create_topic, Name="mine")[:2] == ("AuthorizationError", 403)
            assert error_of(publisher.delete_topic, TopicArn=news)[:2] == ("AuthorizationError", 403)
            assert error_of(publisher.subscribe, TopicArn=news, Protocol="http",
                            Endpoint=receiver.url)[:2] == ("AuthorizationError", 403)
            assert publisher.publish(TopicArn=news, Message="m")["MessageId"]
            assert error_of(publisher.publish, TopicArn=other, Message="m")[:2] == ("AuthorizationError", 403)
            assert len(publisher.list_topics()["Topics"]) == 2
            assert error_of(client(server, "sns").list_topics)[0] == "MissingAuthenticationToken"

            sub = root.subscribe(TopicArn=news, Protocol="http", Endpoint=receiver.url,
                                 ReturnSubscriptionArn=True)["SubscriptionArn"]
            [confirmation] = wait_for(lambda: receiver.of_type("SubscriptionConfirmation"), "the confirmation")
            # The unsigned link works: its token is its credential.
            status, text = follow(confirmation["SubscribeURL"])
            assert status == 200, text
            assert root.get_subscription_attributes(SubscriptionArn=sub)["Attributes"]["PendingConfirmation"] == "false"
            # Other unsigned requests are still refused.
            base = f"http://127.0.0.1:{server.http_port}"
            status, text = follow(f"{base}/?Action=ListTopics")
            assert status == 400 and "InvalidAction" in text
            status, text = follow(f"{base}/?Action=ConfirmSubscription&TopicArn={news}&Token=bad")
            assert status == 400 and "<Code>InvalidParameter</Code>" in text

            publisher.publish(TopicArn=news, Message="signed news")
            [notification] = wait_for(lambda: receiver.of_type("Notification"), "the notification")
            assert notification["Message"] == "signed news"
            status, text = follow(notification["UnsubscribeURL"])
            assert status == 200, text
            assert root.list_subscriptions_by_topic(TopicArn=news)["Subscriptions"] == []
        finally:
            receiver.close()
            server.stop()
