//! The one auth model against the real binary: the same users, tokens and
//! rules decide over HTTP (publish, records, SQL, streams, queries), `/ws`
//! and MQTT; 401 with `WWW-Authenticate` for missing or bad credentials,
//! 403 naming the missing permission; `%u`/`%c` placeholders and deny rules.

use std::time::Duration;

use rumqttc::{AsyncClient, Event, Incoming, MqttOptions, QoS, SubscribeReasonCode};
use serde_json::json;

use super::*;

/// `users`: `reader` (publish under its name, read `events`, a denied
/// subtree), `admin` (everything), token `grafana` (read `events`).
fn config() -> String {
    let hash = |secret: &str| tidewire_auth::hash_password(secret).expect("hash");
    format!(
        r#"
[auth]
allow_anonymous = false

[[users]]
username = "reader"
password_hash = "{reader}"
publish = ["devices/%u/#", "clients/%c/#"]
subscribe = ["devices/#"]
deny = ["devices/%u/secret/#"]
sql = ["events"]

[[users]]
username = "admin"
password_hash = "{admin}"
sql = ["*"]
admin = true

[[tokens]]
name = "grafana"
token_hash = "{token}"
sql = ["events"]
"#,
        reader = hash("r-pass"),
        admin = hash("a-pass"),
        token = hash("tok-9f2"),
    )
}

/// A request as `who` (`("user", "password")`, or a token as `("", token)`).
async fn call(
    api: &Api,
    method: &str,
    path: &str,
    who: Option<(&str, &str)>,
    body: Option<Value>,
) -> (u16, Value, Vec<String>) {
    let client = api.client();
    let url = api.url(path);
    let mut request = match method {
        "GET" => client.get(url),
        "POST" => client.post(url),
        "DELETE" => client.delete(url),
        other => panic!("no {other} here"),
    };
    match who {
        Some(("", token)) => request = request.bearer_auth(token),
        Some((user, password)) => request = request.basic_auth(user, Some(password)),
        None => {}
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let challenges = response
        .headers()
        .get_all("www-authenticate")
        .iter()
        .map(|v| v.to_str().expect("text").to_owned())
        .collect();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, challenges)
}

