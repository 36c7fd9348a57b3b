//! One topic: its log (`DATA_DIR/topics/NAME/log/`, the stream log
//! format), the compiled matchers of its subscriptions' filters (one per
//! scope), and its subscriptions.
//!
//! A publish is matched once, against every filter at once, and the ids
//! of the filtered subscriptions it matched are stored with it
//! ([`crate::message`]); matching and appending happen under one lock, so
//! a subscription added meanwhile starts after every message matched
//! without it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tidewire_core::{Message, Origin, Properties};
use tidewire_patterns::{Event, EventBuilder, Matcher, Pattern, sns};
use tidewire_queues::Attribute;
use tidewire_storage::{AppendTicket, LogConfig, OnFatal, Retention, StorageMetrics, StreamLog};

use crate::config::{Scope, TopicSpec};
use crate::error::TopicError;
use crate::message::{self, Header};
use crate::subscription::Subscription;

/// A message for a topic.
#[derive(Debug, Clone, Default)]
pub struct Publication {
    /// The MQTT topic it was published to, or the fan-out topic's name
    /// when published to the topic directly.
    pub topic: String,
    /// Who published it.
    pub client_id: String,
    /// SNS `Subject`.
    pub subject: Option<String>,
    /// The body.
    pub body: Bytes,
    /// Typed attributes (SNS `MessageAttributes`).
    pub attributes: BTreeMap<String, Attribute>,
    /// MQTT properties (content type, user properties).
    pub properties: Properties,
}

impl Publication {
    /// Its size against the topic's limit, as SNS counts it: the body and
    /// each attribute's name, type and value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(name, a)| {
                    name.len()
                        + a.data_type.len()
                        + a.string.as_ref().map_or(0, String::len)
                        + a.binary.as_ref().map_or(0, Vec::len)
                })
                .sum::<usize>()
    }
}

/// The compiled filters, one matcher per scope.
#[derive(Debug, Default)]
struct Matchers {
    attributes: Matcher<u64>,
    body: Matcher<u64>,
    envelope: Matcher<u64>,
}

impl Matchers {
    fn of(&mut self, scope: Scope) -> &mut Matcher<u64> {
        match scope {
            Scope::Attributes => &mut self.attributes,
            Scope::Body => &mut self.body,
            Scope::Envelope => &mut self.envelope,
        }
    }

    /// The ids of the filters `publication` matches.
    fn matched(&mut self, publication: &Publication) -> Result<Vec<u64>, TopicError> {
        let mut matched = Vec::new();
        for scope in Scope::ALL {
            let matcher = self.of(scope);
            if matcher.is_empty() {
                continue;
            }
            let Some(event) = event(scope, publication)? else {
                continue;
            };
            matcher.for_each_match(&event, |id| matched.push(*id));
        }
        Ok(matched)
    }
}

/// What a filter of `scope` sees of `publication`; none when it cannot
/// match at all (a body-scoped filter and a body that is not a JSON
/// object).
fn event(scope: Scope, publication: &Publication) -> Result<Option<Event>, TopicError> {
    match scope {
        Scope::Attributes => sns::attributes_event(publication.attributes.iter().map(|(n, a)| {
            (
                n.as_str(),
                (a.data_type.as_str(), a.string.as_deref().unwrap_or("")),
            )
        }))
        .map(Some)
        .map_err(|e| TopicError::BadMessage(e.to_string())),
        Scope::Body => Ok(sns::body_event(&publication.body).ok()),
        Scope::Envelope => {
            let mut builder = EventBuilder::new();
            builder
                .topic(&publication.topic)
                .client_id(&publication.client_id)
                .payload(&publication.body);
            if let Some(content_type) = &publication.properties.content_type {
                builder.content_type(content_type);
            }
            for (name, value) in &publication.properties.user {
                builder.user_property(name, value);
            }
            Ok(Some(builder.build()))
        }
    }
}

/// A topic.
#[derive(Debug)]
pub struct Topic {
    spec: RwLock<Arc<TopicSpec>>,
    origin: Origin,
    dir: PathBuf,
    log: StreamLog,
    matchers: tokio::sync::Mutex<Matchers>,
    subscriptions: RwLock<BTreeMap<String, Arc<Subscription>>>,
    published: Counter,
}

