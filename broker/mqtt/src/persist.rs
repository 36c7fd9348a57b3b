//! Saving persistent sessions (those with a non-zero expiry interval) to
//! `DATA_DIR/mqtt/sessions.json`, and loading them at start-up.
//!
//! The file holds each session's subscriptions, queued messages, in-flight
//! messages and QoS 2 ids awaiting PUBREL. It is written whole to a
//! temporary file, fsynced and renamed over the old one, so it is always
//! either the previous or the new version. It is written on graceful
//! shutdown and at most every `mqtt.session_save_interval` while sessions
//! change, so after a crash a session can miss the changes of that last
//! interval (what publishers were acknowledged for is in the streams).

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tidewire_core::{Message, Properties};

use crate::retained::now_ms;
use crate::session::{Delivery, Session, SessionCommon, SessionState, SubOptions};

const VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    sessions: Vec<SavedSession>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSession {
    client_id: String,
    expiry_secs: u32,
    /// Wall-clock ms since it went offline (absent: it was online).
    offline_since_ms: Option<i64>,
    subscriptions: Vec<SavedSubscription>,
    queue: Vec<SavedDelivery>,
    inflight: Vec<SavedInflight>,
    awaiting_release: Vec<u16>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedSubscription {
    filter: String,
    qos: u8,
    no_local: bool,
    retain_as_published: bool,
    retain_handling: u8,
    id: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedInflight {
    pkid: u16,
    released: bool,
    delivery: SavedDelivery,
}

#[derive(Debug, Serialize, Deserialize)]
struct SavedDelivery {
    topic: String,
    client_id: String,
    published_qos: u8,
    published_retain: bool,
    payload: String,
    user_properties: Vec<(String, String)>,
    content_type: Option<String>,
    response_topic: Option<String>,
    correlation_data: Option<String>,
    message_expiry_secs: Option<u32>,
    payload_format_utf8: bool,
    qos: u8,
    retain: bool,
    subscription_ids: Vec<usize>,
    expires_in_ms: Option<u64>,
}

impl SavedDelivery {
    fn of(d: &Delivery, now: Instant) -> SavedDelivery {
        let m = &d.message;
        let p = &m.properties;
        SavedDelivery {
            topic: m.topic.clone(),
            client_id: m.client_id.clone(),
            published_qos: m.qos,
            published_retain: m.retain,
            payload: BASE64.encode(&m.payload),
            user_properties: p.user.clone(),
            content_type: p.content_type.clone(),
            response_topic: p.response_topic.clone(),
            correlation_data: p.correlation_data.as_ref().map(|c| BASE64.encode(c)),
            message_expiry_secs: p.message_expiry_secs,
            payload_format_utf8: p.payload_format_utf8,
            qos: d.qos,
            retain: d.retain,
            subscription_ids: d.subscription_ids.clone(),
            expires_in_ms: d
                .expires_at
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
        }
    }

    fn restore(self, now: Instant) -> std::io::Result<Delivery> {
        let decode = |text: &str| {
            BASE64
                .decode(text)
                .map(Bytes::from)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
        };
        let correlation_data = self.correlation_data.as_deref().map(decode).transpose()?;
        Ok(Delivery {
            message: Arc::new(Message {
                topic: self.topic,
                client_id: self.client_id,
                qos: self.published_qos,
                retain: self.published_retain,
                payload: decode(&self.payload)?,
                properties: Properties {
                    user: self.user_properties,
                    content_type: self.content_type,
                    response_topic: self.response_topic,
                    correlation_data,
                    message_expiry_secs: self.message_expiry_secs,
                    payload_format_utf8: self.payload_format_utf8,
                },
            }),
            qos: self.qos,
            retain: self.retain,
            subscription_ids: self.subscription_ids,
            expires_at: self.expires_in_ms.map(|ms| now + Duration::from_millis(ms)),
        })
    }
}

impl SavedSession {
    /// What is saved of a persistent session (none of a transient one), at
    /// `now`, which is `wall` on the wall clock.
    fn of(session: &Session, state: &SessionState, now: Instant, wall: i64) -> Option<Self> {
        (state.expiry_secs > 0).then(|| SavedSession {
            client_id: session.client_id.clone(),
            expiry_secs: state.expiry_secs,
            offline_since_ms: state.offline_since.map(|t| {
                wall - i64::try_from(now.duration_since(t).as_millis()).unwrap_or(i64::MAX)
            }),
            subscriptions: state
                .subscriptions
                .iter()
                .map(|(filter, o)| SavedSubscription {
                    filter: filter.clone(),
                    qos: o.qos,
                    no_local: o.no_local,
                    retain_as_published: o.retain_as_published,
                    retain_handling: o.retain_handling,
                    id: o.id,
                })
                .collect(),
            queue: state
                .queue
                .iter()
                .map(|d| SavedDelivery::of(d, now))
                .collect(),
            inflight: state
                .inflight_in_order()
                .into_iter()
                .map(|(pkid, i)| SavedInflight {
                    pkid,
                    released: i.released,
                    delivery: SavedDelivery::of(&i.delivery, now),
                })
                .collect(),
            awaiting_release: state.awaiting_release(),
        })
    }
}

/// Writes every persistent session to `path` atomically and durably.
pub fn save(path: &Path, sessions: &[Arc<Session>]) -> std::io::Result<()> {
    let now = Instant::now();
    let wall = now_ms();
    let saved = sessions
        .iter()
        .filter_map(|session| session.inspect(|state| SavedSession::of(session, state, now, wall)))
        .collect();
    let file = File {
        version: VERSION,
        sessions: saved,
    };
    let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
    tidewire_storage::durable_file::replace(path, &bytes)
}

/// Loads the sessions saved at `path` (none if the file does not exist),
/// all offline.
pub fn load(path: &Path, common: &Arc<SessionCommon>) -> std::io::Result<Vec<Arc<Session>>> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let file: File = serde_json::from_slice(&bytes)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    if file.version != VERSION {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unknown session file version {}", file.version),
        ));
    }
    let now = Instant::now();
    let wall = now_ms();
    let mut sessions = Vec::with_capacity(file.sessions.len());
    for saved in file.sessions {
        let offline_for = saved
            .offline_since_ms
            .map_or(0, |t| u64::try_from(wall - t).unwrap_or(0));
        let session = Session::new(saved.client_id, saved.expiry_secs, Arc::clone(common));
        {
            let mut state = session.lock();
            state.offline_since = Some(
                now.checked_sub(Duration::from_millis(offline_for))
                    .unwrap_or(now),
            );
            for s in saved.subscriptions {
                state.subscriptions.insert(
                    s.filter,
                    SubOptions {
                        qos: s.qos,
                        no_local: s.no_local,
                        retain_as_published: s.retain_as_published,
                        retain_handling: s.retain_handling,
                        id: s.id,
                    },
                );
            }
            for d in saved.queue {
                state.queue.push_back(d.restore(now)?);
            }
            for i in saved.inflight {
                state.track(i.pkid, i.delivery.restore(now)?);
                if i.released {
                    state.mark_released(i.pkid);
                }
            }
            for pkid in saved.awaiting_release {
                state.await_release(pkid);
            }
        }
        sessions.push(Arc::new(session));
    }
    Ok(sessions)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::MqttMetrics;

    #[test]
    fn sessions_round_trip_through_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sessions.json");
        let common = SessionCommon::new(10, &MqttMetrics::default());
        let session = Arc::new(Session::new("c1".into(), 600, Arc::clone(&common)));
        let transient = Arc::new(Session::new("c2".into(), 0, Arc::clone(&common)));
        let message = Arc::new(Message {
            topic: "a/b".into(),
            client_id: "pub".into(),
            qos: 2,
            retain: true,
            payload: Bytes::from_static(&[0, 159, 146, 150]),
            properties: Properties {
                user: vec![("k".into(), "v".into())],
                correlation_data: Some(Bytes::from_static(b"cd")),
                message_expiry_secs: Some(60),
                ..Properties::default()
            },
        });
        let delivery = Delivery {
            message,
            qos: 1,
            retain: false,
            subscription_ids: vec![3],
            expires_at: Some(Instant::now() + Duration::from_secs(60)),
        };
        {
            let mut state = session.lock();
            state.subscriptions.insert(
                "$share/g/a/#".into(),
                SubOptions {
                    qos: 1,
                    no_local: false,
                    retain_as_published: true,
                    retain_handling: 2,
                    id: Some(3),
                },
            );
            state.queue.push_back(delivery.clone());
            state.track(9, delivery.clone());
            state.await_release(4);
        }
        save(&path, &[Arc::clone(&session), transient]).expect("save");
        let loaded = load(&path, &common).expect("load");
        assert_eq!(
            loaded.len(),
            1,
            "only sessions that outlive their connection are saved"
        );
        let restored = &loaded[0];
        let state = restored.lock();
        let original = session.lock();
        assert_eq!(restored.client_id, "c1");
        assert_eq!(state.expiry_secs, 600);
        assert_eq!(state.subscriptions, original.subscriptions);
        assert_eq!(state.queue.len(), 1);
        assert_eq!(state.queue[0].message, delivery.message);
        assert_eq!(state.queue[0].subscription_ids, vec![3]);
        assert!(state.queue[0].expires_at.is_some());
        assert_eq!(state.inflight_in_order()[0].0, 9);
        assert!(state.awaits_release(4));
        assert!(state.offline_since.is_some(), "restored offline");
        assert!(
            load(&dir.path().join("missing.json"), &common)
                .expect("no file is no sessions")
                .is_empty()
        );
    }
}
