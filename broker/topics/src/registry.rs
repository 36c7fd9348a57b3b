//! All topics: opening them and their subscriptions at start-up, creating
//! and deleting both at run time through the catalog (sections `topics`
//! and `subscriptions` of `DATA_DIR/catalog.json`, the same crash-safe
//! order as streams and queues), confirming SNS subscriptions, publishing,
//! and taking published messages into topics by MQTT topic from every
//! ingest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, Weak};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use tidewire_core::{
    Catalog, CatalogError, ConfigError, Enqueue, Message, Origin, PublishError, QueuedAppend,
    Source,
};
use tidewire_delivery::Start;
use tidewire_queues::Attribute;
use tidewire_storage::{OnFatal, StorageMetrics};
use tidewire_targets::{Delivery, TargetSpec, Targets};

use crate::config::{SubscriptionConfig, SubscriptionSpec, TopicConfig, TopicSpec};
use crate::envelope::{self, Naming};
use crate::error::TopicError;
use crate::message;
use crate::metrics::TopicMetrics;
use crate::sink::Shape;
use crate::subscription::Subscription;
use crate::topic::{Publication, Topic};

/// The catalog's section for topics made through the API.
const TOPICS: &str = "topics";
/// The catalog's section for subscriptions made through the API.
const SUBSCRIPTIONS: &str = "subscriptions";
/// Default most topics.
pub const DEFAULT_MAX_TOPICS: usize = 1000;
/// Default most subscriptions per topic.
pub const DEFAULT_MAX_SUBSCRIPTIONS: usize = 1000;

/// Limits on what the API can create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    /// Most topics (config and API together): `limits.max_topics`.
    pub max_topics: usize,
    /// Most subscriptions per topic: `limits.max_subscriptions`.
    pub max_subscriptions: usize,
}

impl Default for TopicLimits {
    fn default() -> Self {
        TopicLimits {
            max_topics: DEFAULT_MAX_TOPICS,
            max_subscriptions: DEFAULT_MAX_SUBSCRIPTIONS,
        }
    }
}

/// How a subscription is made, which decides whether it must be confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// The config file or tidewire's API: confirmed at once; a webhook
    /// must answer a connection first.
    Api,
    /// SNS `Subscribe`: an HTTP(S) subscription waits for its endpoint to
    /// visit the `SubscribeURL` of a `SubscriptionConfirmation`, which
    /// points at `endpoint` (the base URL the request came in on, e.g.
    /// `http://10.0.0.5:8080`).
    Sns {
        /// The broker's base URL as the subscriber should reach it.
        endpoint: String,
    },
}

/// A subscription as the catalog keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SubscriptionRecord {
    topic: String,
    subscription: SubscriptionConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_token: Option<String>,
}

/// Everything `Topics::open` needs.
#[derive(Clone)]
pub struct TopicsSetup {
    /// The run-time catalog.
    pub catalog: Catalog,
    /// Where targets come from.
    pub targets: Targets,
    /// Storage metrics for the topics' logs.
    pub storage: StorageMetrics,
    /// What a log does when its disk fails.
    pub on_fatal: OnFatal,
    /// The metric families.
    pub metrics: TopicMetrics,
    /// ARNs and links.
    pub naming: Naming,
    /// API limits.
    pub limits: TopicLimits,
}

impl std::fmt::Debug for TopicsSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicsSetup")
            .field("naming", &self.naming)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// All topics. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Topics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    setup: TopicsSetup,
    dir: PathBuf,
    open: RwLock<Arc<BTreeMap<String, Arc<Topic>>>>,
    /// True when some topic takes published messages: the publish path's
    /// check when none does is one load.
    fed_by_topics: AtomicBool,
    changes: tokio::sync::Mutex<()>,
}

