//! The SNS-compatible endpoint: the Query protocol (a form `POST /` with
//! `Action=...`, answered in XML) over the fan-out topics
//! ([`tidewire_topics`]), answering the AWS SDKs and CLI unchanged. The
//! `SubscribeURL` and `UnsubscribeURL` links of SNS's documents are the
//! same actions followed with `GET /?Action=...`.
//!
//! - [`topics`]: create, delete, list, topic attributes;
//! - [`subscriptions`]: subscribe (http, https, sqs), confirm,
//!   unsubscribe, lists, subscription attributes;
//! - [`publish`]: publish, publish batches;
//! - [`context`]: ARNs and the caller's permissions;
//! - [`form`], [`message_attributes`], [`attributes`], [`paging`]: the
//!   request's shapes and the subscription attributes' translations;
//! - [`xml`]: the answers; [`errors`]: SNS's error codes.

mod attributes;
mod context;
mod errors;
mod form;
mod message_attributes;
mod paging;
mod publish;
mod subscriptions;
mod topics;
mod xml;

use axum::response::Response;

pub use context::Context;
pub use form::Form;

/// An SNS action this endpoint serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    CreateTopic,
    DeleteTopic,
    ListTopics,
    GetTopicAttributes,
    Subscribe,
    ConfirmSubscription,
    Unsubscribe,
    ListSubscriptions,
    ListSubscriptionsByTopic,
    GetSubscriptionAttributes,
    SetSubscriptionAttributes,
    Publish,
    PublishBatch,
}

impl Action {
    /// The action called `name`, if SNS's and served here.
    pub fn named(name: &str) -> Option<Action> {
        Some(match name {
            "CreateTopic" => Action::CreateTopic,
            "DeleteTopic" => Action::DeleteTopic,
            "ListTopics" => Action::ListTopics,
            "GetTopicAttributes" => Action::GetTopicAttributes,
            "Subscribe" => Action::Subscribe,
            "ConfirmSubscription" => Action::ConfirmSubscription,
            "Unsubscribe" => Action::Unsubscribe,
            "ListSubscriptions" => Action::ListSubscriptions,
            "ListSubscriptionsByTopic" => Action::ListSubscriptionsByTopic,
            "GetSubscriptionAttributes" => Action::GetSubscriptionAttributes,
            "SetSubscriptionAttributes" => Action::SetSubscriptionAttributes,
            "Publish" => Action::Publish,
            "PublishBatch" => Action::PublishBatch,
            _ => return None,
        })
    }

    /// True for the actions SNS's documents link to (`SubscribeURL`,
    /// `UnsubscribeURL`), which may be followed with `GET`.
    pub fn is_link(self) -> bool {
        matches!(self, Action::ConfirmSubscription | Action::Unsubscribe)
    }
}

/// Runs `action` on a request's `form`, answering in XML.
pub async fn handle(ctx: &Context<'_>, action: Action, form: &Form, request_id: &str) -> Response {
    let answered = match action {
        Action::CreateTopic => topics::create(ctx, form).await,
        Action::DeleteTopic => topics::delete(ctx, form).await,
        Action::ListTopics => topics::list(ctx, form),
        Action::GetTopicAttributes => topics::get_attributes(ctx, form),
        Action::Subscribe => subscriptions::subscribe(ctx, form).await,
        Action::ConfirmSubscription => subscriptions::confirm(ctx, form).await,
        Action::Unsubscribe => subscriptions::unsubscribe(ctx, form).await,
        Action::ListSubscriptions => subscriptions::list(ctx, form),
        Action::ListSubscriptionsByTopic => subscriptions::list_by_topic(ctx, form),
        Action::GetSubscriptionAttributes => subscriptions::get_attributes(ctx, form),
        Action::SetSubscriptionAttributes => subscriptions::set_attributes(ctx, form).await,
        Action::Publish => publish::publish(ctx, form).await,
        Action::PublishBatch => publish::publish_batch(ctx, form).await,
    };
    match answered {
        Ok(answer) => answer.into_response(request_id),
        Err(error) => error.to_query_xml(request_id),
    }
}