/// The topics of every record in `events`, read as the admin.
async fn stored_topics(api: &Api) -> Vec<String> {
    let (status, body, _) = call(api, "GET", "/api/v1/streams/events/records", ADMIN, None).await;
    assert_eq!(status, 200, "{body}");
    body["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["topic"].as_str().expect("topic").to_owned())
        .collect()
}

const READER: Option<(&str, &str)> = Some(("reader", "r-pass"));
const ADMIN: Option<(&str, &str)> = Some(("admin", "a-pass"));
const GRAFANA: Option<(&str, &str)> = Some(("", "tok-9f2"));

#[tokio::test]
async fn http_answers_401_without_credentials_and_403_naming_the_permission() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), &config()).await;
    let api = Api::new(broker.http_url());

    for path in ["/api/v1/streams", "/api/v1/dashboards", "/api/v1/bridges"] {
        let (status, body, challenges) = call(&api, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path}: {body}");
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic"))
                && challenges.iter().any(|c| c.starts_with("Bearer")),
            "{challenges:?}"
        );
    }
    for who in [
        Some(("reader", "wrong")),
        Some(("nobody", "r-pass")),
        Some(("", "tok-bad")),
    ] {
        let (status, body, _) = call(&api, "GET", "/api/v1/streams", who, None).await;
        assert_eq!(status, 401);
        assert_eq!(
            body["error"], "bad credentials",
            "never says whether a user exists"
        );
    }
    for open in ["/healthz", "/metrics", "/"] {
        let response = api.client().get(api.url(open)).send().await.expect("get");
        assert_eq!(response.status(), 200, "{open} stays open");
    }

    // Publish: the rules with %u filled in; deny wins.
    let publish = |topic: &'static str| {
        let api = api.clone();
        async move {
            let path = format!("/api/v1/publish/{topic}?qos=1");
            call(&api, "POST", &path, READER, Some(json!("x"))).await
        }
    };
    assert_eq!(publish("devices/reader/temp").await.0, 200);
    for topic in ["devices/other/temp", "devices/reader/secret/key"] {
        let (status, body, _) = publish(topic).await;
        assert_eq!(status, 403, "{topic}");
        let error = body["error"].as_str().expect("error");
        assert!(error.contains("publish permission"), "{error}");
    }
    // HTTP publishes as client "http": %c rules fill in with it.
    assert_eq!(publish("clients/http/a").await.0, 200);

    // Reading: events yes, another stream no, whether by records or SQL.
    let (status, _, _) = call(
        &api,
        "POST",
        "/api/v1/streams",
        ADMIN,
        Some(json!({"name": "private"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, body, _) = call(&api, "GET", "/api/v1/streams/events/records", READER, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["records"].as_array().expect("records").len(), 2);
    let (status, body, _) =
        call(&api, "GET", "/api/v1/streams/private/records", READER, None).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("sql permission")
    );
    let sql = |who, query: &str| {
        call(
            &api,
            "POST",
            "/api/v1/sql",
            who,
            Some(json!({ "sql": query })),
        )
    };
    let (status, body, _) = sql(READER, "SELECT count(*) AS n FROM events").await;
    assert_eq!((status, &body["rows"]), (200, &json!([[2]])), "{body}");
    for query in [
        "SELECT count(*) FROM private",
        "SELECT * FROM events WHERE offset IN (SELECT offset FROM private)",
        "SELECT e.offset FROM events e JOIN private p ON e.offset = p.offset",
    ] {
        let (status, body, _) = sql(READER, query).await;
        assert_eq!(status, 403, "{query}: {body}");
        assert!(
            body["error"]
                .as_str()
                .expect("error")
                .contains("\"private\""),
            "{body}"
        );
    }
    let (status, _, _) = sql(GRAFANA, "SELECT count(*) FROM events").await;
    assert_eq!(status, 200);
    let (status, _, _) = sql(ADMIN, "SELECT count(*) FROM private").await;
    assert_eq!(status, 200);

    // Administration needs admin.
    for (method, path, body) in [
        ("POST", "/api/v1/streams", Some(json!({"name": "mine"}))),
        ("DELETE", "/api/v1/streams/private", None),
        (
            "POST",
            "/api/v1/queries",
            Some(json!({"id": "q", "sql": "SELECT count(*) FROM events", "window": "1m"})),
        ),
    ] {
        let (status, answer, _) = call(&api, method, path, READER, body.clone()).await;
        assert_eq!(status, 403, "{method} {path}: {answer}");
        let error = answer["error"].as_str().expect("error");
        assert!(error.contains("admin permission"), "{error}");
        assert_eq!(call(&api, method, path, GRAFANA, body).await.0, 403);
    }
    let (status, _, _) = call(&api, "DELETE", "/api/v1/streams/private", ADMIN, None).await;
    assert_eq!(status, 204);
    assert!(metric(&broker, "tidewire_auth_failures_total").await >= 6.0);
}

#[tokio::test]
async fn mqtt_uses_the_same_users_and_rules() {
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = start_with(dir.path(), &config()).await;
    let api = Api::new(broker.http_url());
    let addr = broker.mqtt_addr();
    let connect = |id: &str, user: Option<(&str, &str)>| {
        let mut options = MqttOptions::new(id, addr.ip().to_string(), addr.port());
        options.set_keep_alive(Duration::from_secs(30));
        if let Some((u, p)) = user {
            options.set_credentials(u, p);
        }
        AsyncClient::new(options, 10)
    };

    let (_anonymous, mut events) = connect("anon", None);
    let refused = loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("an answer")
        {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => break Some(ack.code),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    assert_ne!(refused, Some(rumqttc::ConnectReturnCode::Success));

    let (client, mut events) = connect("dev-1", READER);
    client
        .subscribe("devices/reader/secret/#", QoS::AtLeastOnce)
        .await
        .expect("queue");
    client
        .subscribe("devices/#", QoS::AtLeastOnce)
        .await
        .expect("queue");
    client
        .subscribe("devices/+/temp", QoS::AtLeastOnce)
        .await
        .expect("queue");
    for topic in [
        "devices/reader/a",
        "clients/dev-1/b",
        "devices/reader/secret/c",
        "devices/x/d",
    ] {
        client
            .publish(topic, QoS::AtLeastOnce, false, topic)
            .await
            .expect("queue");
    }
    let mut acks = Vec::new();
    let mut pubacks = 0;
    while acks.len() < 3 || pubacks < 2 {
        match tokio::time::timeout(Duration::from_secs(10), events.poll())
            .await
            .expect("in time")
            .expect("connected")
        {
            Event::Incoming(Incoming::SubAck(ack)) => acks.push(ack.return_codes[0]),
            Event::Incoming(Incoming::PubAck(_)) => pubacks += 1,
            _ => {}
        }
    }
    assert_eq!(
        acks,
        [
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce)
        ],
        "denied subtree, a filter that could reach it, and one that cannot"
    );
    // Only the allowed publishes were stored.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        stored_topics(&api).await,
        ["devices/reader/a", "clients/dev-1/b"]
    );
}