impl Topics {
    /// Opens every topic the config defines and the catalog holds, with
    /// their subscriptions, finishing deletions a crash interrupted, and
    /// starts delivery.
    pub async fn open(setup: TopicsSetup, configs: &[TopicConfig]) -> Result<Topics, TopicError> {
        let catalog = setup.catalog.clone();
        let dir = catalog.data_dir().join("topics");
        for name in catalog.file().deleting(TOPICS) {
            catalog.discard(&dir.join(&name)).map_err(|e| {
                TopicError::State(format!("finishing the deletion of topic {name:?}: {e}"))
            })?;
            catalog.file().end_delete(TOPICS, &name)?;
        }
        for key in catalog.file().deleting(SUBSCRIPTIONS) {
            if let Some((topic, name)) = key.split_once('/') {
                let _ = std::fs::remove_file(
                    dir.join(topic)
                        .join("subscriptions")
                        .join(format!("{name}.cursor")),
                );
            }
            catalog.file().end_delete(SUBSCRIPTIONS, &key)?;
        }
        let mut specs: Vec<(TopicSpec, Origin, Vec<SubscriptionConfig>)> = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let spec = config.validate(&format!("topics[{i}]"))?;
            if specs.iter().any(|(s, _, _)| s.name() == spec.name()) {
                return Err(ConfigError::new(
                    format!("topics[{i}].name"),
                    format!("a topic named {:?} is defined twice", spec.name()),
                )
                .into());
            }
            specs.push((spec, Origin::Config, config.subscriptions.clone()));
        }
        for (name, value) in catalog.file().entries(TOPICS) {
            if specs.iter().any(|(s, _, _)| s.name() == name) {
                tracing::warn!(topic = %name, "the config file defines this topic; its catalog entry is not used");
                continue;
            }
            let config: TopicConfig =
                serde_json::from_value(value).map_err(|e| damaged(&catalog, &name, &e))?;
            let spec = config.validate(&format!("catalog topics.{name}"))?;
            specs.push((spec, Origin::Api, Vec::new()));
        }
        let topics = Topics {
            inner: Arc::new(Inner {
                setup,
                dir,
                open: RwLock::default(),
                fed_by_topics: AtomicBool::new(false),
                changes: tokio::sync::Mutex::new(()),
            }),
        };
        let mut open = BTreeMap::new();
        let mut subscriptions = Vec::new();
        for (i, (spec, origin, subs)) in specs.into_iter().enumerate() {
            let name = spec.name().to_owned();
            let topic = Arc::new(topics.open_topic(spec, origin)?);
            for (j, sub) in subs.into_iter().enumerate() {
                let key = format!("topics[{i}].subscriptions[{j}]");
                let spec = sub.validate(&key)?;
                if topic.subscription(&sub.name).is_some()
                    || subscriptions.iter().any(
                        |(t, s, _, _, _): &(String, SubscriptionSpec, _, _, _)| {
                            *t == name && s.config.name == sub.name
                        },
                    )
                {
                    return Err(ConfigError::new(
                        format!("{key}.name"),
                        format!("topic {name:?} has two subscriptions named {:?}", sub.name),
                    )
                    .into());
                }
                subscriptions.push((name.clone(), spec, Origin::Config, None, key));
            }
            open.insert(name, topic);
        }
        for (key, value) in catalog.file().entries(SUBSCRIPTIONS) {
            let record: SubscriptionRecord =
                serde_json::from_value(value).map_err(|e| damaged(&catalog, &key, &e))?;
            if !open.contains_key(&record.topic) {
                tracing::warn!(subscription = %key, "its topic is gone; the subscription is not used");
                continue;
            }
            if subscriptions.iter().any(|(t, s, _, _, _)| {
                *t == record.topic && s.config.name == record.subscription.name
            }) {
                tracing::warn!(subscription = %key, "the config file defines this subscription; its catalog entry is not used");
                continue;
            }
            let spec = record
                .subscription
                .validate(&format!("catalog subscriptions.{key}"))?;
            subscriptions.push((record.topic, spec, Origin::Api, record.pending_token, key));
        }
        topics.publish_open(open);
        for (topic, spec, origin, pending, key) in subscriptions {
            let topic = topics.get(&topic)?;
            let configured = origin == Origin::Config;
            match topics.shape(&topic, &spec, &key) {
                Ok(shape) => {
                    topics
                        .attach(&topic, spec, origin, pending, Some(shape), Start::Latest)
                        .await;
                }
                Err(e) if configured => return Err(e),
                Err(e) => {
                    tracing::error!(subscription = %key, error = %e, "subscription not started");
                    let sub = topics
                        .attach(&topic, spec, origin, pending, None, Start::Latest)
                        .await;
                    sub.status().failed(&e.to_string());
                }
            }
        }
        Ok(topics)
    }

    fn open_topic(&self, spec: TopicSpec, origin: Origin) -> Result<Topic, TopicError> {
        let setup = &self.inner.setup;
        let name = spec.name().to_owned();
        Topic::open(
            &self.inner.dir.join(&name),
            spec,
            origin,
            &setup.storage,
            setup.on_fatal.clone(),
            setup.metrics.published(&name),
        )
    }

    fn snapshot(&self) -> Arc<BTreeMap<String, Arc<Topic>>> {
        Arc::clone(&self.inner.open.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn publish_open(&self, open: BTreeMap<String, Arc<Topic>>) {
        let fed = open.values().any(|t| !t.spec().from.is_empty());
        *self.inner.open.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(open);
        self.inner.fed_by_topics.store(fed, Ordering::Relaxed);
    }

    fn edit(&self, edit: impl FnOnce(&mut BTreeMap<String, Arc<Topic>>)) {
        let mut next = (*self.snapshot()).clone();
        edit(&mut next);
        self.publish_open(next);
    }

    /// ARNs and links.
    pub fn naming(&self) -> &Naming {
        &self.inner.setup.naming
    }

    /// Every topic, by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.snapshot().values().cloned().collect()
    }

    /// The topic called `name`.
    pub fn get(&self, name: &str) -> Result<Arc<Topic>, TopicError> {
        self.snapshot().get(name).cloned().ok_or_else(|| {
            CatalogError::NotFound {
                kind: "topic",
                name: name.to_owned(),
            }
            .into()
        })
    }

    /// Subscription `name` of topic `topic`.
    pub fn subscription(&self, topic: &str, name: &str) -> Result<Arc<Subscription>, TopicError> {
        self.get(topic)?.subscription(name).ok_or_else(|| {
            CatalogError::NotFound {
                kind: "subscription",
                name: format!("{topic}/{name}"),
            }
            .into()
        })
    }

    /// What a subscription does with a message: its targets built (which
    /// checks that they exist) and its filter's id.
    fn shape(
        &self,
        topic: &Topic,
        spec: &SubscriptionSpec,
        key: &str,
    ) -> Result<Shape, TopicError> {
        let config = &spec.config;
        check_loop(&topic.spec(), config, key)?;
        let targets = &self.inner.setup.targets;
        let target = targets.build(&config.target, &config.options, &format!("{key}.target"))?;
        let dead_letter = match &config.dead_letter {
            Some(spec) => {
                Some(targets.build(spec, &config.options, &format!("{key}.dead_letter"))?)
            }
            None => None,
        };
        Ok(Shape {
            topic: topic.name(),
            subscription: config.name.clone(),
            filter_id: spec
                .filter
                .as_ref()
                .map(|_| message::subscription_id(&config.name)),
            raw: config.raw,
            naming: self.inner.setup.naming.clone(),
            target,
            dead_letter,
            policy: config.delivery,
        })
    }

    /// Adds a subscription to `topic`, compiles its filter, and starts its
    /// pump unless it waits for confirmation or has no shape.
    async fn attach(
        &self,
        topic: &Arc<Topic>,
        spec: SubscriptionSpec,
        origin: Origin,
        pending: Option<String>,
        shape: Option<Shape>,
        start: Start,
    ) -> Arc<Subscription> {
        let name = spec.config.name.clone();
        let filter = spec.filter.clone().map(|pattern| {
            (
                message::subscription_id(&name),
                spec.config.filter_scope,
                pattern,
            )
        });
        let status = self.inner.setup.metrics.subscription(&topic.name(), &name);
        let waiting = pending.is_some();
        let sub = Arc::new(Subscription::new(
            &topic.name(),
            origin,
            spec,
            pending,
            status,
            topic.cursor_path(&name),
        ));
        let end = topic
            .attach(
                Arc::clone(&sub),
                filter.as_ref().map(|(id, scope, p)| (*id, *scope, p)),
            )
            .await;
        if let (Some(shape), false) = (shape, waiting) {
            let start = match start {
                Start::Latest => Start::Offset(end),
                other => other,
            };
            sub.start(topic.log().clone(), shape, start).await;
        }
        sub
    }

    /// Creates a topic, and the subscriptions its definition lists. A topic
    /// of that name with the same definition is answered as created
    /// (`false`: it existed), as SNS does.
    pub async fn create(&self, config: TopicConfig) -> Result<(Arc<Topic>, bool), TopicError> {
        let spec = config.validate("topic")?;
        let name = spec.name().to_owned();
        let change = self.inner.changes.lock().await;
        let open = self.snapshot();
        if let Some(existing) = open.get(&name) {
            if existing.spec().config == spec.config {
                return Ok((Arc::clone(existing), false));
            }
            return Err(CatalogError::Exists {
                kind: "topic",
                name,
            }
            .into());
        }
        if let Some(other) = open.keys().find(|n| n.eq_ignore_ascii_case(&name)) {
            return Err(CatalogError::Exists {
                kind: "topic",
                name: other.clone(),
            }
            .into());
        }
        let max = self.inner.setup.limits.max_topics;
        if open.len() >= max {
            return Err(CatalogError::LimitReached {
                kind: "topic",
                max,
                key: "limits.max_topics",
            }
            .into());
        }
        let dir = self.inner.dir.join(&name);
        if dir.exists() {
            return Err(CatalogError::LeftoverData { path: dir }.into());
        }
        for (i, sub) in config.subscriptions.iter().enumerate() {
            sub.validate(&format!("topic.subscriptions[{i}]"))?;
        }
        let definition = serde_json::to_value(&spec.config)
            .map_err(|e| TopicError::State(format!("encoding the definition: {e}")))?;
        self.catalog_put(TOPICS, &name, definition).await?;
        let this = self.clone();
        let opened = tokio::task::spawn_blocking(move || this.open_topic(spec, Origin::Api))
            .await
            .map_err(|e| TopicError::State(format!("opening the topic: {e}")))?;
        let topic = match opened {
            Ok(topic) => Arc::new(topic),
            Err(e) => {
                let _ = self.catalog_remove(TOPICS, &name).await;
                return Err(e);
            }
        };
        self.edit(|open| {
            open.insert(name.clone(), Arc::clone(&topic));
        });
        tracing::info!(topic = %name, "topic created");
        drop(change);
        for sub in config.subscriptions {
            self.subscribe(&name, sub, Via::Api).await?;
        }
        Ok((topic, true))
    }

    /// Deletes a topic made through the API, with its subscriptions and
    /// messages.
    pub async fn delete(&self, name: &str) -> Result<(), TopicError> {
        let _change = self.inner.changes.lock().await;
        let topic = self.get(name)?;
        if topic.origin() == Origin::Config {
            return Err(CatalogError::DefinedInConfig {
                kind: "topic",
                name: name.to_owned(),
            }
            .into());
        }
        self.catalog_begin_delete(TOPICS, name).await?;
        self.edit(|open| {
            open.remove(name);
        });
        for sub in topic.subscriptions() {
            sub.stop().await;
            let sub_name = sub.name();
            if sub.origin() == Origin::Api {
                self.catalog_remove(SUBSCRIPTIONS, &format!("{name}/{sub_name}"))
                    .await?;
            }
            self.inner
                .setup
                .metrics
                .remove_subscription(name, &sub_name);
        }
        topic.log().close().await;
        let catalog = self.inner.setup.catalog.clone();
        let (key, dir) = (name.to_owned(), topic.dir().to_owned());
        tokio::task::spawn_blocking(move || {
            catalog
                .discard(&dir)
                .map_err(|e| TopicError::State(format!("removing {}: {e}", dir.display())))?;
            catalog
                .file()
                .end_delete(TOPICS, &key)
                .map_err(TopicError::from)
        })
        .await
        .map_err(|e| TopicError::State(format!("deleting the topic: {e}")))??;
        self.inner.setup.metrics.remove_topic(name);
        tracing::info!(topic = %name, "topic deleted");
        Ok(())
    }

    /// Subscribes to `topic`. A subscription of that name with the same
    /// definition is answered as made (`false`: it existed), as SNS does.
    pub async fn subscribe(
        &self,
        topic: &str,
        config: SubscriptionConfig,
        via: Via,
    ) -> Result<(Arc<Subscription>, bool), TopicError> {
        let spec = config.validate("subscription")?;
        let _change = self.inner.changes.lock().await;
        let topic = self.get(topic)?;
        let topic_name = topic.name();
        if let Some(existing) = topic.subscription(&config.name) {
            if existing.spec().config == config {
                return Ok((existing, false));
            }
            return Err(CatalogError::Exists {
                kind: "subscription",
                name: format!("{topic_name}/{}", config.name),
            }
            .into());
        }
        let max = self.inner.setup.limits.max_subscriptions;
        if topic.subscriptions().len() >= max {
            return Err(CatalogError::LimitReached {
                kind: "subscription",
                max,
                key: "limits.max_subscriptions",
            }
            .into());
        }
        let shape = self.shape(&topic, &spec, "subscription")?;
        let is_http = matches!(config.target, TargetSpec::Http { .. });
        let pending = (matches!(via, Via::Sns { .. }) && is_http).then(token);
        if via == Via::Api && is_http {
            self.inner
                .setup
                .targets
                .probe(&config.target)
                .await
                .map_err(TopicError::Unreachable)?;
        }
        let key = format!("{topic_name}/{}", config.name);
        let record = SubscriptionRecord {
            topic: topic_name.clone(),
            subscription: config.clone(),
            pending_token: pending.clone(),
        };
        let definition = serde_json::to_value(&record)
            .map_err(|e| TopicError::State(format!("encoding the definition: {e}")))?;
        // A cursor left by an earlier subscription of that name must not
        // be inherited.
        let cursor = topic.cursor_path(&config.name);
        let _ = tokio::fs::remove_file(&cursor).await;
        self.catalog_put(SUBSCRIPTIONS, &key, definition).await?;
        let sub = self
            .attach(
                &topic,
                spec,
                Origin::Api,
                pending.clone(),
                Some(shape),
                Start::Latest,
            )
            .await;
        if let (Some(token), Via::Sns { endpoint }) = (pending, &via) {
            self.send_confirmation(&topic_name, &config, &token, endpoint);
        }
        tracing::info!(subscription = %key, target = %config.target, "subscribed");
        Ok((sub, true))
    }

    /// POSTs a `SubscriptionConfirmation` to a new SNS HTTP(S)
    /// subscription, in the background, trying a few times.
    fn send_confirmation(
        &self,
        topic: &str,
        config: &SubscriptionConfig,
        token: &str,
        endpoint: &str,
    ) {
        let targets = self.inner.setup.targets.clone();
        let target = match targets.build(&config.target, &config.options, "subscription.target") {
            Ok(target) => target,
            Err(e) => {
                tracing::warn!(error = %e, "no confirmation sent");
                return;
            }
        };
        let now = now_ms();
        let naming = Naming {
            endpoint: endpoint.to_owned(),
            ..self.naming().clone()
        };
        let body = envelope::confirmation(&naming, topic, token, now);
        let delivery = Delivery {
            message_id: message::new_id(),
            topic: topic.to_owned(),
            subject: None,
            body,
            content_type: Some("text/plain; charset=UTF-8".to_owned()),
            attributes: BTreeMap::new(),
            headers: vec![
                (
                    "x-amz-sns-message-type".to_owned(),
                    "SubscriptionConfirmation".to_owned(),
                ),
                (
                    "x-amz-sns-topic-arn".to_owned(),
                    self.naming().topic_arn(topic),
                ),
            ],
            timestamp_ms: now,
        };
        let (topic, name) = (topic.to_owned(), config.name.clone());
        tokio::spawn(async move {
            for attempt in 1..=3u32 {
                match target.deliver(delivery.clone()).await {
                    Ok(()) => return,
                    Err(e) => {
                        tracing::warn!(%topic, subscription = %name, attempt, error = %e, "subscription confirmation not delivered");
                    }
                }
                tokio::time::sleep(std::time::Duration::from_secs(u64::from(attempt) * 2)).await;
            }
        });
    }

    /// Replaces the definition of a subscription made through the API (its
    /// name and target stay); delivery restarts from its cursor.
    pub async fn update_subscription(
        &self,
        topic: &str,
        config: SubscriptionConfig,
    ) -> Result<Arc<Subscription>, TopicError> {
        let spec = config.validate("subscription")?;
        let _change = self.inner.changes.lock().await;
        let topic = self.get(topic)?;
        let topic_name = topic.name();
        let sub = self.subscription(&topic_name, &config.name)?;
        if sub.origin() == Origin::Config {
            return Err(CatalogError::DefinedInConfig {
                kind: "subscription",
                name: format!("{topic_name}/{}", config.name),
            }
            .into());
        }
        let shape = self.shape(&topic, &spec, "subscription")?;
        let pending = sub.pending_token();
        let record = SubscriptionRecord {
            topic: topic_name.clone(),
            subscription: config.clone(),
            pending_token: pending.clone(),
        };
        let definition = serde_json::to_value(&record)
            .map_err(|e| TopicError::State(format!("encoding the definition: {e}")))?;
        self.catalog_put(
            SUBSCRIPTIONS,
            &format!("{topic_name}/{}", config.name),
            definition,
        )
        .await?;
        sub.set_spec(spec.clone());
        let filter = spec.filter.as_ref().map(|p| {
            (
                message::subscription_id(&config.name),
                config.filter_scope,
                p,
            )
        });
        topic.attach(Arc::clone(&sub), filter).await;
        if pending.is_none() {
            sub.start(topic.log().clone(), shape, Start::Latest).await;
        }
        Ok(sub)
    }

    /// Confirms the pending subscription of `topic` that was sent `token`,
    /// and starts its delivery with the next message published.
    pub async fn confirm(&self, topic: &str, token: &str) -> Result<Arc<Subscription>, TopicError> {
        let _change = self.inner.changes.lock().await;
        let topic = self.get(topic)?;
        let topic_name = topic.name();
        let sub = topic
            .subscriptions()
            .into_iter()
            .find(|s| s.pending_token().as_deref() == Some(token))
            .ok_or_else(|| TopicError::BadToken {
                topic: topic_name.clone(),
            })?;
        let spec = sub.spec();
        let shape = self.shape(&topic, &spec, "subscription")?;
        let record = SubscriptionRecord {
            topic: topic_name.clone(),
            subscription: spec.config.clone(),
            pending_token: None,
        };
        let definition = serde_json::to_value(&record)
            .map_err(|e| TopicError::State(format!("encoding the definition: {e}")))?;
        self.catalog_put(
            SUBSCRIPTIONS,
            &format!("{topic_name}/{}", spec.config.name),
            definition,
        )
        .await?;
        sub.set_confirmed();
        sub.start(
            topic.log().clone(),
            shape,
            Start::Offset(topic.log().next_offset()),
        )
        .await;
        tracing::info!(topic = %topic_name, subscription = %spec.config.name, "subscription confirmed");
        Ok(sub)
    }

    /// Removes a subscription made through the API, and its cursor.
    pub async fn unsubscribe(&self, topic: &str, name: &str) -> Result<(), TopicError> {
        let _change = self.inner.changes.lock().await;
        let sub = self.subscription(topic, name)?;
        let topic = self.get(topic)?;
        let topic_name = topic.name();
        if sub.origin() == Origin::Config {
            return Err(CatalogError::DefinedInConfig {
                kind: "subscription",
                name: format!("{topic_name}/{name}"),
            }
            .into());
        }
        let key = format!("{topic_name}/{name}");
        self.catalog_begin_delete(SUBSCRIPTIONS, &key).await?;
        topic.detach(name).await;
        sub.stop().await;
        let _ = tokio::fs::remove_file(sub.cursor_path()).await;
        let catalog = self.inner.setup.catalog.clone();
        tokio::task::spawn_blocking(move || catalog.file().end_delete(SUBSCRIPTIONS, &key))
            .await
            .map_err(|e| TopicError::State(format!("unsubscribing: {e}")))??;
        self.inner
            .setup
            .metrics
            .remove_subscription(&topic_name, name);
        tracing::info!(topic = %topic_name, subscription = %name, "unsubscribed");
        Ok(())
    }

    /// Publishes to `topic` directly; answers the message id once it is
    /// durable.
    pub async fn publish(
        &self,
        topic: &str,
        publication: Publication,
    ) -> Result<String, TopicError> {
        let (id, ticket) = self.get(topic)?.publish(publication).await?;
        ticket.await?;
        Ok(id)
    }

    /// Stops every subscription and closes the logs (at shutdown).
    pub async fn close(&self) {
        for topic in self.list() {
            for sub in topic.subscriptions() {
                sub.stop().await;
            }
            topic.log().close().await;
        }
    }

    async fn catalog_put(
        &self,
        section: &'static str,
        key: &str,
        definition: serde_json::Value,
    ) -> Result<(), TopicError> {
        let catalog = self.inner.setup.catalog.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || catalog.file().put(section, &key, definition))
            .await
            .map_err(|e| TopicError::State(format!("catalog: {e}")))?
            .map_err(TopicError::from)
    }

    async fn catalog_remove(&self, section: &'static str, key: &str) -> Result<(), TopicError> {
        let catalog = self.inner.setup.catalog.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || catalog.file().remove(section, &key))
            .await
            .map_err(|e| TopicError::State(format!("catalog: {e}")))?
            .map_err(TopicError::from)
    }

    async fn catalog_begin_delete(
        &self,
        section: &'static str,
        key: &str,
    ) -> Result<(), TopicError> {
        let catalog = self.inner.setup.catalog.clone();
        let key = key.to_owned();
        tokio::task::spawn_blocking(move || catalog.file().begin_delete(section, &key))
            .await
            .map_err(|e| TopicError::State(format!("catalog: {e}")))?
            .map_err(TopicError::from)
    }
}

