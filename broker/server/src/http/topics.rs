//! `/api/v1/topics`: fan-out topics and their subscriptions.
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/topics` | every topic, with its subscriptions and their figures |
//! | `POST /api/v1/topics` | create (a `[[topics]]` entry as JSON; admin) |
//! | `GET`, `DELETE /api/v1/topics/{name}` | one topic; delete (admin) |
//! | `POST /api/v1/topics/{name}/publish` | publish the body; `?subject=`, `?attr.NAME=VALUE` |
//! | `GET`, `POST /api/v1/topics/{name}/subscriptions` | list; subscribe (a `[[topics.subscriptions]]` entry; admin) |
//! | `GET`, `PATCH`, `DELETE /api/v1/topics/{name}/subscriptions/{sub}` | one; change (admin); unsubscribe (admin) |
//!
//! A subscription's `hmac_secret` is never shown.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use serde_json::{Map, Value};
use tidewire_auth::Principal;
use tidewire_core::{Origin, Properties, StorageError};
use tidewire_queues::Attribute;
use tidewire_topics::{
    Publication, StatusSnapshot, Subscription, SubscriptionConfig, Topic, TopicConfig, TopicError,
    Via,
};

use super::auth::{forbidden, require_admin};
use super::publish::HTTP_CLIENT_ID;
use super::streams::catalog_error;
use super::{ApiError, AppState, created, extracted, json_body, patched};

/// Largest definition.
const MAX_DEFINITION_BYTES: usize = 64 * 1024;
/// Largest publish body (a topic's own limit applies within it).
const MAX_PUBLISH_BYTES: usize = 1024 * 1024 + 64 * 1024;
/// The prefix of query parameters that are message attributes.
const ATTRIBUTE_PREFIX: &str = "attr.";

/// Every route under `/api/v1/topics`.
pub fn routes() -> Router<AppState> {
    let small = || DefaultBodyLimit::max(MAX_DEFINITION_BYTES);
    Router::new()
        .route("/api/v1/topics", get(list).post(create).layer(small()))
        .route(
            "/api/v1/topics/{name}",
            get(show).delete(remove).layer(small()),
        )
        .route(
            "/api/v1/topics/{name}/publish",
            post(publish).layer(DefaultBodyLimit::max(MAX_PUBLISH_BYTES)),
        )
        .route(
            "/api/v1/topics/{name}/subscriptions",
            get(list_subscriptions).post(subscribe).layer(small()),
        )
        .route(
            "/api/v1/topics/{name}/subscriptions/{sub}",
            get(show_subscription)
                .patch(update_subscription)
                .delete(unsubscribe)
                .layer(small()),
        )
}

/// A topic and its subscriptions.
#[derive(Debug, Serialize)]
struct TopicView {
    name: String,
    arn: String,
    /// `config` or `api` (only these can be deleted through the API).
    origin: Origin,
    /// As written in `[[topics]]`, defaults filled in, without the
    /// subscriptions.
    definition: TopicConfig,
    /// Messages it took.
    messages: u64,
    subscriptions: Vec<SubscriptionView>,
}

/// A subscription, its state and figures.
#[derive(Debug, Serialize)]
struct SubscriptionView {
    name: String,
    topic: String,
    arn: String,
    origin: Origin,
    /// `confirmed`, or `pending_confirmation` (SNS HTTP subscriptions).
    status: &'static str,
    /// As written, defaults filled in; `hmac_secret` hidden.
    definition: Value,
    stats: StatusSnapshot,
}

impl TopicView {
    fn of(state: &AppState, topic: &Topic) -> TopicView {
        let name = topic.name();
        TopicView {
            arn: state.topics.naming().topic_arn(&name),
            origin: topic.origin(),
            definition: topic.spec().config.clone(),
            messages: topic.log().stats().next_offset,
            subscriptions: topic
                .subscriptions()
                .iter()
                .map(|s| SubscriptionView::of(state, s))
                .collect(),
            name,
        }
    }
}

impl SubscriptionView {
    fn of(state: &AppState, sub: &Subscription) -> SubscriptionView {
        let name = sub.name();
        let mut definition = serde_json::to_value(&sub.spec().config).unwrap_or(Value::Null);
        if let Some(secret) = definition.get_mut("hmac_secret") {
            *secret = Value::String("(hidden)".to_owned());
        }
        SubscriptionView {
            arn: state.topics.naming().subscription_arn(sub.topic(), &name),
            topic: sub.topic().to_owned(),
            origin: sub.origin(),
            status: if sub.pending_token().is_some() {
                "pending_confirmation"
            } else {
                "confirmed"
            },
            definition,
            stats: sub.status().snapshot(),
            name,
        }
    }
}

#[derive(Debug, Serialize)]
struct TopicList {
    topics: Vec<TopicView>,
}

/// `GET /api/v1/topics`.
async fn list(State(state): State<AppState>) -> Json<TopicList> {
    let topics = state
        .topics
        .list()
        .iter()
        .map(|t| TopicView::of(&state, t))
        .collect();
    Json(TopicList { topics })
}

/// `GET /api/v1/topics/{name}`.
async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<TopicView>, ApiError> {
    let topic = state.topics.get(&name).map_err(topic_error)?;
    Ok(Json(TopicView::of(&state, &topic)))
}

/// `POST /api/v1/topics`: 201 with the new topic; 200 when one of that
/// name and definition exists (as SNS answers).
async fn create(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller, "create topics")?;
    let config: TopicConfig = json_body(&body, "invalid definition")?;
    let (topic, new) = state.topics.create(config).await.map_err(topic_error)?;
    let view = TopicView::of(&state, &topic);
    if !new {
        return Ok(Json(view).into_response());
    }
    Ok(created(format!("/api/v1/topics/{}", view.name), view))
}

/// `DELETE /api/v1/topics/{name}`: 204 once its messages and
/// subscriptions are gone.
async fn remove(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller, "delete topics")?;
    state.topics.delete(&name).await.map_err(topic_error)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Serialize)]
struct PublishedView {
    message_id: String,
}

/// `POST /api/v1/topics/{name}/publish`: the body is the message; the
/// query may give `subject` and `attr.NAME=VALUE` (`String` attributes).
/// Answers once the message is durable in the topic.
async fn publish(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<PublishedView>, ApiError> {
    if !caller.may_publish_topic(&name) {
        return Err(forbidden(format!("publish to topic {name:?}"), "topics"));
    }
    let body = extracted(body)?;
    let mut subject = None;
    let mut attributes = BTreeMap::new();
    for (key, value) in query {
        if key == "subject" {
            subject = Some(value);
        } else if let Some(attribute) = key.strip_prefix(ATTRIBUTE_PREFIX) {
            attributes.insert(
                attribute.to_owned(),
                Attribute {
                    data_type: "String".to_owned(),
                    string: Some(value),
                    binary: None,
                },
            );
        } else {
            return Err(ApiError::bad_request(format!(
                "unknown query parameter {key:?} (subject, attr.NAME)"
            )));
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let publication = Publication {
        topic: name.clone(),
        client_id: caller.username().unwrap_or(HTTP_CLIENT_ID).to_owned(),
        subject,
        body,
        attributes,
        properties: Properties {
            content_type,
            ..Properties::default()
        },
    };
    let message_id = state
        .topics
        .publish(&name, publication)
        .await
        .map_err(topic_error)?;
    Ok(Json(PublishedView { message_id }))
}

#[derive(Debug, Serialize)]
struct SubscriptionList {
    subscriptions: Vec<SubscriptionView>,
}

/// `GET /api/v1/topics/{name}/subscriptions`.
async fn list_subscriptions(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<SubscriptionList>, ApiError> {
    let topic = state.topics.get(&name).map_err(topic_error)?;
    let subscriptions = topic
        .subscriptions()
        .iter()
        .map(|s| SubscriptionView::of(&state, s))
        .collect();
    Ok(Json(SubscriptionList { subscriptions }))
}

/// `POST /api/v1/topics/{name}/subscriptions`: 201 with the new
/// subscription, delivering from the next message published; 200 when one
/// of that name and definition exists. A webhook must take a connection.
async fn subscribe(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    require_admin(&caller, "subscribe")?;
    let config: SubscriptionConfig = json_body(&body, "invalid subscription")?;
    let (sub, new) = state
        .topics
        .subscribe(&name, config, Via::Api)
        .await
        .map_err(topic_error)?;
    let view = SubscriptionView::of(&state, &sub);
    if !new {
        return Ok(Json(view).into_response());
    }
    Ok(created(
        format!("/api/v1/topics/{name}/subscriptions/{}", view.name),
        view,
    ))
}

/// `GET /api/v1/topics/{name}/subscriptions/{sub}`.
async fn show_subscription(
    State(state): State<AppState>,
    Path((name, sub)): Path<(String, String)>,
) -> Result<Json<SubscriptionView>, ApiError> {
    let sub = state
        .topics
        .subscription(&name, &sub)
        .map_err(topic_error)?;
    Ok(Json(SubscriptionView::of(&state, &sub)))
}

/// `PATCH /api/v1/topics/{name}/subscriptions/{sub}`: the fields given
/// replace the current ones (`null` restores a default); name and target
/// stay. Delivery goes on from the subscription's cursor.
async fn update_subscription(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((name, sub)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<SubscriptionView>, ApiError> {
    require_admin(&caller, "change subscriptions")?;
    let changes: Map<String, Value> = json_body(&body, "invalid change")?;
    let current = state
        .topics
        .subscription(&name, &sub)
        .map_err(topic_error)?;
    let config = patched(
        &current.spec().config,
        changes,
        &["name", "target"],
        "subscription",
    )?;
    let updated = state
        .topics
        .update_subscription(&name, config)
        .await
        .map_err(topic_error)?;
    Ok(Json(SubscriptionView::of(&state, &updated)))
}

/// `DELETE /api/v1/topics/{name}/subscriptions/{sub}`: 204.
async fn unsubscribe(
    State(state): State<AppState>,
    Extension(caller): Extension<Principal>,
    Path((name, sub)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    require_admin(&caller, "unsubscribe")?;
    state
        .topics
        .unsubscribe(&name, &sub)
        .await
        .map_err(topic_error)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The status each topic refusal deserves.
fn topic_error(e: TopicError) -> ApiError {
    let e = match e {
        TopicError::Catalog(catalog) => return catalog_error(catalog),
        other => other,
    };
    let status = match &e {
        TopicError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
        TopicError::BadToken { .. } => StatusCode::NOT_FOUND,
        TopicError::Storage(StorageError::Closed(_)) => StatusCode::SERVICE_UNAVAILABLE,
        _ if e.is_user_error() => StatusCode::BAD_REQUEST,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    if status.is_server_error() {
        tracing::error!(error = %e, "topic operation failed");
    }
    ApiError::new(status, e.to_string())
}