#[tokio::test]
async fn a_reload_reaches_connected_clients_and_a_bad_file_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let hash = |secret: &str| tidewire_auth::hash_password(secret).expect("hash");
    let (dev, admin) = (hash("d-pass"), hash("a-pass"));
    let config_with = |publish: &str| {
        format!(
            "[auth]\nallow_anonymous = false\n\
             [[users]]\nusername = \"dev\"\npassword_hash = \"{dev}\"\npublish = [\"{publish}\"]\n\
             [[users]]\nusername = \"admin\"\npassword_hash = \"{admin}\"\nsql = [\"*\"]\nadmin = true\n"
        )
    };
    let broker = start_with(dir.path(), &config_with("a/#")).await;
    let api = Api::new(broker.http_url());
    let addr = broker.mqtt_addr();
    let mut options = MqttOptions::new("dev-1", addr.ip().to_string(), addr.port());
    options.set_credentials("dev", "d-pass");
    let (client, mut events) = AsyncClient::new(options, 10);
    let mut pubacks = 0;
    let mut publish = async |topic: &str| {
        client
            .publish(topic, QoS::AtLeastOnce, false, topic.to_owned())
            .await
            .expect("queue");
        let goal = pubacks + 1;
        while pubacks < goal {
            let event = tokio::time::timeout(Duration::from_secs(10), events.poll())
                .await
                .expect("in time")
                .expect("connected");
            if let Event::Incoming(Incoming::PubAck(_)) = event {
                pubacks += 1;
            }
        }
    };
    publish("a/1").await;

    // The same connection, new rules: a/ is revoked, b/ granted.
    std::fs::write(dir.path().join("tidewire.toml"), config_with("b/#")).expect("write");
    let (status, body, _) = call(&api, "POST", "/api/v1/admin/reload", ADMIN, None).await;
    assert_eq!(status, 200, "{body}");
    let (status, _, _) = call(
        &api,
        "POST",
        "/api/v1/admin/reload",
        Some(("dev", "d-pass")),
        None,
    )
    .await;
    assert_eq!(status, 403, "reloading needs admin");
    publish("a/2").await;
    publish("b/1").await;

    // A bad file, by SIGHUP: refused with check-config's error, rules kept.
    std::fs::write(
        dir.path().join("tidewire.toml"),
        "[auth]\nallow_anonymus = true\n",
    )
    .expect("write");
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &broker.pid().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    let mut logged = false;
    for _ in 0..100 {
        if broker.log().contains("config not reloaded") {
            logged = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(logged, "{}", broker.log());
    assert!(broker.log().contains("allow_anonymus"), "names the key");
    publish("b/2").await;
    let (status, body, _) = call(&api, "POST", "/api/v1/admin/reload", ADMIN, None).await;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("allow_anonymus")
    );

    assert_eq!(
        stored_topics(&api).await,
        ["a/1", "b/1", "b/2"],
        "a/2 was refused after the reload"
    );
}