/// Refuses a subscription that would republish into its own topic's
/// `from`.
fn check_loop(topic: &TopicSpec, config: &SubscriptionConfig, key: &str) -> Result<(), TopicError> {
    let TargetSpec::Mqtt { topic: to } = &config.target else {
        return Ok(());
    };
    let loops = match to {
        Some(to) => topic.takes(to),
        None => !topic.from.is_empty(),
    };
    if loops {
        return Err(ConfigError::new(
            format!("{key}.target"),
            format!(
                "a loop: {} publishes into topic {:?}'s own from ({}), so its messages would come back to it",
                config.target,
                topic.name(),
                topic.config.from.join(", ")
            ),
        )
        .into());
    }
    Ok(())
}

fn damaged(catalog: &Catalog, name: &str, e: &serde_json::Error) -> TopicError {
    CatalogError::Damaged {
        path: catalog.file().path().to_owned(),
        reason: format!("{name:?}: {e}"),
    }
    .into()
}

/// A confirmation token: 32 random bytes in hex.
fn token() -> String {
    (0..4)
        .map(|_| format!("{:016x}", fastrand::u64(..)))
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The publish path's way into the topics ([`Topics::publish_routes`]).
/// It holds them weakly: the broker holds it, and the topics hold the
/// broker (through the targets).
struct TopicRoutes {
    inner: Weak<Inner>,
}

impl TopicRoutes {
    fn topics(&self) -> Option<Topics> {
        self.inner.upgrade().map(|inner| Topics { inner })
    }
}

impl Enqueue for TopicRoutes {
    fn takes(&self, topic: &str, source: Source) -> bool {
        source != Source::Topic
            && self.topics().is_some_and(|topics| {
                topics.inner.fed_by_topics.load(Ordering::Relaxed)
                    && topics.snapshot().values().any(|t| t.spec().takes(topic))
            })
    }

    fn enqueue<'a>(
        &'a self,
        message: &'a Arc<Message>,
        _source: Source,
    ) -> BoxFuture<'a, Result<Vec<QueuedAppend>, PublishError>> {
        Box::pin(async move {
            let Some(topics) = self.topics() else {
                return Ok(Vec::new());
            };
            let mut queued: Vec<QueuedAppend> = Vec::new();
            for topic in topics.snapshot().values() {
                if !topic.spec().takes(&message.topic) {
                    continue;
                }
                let name = topic.name();
                let (_, ticket) = topic
                    .publish(from_mqtt(message))
                    .await
                    .map_err(|e| refusal(&name, &e))?;
                queued.push(Box::pin(async move {
                    ticket
                        .await
                        .map(drop)
                        .map_err(|e| refusal(&name, &TopicError::from(e)))
                }));
            }
            Ok(queued)
        })
    }
}

impl Topics {
    /// What the broker's publish path calls to feed topics by MQTT topic
    /// ([`tidewire_core::Broker::set_routes`]).
    pub fn publish_routes(&self) -> Arc<dyn Enqueue> {
        Arc::new(TopicRoutes {
            inner: Arc::downgrade(&self.inner),
        })
    }
}

/// A published MQTT message as a topic publication: its user properties
/// become `String` attributes (the last of a repeated name wins).
fn from_mqtt(message: &Message) -> Publication {
    Publication {
        topic: message.topic.clone(),
        client_id: message.client_id.clone(),
        subject: None,
        body: message.payload.clone(),
        attributes: message
            .properties
            .user
            .iter()
            .map(|(name, value)| {
                (
                    name.clone(),
                    Attribute {
                        data_type: "String".to_owned(),
                        string: Some(value.clone()),
                        binary: None,
                    },
                )
            })
            .collect(),
        properties: message.properties.clone(),
    }
}

/// A topic's refusal as the publish path reports it.
fn refusal(topic: &str, e: &TopicError) -> PublishError {
    PublishError::Topic {
        topic: topic.to_owned(),
        client_error: e.is_user_error(),
        message: e.to_string(),
    }
}