impl Topic {
    /// Opens the topic's log in `dir`.
    pub(crate) fn open(
        dir: &Path,
        spec: TopicSpec,
        origin: Origin,
        storage: &StorageMetrics,
        on_fatal: OnFatal,
        published: Counter,
    ) -> Result<Topic, TopicError> {
        std::fs::create_dir_all(dir.join("subscriptions"))
            .map_err(|e| TopicError::State(format!("create {}: {e}", dir.display())))?;
        let log = StreamLog::open(
            &dir.join("log"),
            &format!("topic:{}", spec.name()),
            log_config(&spec),
            storage,
            on_fatal,
        )?;
        Ok(Topic {
            spec: RwLock::new(Arc::new(spec)),
            origin,
            dir: dir.to_owned(),
            log,
            matchers: tokio::sync::Mutex::default(),
            subscriptions: RwLock::default(),
            published,
        })
    }

    /// Its name.
    pub fn name(&self) -> String {
        self.spec().name().to_owned()
    }

    /// Its definition.
    pub fn spec(&self) -> Arc<TopicSpec> {
        Arc::clone(&self.spec.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Where it was defined.
    pub fn origin(&self) -> Origin {
        self.origin
    }

    /// Its log.
    pub fn log(&self) -> &StreamLog {
        &self.log
    }

    /// Its directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its subscriptions, by name.
    pub fn subscriptions(&self) -> Vec<Arc<Subscription>> {
        self.subscriptions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Its subscription `name`.
    pub fn subscription(&self, name: &str) -> Option<Arc<Subscription>> {
        self.subscriptions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// The cursor file of subscription `name`.
    pub(crate) fn cursor_path(&self, name: &str) -> PathBuf {
        self.dir
            .join("subscriptions")
            .join(format!("{name}.cursor"))
    }

    /// Matches `publication` against every filter and queues it in the
    /// log; the ticket resolves once it is durable. Answers its message id.
    pub async fn publish(
        &self,
        publication: Publication,
    ) -> Result<(String, AppendTicket), TopicError> {
        let spec = self.spec();
        let max = usize::try_from(spec.config.max_message_bytes.as_u64()).unwrap_or(usize::MAX);
        let size = publication.size();
        if size > max {
            return Err(TopicError::TooLarge {
                topic: spec.name().to_owned(),
                size,
                max,
            });
        }
        let header = Header {
            id: message::new_id(),
            subject: publication.subject.clone(),
            attributes: publication.attributes.clone(),
        };
        let mut matchers = self.matchers.lock().await;
        let matched = matchers.matched(&publication)?;
        let payload = message::encode(&matched, &header, &publication.body);
        let record = Message {
            topic: publication.topic,
            client_id: publication.client_id,
            qos: 1,
            retain: false,
            payload,
            properties: publication.properties,
        };
        let ticket = self.log.enqueue(Arc::new(record)).await?;
        drop(matchers);
        self.published.inc();
        Ok((header.id, ticket))
    }

    /// Adds (or replaces) subscription `subscription`, compiling its
    /// filter; answers the log's end at that moment, where a new
    /// subscription starts.
    pub(crate) async fn attach(
        &self,
        subscription: Arc<Subscription>,
        filter: Option<(u64, Scope, &Pattern)>,
    ) -> u64 {
        let name = subscription.name();
        let mut matchers = self.matchers.lock().await;
        let id = message::subscription_id(&name);
        for scope in Scope::ALL {
            matchers.of(scope).remove(&id);
        }
        if let Some((id, scope, pattern)) = filter {
            matchers.of(scope).add(id, pattern);
        }
        self.subscriptions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, subscription);
        self.log.next_offset()
    }

    /// Removes subscription `name` and its filter.
    pub(crate) async fn detach(&self, name: &str) -> Option<Arc<Subscription>> {
        let mut matchers = self.matchers.lock().await;
        let id = message::subscription_id(name);
        for scope in Scope::ALL {
            matchers.of(scope).remove(&id);
        }
        self.subscriptions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name)
    }
}

fn log_config(spec: &TopicSpec) -> LogConfig {
    LogConfig {
        fsync: spec.fsync,
        retention: Retention {
            max_age: Some(spec.config.retention),
            max_bytes: None,
        },
        segment_bytes: 16 * 1024 * 1024,
        segment_age: Duration::from_secs(600),
        ..LogConfig::default()
    }
}
