//! `/ws`: one socket of the JSON protocol. The socket is a session in the
//! MQTT router (client id `$ws/N`, which MQTT clients cannot take), so
//! subscriptions match exactly as MQTT ones do, retained messages
//! included, and its bounded queue is the socket's send queue.
//!
//! One task serves the socket: it reads requests in order, publishes
//! through the core broker (acknowledging QoS 1 once durable, in order),
//! sends queued messages in batches, and relays query and watch results
//! that helper tasks produce. A bad request gets an error frame and the
//! socket carries on; only a broken WebSocket, a dead peer or shutdown
//! closes it.
//!
//! Queue ops (`queue_send`, `queue_receive`, `queue_delete`) are in
//! [`queues`], the fan-out topic op (`topic_publish`) in [`topics`].
//!
//! Overflow policy: a socket's queue holds `websocket.send_queue`
//! messages; when it is full, new messages for that socket are dropped and
//! counted (`tidewire_mqtt_messages_dropped_total{transport="ws_json"}`).
//! Query and watch results wait for room instead; a watch that falls more
//! than 64 windows behind is told how many it missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, SplitSink};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tidewire_auth::{Door, LiveAcl, Peer, Principal};
use tidewire_core::panics::contain;
use tidewire_core::{Message as BrokerMessage, Source};
use tidewire_mqtt::retained::now_ms;
use tidewire_mqtt::session::{Session, SubOptions};
use tidewire_sql::{ReadAccess, SqlError, output};
use tokio::sync::{Semaphore, broadcast, mpsc};
use tokio::task::{AbortHandle, JoinSet};

use crate::Gateway;
use crate::auth::Credentials;
use crate::frames::{self, IdRequest, MessageFrame, Reply, Request, StoredView, WatchRequest};
use crate::metrics::WsMetrics;

mod queues;
mod topics;

/// Messages sent per wake-up before the socket looks at other work.
const SEND_BATCH: usize = 256;
/// Results of queries and watches waiting to be sent.
const OUTBOX: usize = 64;
/// Largest answer one frame carries: half the write buffer's cap, so an
/// answer always fits beside what is already buffered.
const MAX_REPLY_BYTES: usize = crate::MAX_WRITE_BUFFER / 2;
/// How long closing a socket may take.
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// Upgrades to the JSON protocol once the client is authenticated; bad
/// credentials get 401 before any upgrade.
pub(crate) async fn upgrade(
    State(gateway): State<Arc<Gateway>>,
    peer: Option<Extension<Peer>>,
    headers: HeaderMap,
    query: Result<Query<Credentials>, QueryRejection>,
    ws: WebSocketUpgrade,
) -> Response {
    let refuse = |status: StatusCode, reason: &'static str, error: String| {
        WsMetrics::count(&gateway.metrics.refused, reason);
        let body = axum::Json(serde_json::json!({ "error": error }));
        (status, body).into_response()
    };
    let query = match query {
        Ok(Query(query)) => query,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad_credentials", e.body_text()),
    };
    let credentials = match Credentials::from_request(&headers, query) {
        Ok(credentials) => credentials,
        Err(e) => return refuse(StatusCode::BAD_REQUEST, "bad_credentials", e),
    };
    let peer = peer.map(|Extension(peer)| peer);
    let auth = &gateway.mqtt.settings.auth;
    let principal = match credentials.authenticate(auth, peer, Door::WebSocket).await {
        Ok(principal) => principal,
        Err(e) => return refuse(StatusCode::UNAUTHORIZED, "auth", e.to_string()),
    };
    let Ok(slot) = Arc::clone(&gateway.socket_slots).try_acquire_owned() else {
        let max = gateway.settings.max_sockets;
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "max_sockets",
            format!("{max} /ws sockets are open (websocket.max_sockets); try again later"),
        );
    };
    let tracked = gateway.sockets.token();
    let max_frame = gateway.settings.max_frame_bytes;
    gateway
        .configure(ws, max_frame)
        .on_upgrade(move |socket| async move {
            let open = gateway.metrics.connections("json");
            open.inc();
            let panics = gateway.metrics.panics.clone();
            contain(
                "/ws socket",
                &panics,
                Socket::new(gateway, principal).run(socket),
            )
            .await;
            open.dec();
            drop((slot, tracked));
        })
}

/// Why the server closed a socket.
#[derive(Debug, Clone, Copy)]
enum Close {
    /// The peer closed it, or the connection broke.
    Gone,
    /// The server is stopping.
    Shutdown,
    /// Nothing heard for two ping intervals.
    Silent,
    /// A frame could not be written in time.
    WriteTimeout,
    /// The peer sent a frame or message over `websocket.max_frame_bytes`.
    TooBig,
}

/// A watch running on this socket.
struct Watch {
    relay: AbortHandle,
    /// The continuous query started for this watch, stopped with it.
    owned_query: Option<String>,
}

type Sink = SplitSink<WebSocket, Message>;

struct Socket {
    gateway: Arc<Gateway>,
    /// Who the socket is and what it may do, following reloads.
    acl: LiveAcl,
    session: Arc<Session>,
    number: u64,
    acks: FuturesOrdered<BoxFuture<'static, Option<Reply>>>,
    helpers: JoinSet<()>,
    watches: HashMap<String, Watch>,
    queries: Arc<Semaphore>,
    /// Queue receives waiting (long polls).
    receives: Arc<Semaphore>,
    outbox: mpsc::Sender<Reply>,
    results: mpsc::Receiver<Reply>,
    watches_started: u64,
}

impl Socket {
    fn new(gateway: Arc<Gateway>, principal: Principal) -> Socket {
        let number = gateway.next_socket.fetch_add(1, Ordering::Relaxed);
        let client_id = format!("$ws/{number}");
        let acl = LiveAcl::new(gateway.mqtt.settings.auth.clone(), principal, &client_id);
        let session = Arc::new(Session::for_websocket(
            client_id,
            gateway.settings.send_queue,
            &gateway.mqtt.metrics,
        ));
        let (outbox, results) = mpsc::channel(OUTBOX);
        Socket {
            queries: Arc::new(Semaphore::new(gateway.settings.max_queries)),
            receives: Arc::new(Semaphore::new(queues::MAX_RECEIVES)),
            gateway,
            acl,
            session,
            number,
            acks: FuturesOrdered::new(),
            helpers: JoinSet::new(),
            watches: HashMap::new(),
            outbox,
            results,
            watches_started: 0,
        }
    }

    async fn run(mut self, socket: WebSocket) {
        let (mut sink, mut stream) = socket.split();
        let settings = self.gateway.settings.clone();
        let mut ping = tokio::time::interval_at(
            tokio::time::Instant::now() + settings.ping_interval,
            settings.ping_interval,
        );
        let mut heard = Instant::now();
        let shutdown = self.gateway.shutdown.clone();
        let close = loop {
            let outcome = tokio::select! {
                () = shutdown.cancelled() => Err(Close::Shutdown),
                frame = stream.next(), if self.acks.len() < settings.max_inflight_publishes => {
                    heard = Instant::now();
                    match frame {
                        // Boxed: the publish path's state is large and an
                        // idle socket should not carry it.
                        Some(Ok(Message::Text(text))) => match Box::pin(self.handle(text.as_str())).await {
                            Some(reply) => send_reply(&self.gateway, &mut sink, reply).await,
                            None => Ok(()),
                        },
                        Some(Ok(Message::Binary(_))) => {
                            let reply = Reply::error(None, "send requests as JSON text frames");
                            send_reply(&self.gateway, &mut sink, reply).await
                        }
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => Ok(()),
                        Some(Err(e)) if crate::is_too_big(&e) => Err(Close::TooBig),
                        Some(Ok(Message::Close(_)) | Err(_)) | None => Err(Close::Gone),
                    }
                }
                Some(ack) = self.acks.next(), if !self.acks.is_empty() => match ack {
                    Some(reply) => send_reply(&self.gateway, &mut sink, reply).await,
                    None => Ok(()),
                },
                () = self.session.ready() => self.send_messages(&mut sink).await,
                Some(reply) = self.results.recv() => send_reply(&self.gateway, &mut sink, reply).await,
                // Reap finished query and relay tasks.
                Some(_) = self.helpers.join_next(), if !self.helpers.is_empty() => Ok(()),
                _ = ping.tick() => {
                    if heard.elapsed() > settings.ping_interval * 2 {
                        Err(Close::Silent)
                    } else {
                        write(&self.gateway, &mut sink, Message::Ping(Default::default()), true).await
                    }
                }
            };
            if let Err(close) = outcome {
                break close;
            }
        };
        self.finish(sink, close).await;
    }

    /// Handles one request; returns the frame to answer with now, if any.
    async fn handle(&mut self, text: &str) -> Option<Reply> {
        let request = match Request::parse(text) {
            Ok(request) => request,
            Err(bad) => {
                WsMetrics::count(&self.gateway.metrics.received, "invalid");
                return Some(self.error(bad.id, "bad_request", bad.error));
            }
        };
        let metrics = &self.gateway.metrics;
        match request {
            Request::Publish(publish) => {
                WsMetrics::count(&metrics.received, "publish");
                let payload =
                    match frames::payload_bytes(&publish.payload, publish.encoding.as_deref()) {
                        Ok(payload) => payload,
                        Err(e) => return Some(self.error(publish.id, "bad_request", e)),
                    };
                self.publish(
                    publish.id,
                    publish.topic,
                    payload,
                    publish.qos,
                    publish.retain,
                )
                .await
            }
            Request::Subscribe(request) => {
                WsMetrics::count(&metrics.received, "subscribe");
                self.subscribe(request.id, request.filter)
            }
            Request::Unsubscribe(request) => {
                WsMetrics::count(&metrics.received, "unsubscribe");
                self.gateway
                    .mqtt
                    .unsubscribe(&self.session, &request.filter);
                request.id.map(|id| ack(id, "unsubscribe"))
            }
            Request::Query(request) => {
                WsMetrics::count(&metrics.received, "query");
                self.query(request.id, request.sql)
            }
            Request::Watch(request) => {
                WsMetrics::count(&metrics.received, "watch");
                let WatchRequest { id, query, sql, .. } = request;
                let watched = match (query, sql) {
                    (Some(query), None) => Ok((query, None)),
                    (None, Some(sql)) => self
                        .start_query(
                            sql,
                            request.window,
                            request.hop,
                            request.allowed_lateness,
                            request.event_time,
                        )
                        .await
                        .map(|query| (query.clone(), Some(query))),
                    _ => Err(
                        "watch needs either \"query\" (a continuous query's id) or \"sql\"".into(),
                    ),
                };
                match watched {
                    Ok((query, owned)) => self.watch(id, query, owned),
                    Err(e) => Some(self.error(Some(id), "watch", e)),
                }
            }
            Request::Unwatch(IdRequest { id, .. }) => {
                WsMetrics::count(&metrics.received, "unwatch");
                match self.watches.remove(&id.to_string()) {
                    Some(watch) => {
                        self.stop_watch(watch);
                        Some(ack(id, "unwatch"))
                    }
                    None => Some(self.error(Some(id), "unwatch", "no watch with this id")),
                }
            }
            Request::Ping(ping) => {
                WsMetrics::count(&metrics.received, "ping");
                Some(Reply::Pong { id: ping.id })
            }
            Request::QueueSend(request) => {
                WsMetrics::count(&metrics.received, "queue_send");
                self.queue_send(request)
            }
            Request::QueueReceive(request) => {
                WsMetrics::count(&metrics.received, "queue_receive");
                self.queue_receive(request)
            }
            Request::QueueDelete(request) => {
                WsMetrics::count(&metrics.received, "queue_delete");
                self.queue_delete(request)
            }
            Request::TopicPublish(request) => {
                WsMetrics::count(&metrics.received, "topic_publish");
                self.topic_publish(request)
            }
        }
    }

    async fn publish(
        &mut self,
        id: Option<Value>,
        topic: String,
        payload: bytes::Bytes,
        qos: u8,
        retain: bool,
    ) -> Option<Reply> {
        if qos > 1 {
            return Some(self.error(id, "bad_request", format!("qos must be 0 or 1, not {qos}")));
        }
        if let Err(e) = tidewire_core::topic::refuse_reserved(&topic) {
            return Some(self.error(id, "bad_request", e.to_string()));
        }
        if !self.acl.acl().may_publish(&topic) {
            return Some(self.error(
                id,
                "denied",
                format!("not authorized to publish to {topic:?}"),
            ));
        }
        let message = BrokerMessage {
            topic,
            client_id: self.session.client_id.clone(),
            qos,
            retain,
            payload,
            ..BrokerMessage::default()
        };
        let ticket = match self
            .gateway
            .broker()
            .submit(Source::WebSocket, message)
            .await
        {
            Ok(ticket) => ticket,
            Err(e) => return Some(self.error(id, "publish", e.to_string())),
        };
        let errors = self.gateway.metrics.errors.clone();
        self.acks.push_back(Box::pin(async move {
            match ticket.durable().await {
                Ok(stored) if qos == 1 => Some(Reply::Ack {
                    id,
                    op: "publish",
                    stored: Some(stored.into_iter().map(StoredView::from).collect()),
                }),
                Ok(_) => None,
                Err(e) => {
                    WsMetrics::count(&errors, "publish");
                    Some(Reply::error(id, e.to_string()))
                }
            }
        }));
        None
    }

    fn subscribe(&mut self, id: Option<Value>, filter: String) -> Option<Reply> {
        // QoS 2 so each message reports the QoS it was published with.
        let options = SubOptions {
            qos: 2,
            no_local: false,
            retain_as_published: true,
            retain_handling: 0,
            id: None,
        };
        let mqtt = &self.gateway.mqtt;
        match mqtt.subscribe(&self.session, &self.acl.acl(), &filter, options) {
            Ok(send_retained) => {
                if send_retained {
                    mqtt.queue_retained(&self.session, &filter, options);
                }
                id.map(|id| ack(id, "subscribe"))
            }
            Err(e) => Some(self.error(id, "subscribe", format!("{e}: {filter:?}"))),
        }
    }

    fn query(&mut self, id: Value, sql: String) -> Option<Reply> {
        let Ok(permit) = Arc::clone(&self.queries).try_acquire_owned() else {
            let max = self.gateway.settings.max_queries;
            return Some(self.error(
                Some(id),
                "busy",
                format!("{max} queries are already running on this socket (websocket.max_queries)"),
            ));
        };
        let engine = self.gateway.sql.clone();
        let outbox = self.outbox.clone();
        let errors = self.gateway.metrics.errors.clone();
        let access = ReadAccess::of(&self.acl.principal());
        self.helpers.spawn(async move {
            let encoded = engine
                .query_into(&sql, access, |out| {
                    output::to_json(&out).map_err(SqlError::encoding)
                })
                .await;
            let reply = match encoded {
                Ok(result) => Reply::Result { id, result },
                Err(e) => Reply::error(Some(id), e.to_string()),
            };
            if let Reply::Error { .. } = reply {
                WsMetrics::count(&errors, "query");
            }
            // The slot is free only once the answer is on its way, so a
            // client that stops reading cannot pile up finished results.
            let _ = outbox.send(reply).await;
            drop(permit);
        });
        None
    }

    /// Starts a continuous query owned by this socket; returns its id.
    async fn start_query(
        &mut self,
        sql: String,
        window: Option<String>,
        hop: Option<String>,
        allowed_lateness: Option<String>,
        event_time: Option<String>,
    ) -> Result<String, String> {
        self.check_watch_room()?;
        self.watches_started += 1;
        let query_id = format!("ws-{}-{}", self.number, self.watches_started);
        let definition = frames::watch_definition(
            query_id.clone(),
            sql,
            window.as_deref(),
            hop.as_deref(),
            allowed_lateness.as_deref(),
            event_time,
        )?;
        self.gateway
            .queries
            .start(definition)
            .await
            .map(|_| query_id)
            .map_err(|e| e.to_string())
    }

    fn check_watch_room(&self) -> Result<(), String> {
        let max = self.gateway.settings.max_watches;
        if self.watches.len() >= max {
            return Err(format!(
                "{max} watches are already running on this socket (websocket.max_watches)"
            ));
        }
        Ok(())
    }

    /// Why this socket may not watch the continuous query `query`: the
    /// stream it reads is not one the socket's principal may read.
    fn unreadable(&self, query: &str) -> Option<String> {
        let stream = self.gateway.queries.get(query).ok()?.stream;
        (!self.acl.principal().may_read(&stream)).then(|| {
            format!("forbidden: not allowed to read stream {stream:?} (the sql permission)")
        })
    }

    /// Relays the results of the continuous query `query` as frames named
    /// `id`.
    fn watch(&mut self, id: Value, query: String, owned_query: Option<String>) -> Option<Reply> {
        let key = id.to_string();
        let refused = if self.watches.contains_key(&key) {
            Some("a watch with this id is already running on this socket".to_owned())
        } else {
            self.check_watch_room().err()
        };
        let results = match refused.or_else(|| self.unreadable(&query)) {
            Some(e) => Err(e),
            None => self
                .gateway
                .queries
                .subscribe(&query)
                .map_err(|e: SqlError| e.to_string()),
        };
        let results = match results {
            Ok(results) => results,
            Err(e) => {
                if let Some(owned) = &owned_query {
                    let _ = self.gateway.queries.stop(owned);
                }
                return Some(self.error(Some(id), "watch", e));
            }
        };
        let relay = self
            .helpers
            .spawn(relay_windows(id.clone(), results, self.outbox.clone()));
        self.watches.insert(key, Watch { relay, owned_query });
        // As the SPEC has it, a watch answers with results (or an error),
        // not an ack.
        None
    }

    fn stop_watch(&self, watch: Watch) {
        watch.relay.abort();
        if let Some(query) = watch.owned_query {
            let _ = self.gateway.queries.stop(&query);
        }
    }

    /// Sends the next batch of queued messages.
    async fn send_messages(&mut self, sink: &mut Sink) -> Result<(), Close> {
        let batch = self.session.take_ready(SEND_BATCH);
        if batch.is_empty() {
            return Ok(());
        }
        let ts = now_ms();
        for delivery in &batch {
            let message = &delivery.message;
            let frame = MessageFrame::new(
                &message.topic,
                &message.payload,
                ts,
                delivery.qos,
                delivery.retain,
            );
            let text = serde_json::to_string(&frame).unwrap_or_default();
            write(&self.gateway, sink, Message::Text(text.into()), false).await?;
        }
        let sent = self
            .gateway
            .metrics
            .sent
            .get_or_create(&crate::metrics::KindLabel { kind: "message" })
            .clone();
        sent.inc_by(batch.len() as u64);
        flush(&self.gateway, sink).await
    }

    fn error(&self, id: Option<Value>, kind: &'static str, error: impl Into<String>) -> Reply {
        WsMetrics::count(&self.gateway.metrics.errors, kind);
        Reply::error(id, error)
    }

    /// Leaves the router, stops the socket's queries and says goodbye.
    async fn finish(mut self, mut sink: Sink, close: Close) {
        let filters: Vec<String> = self.session.lock().subscriptions.keys().cloned().collect();
        for filter in filters {
            self.gateway.mqtt.unsubscribe(&self.session, &filter);
        }
        for (_, watch) in std::mem::take(&mut self.watches) {
            self.stop_watch(watch);
        }
        self.helpers.abort_all();
        if let Close::Shutdown = close {
            // Publishes already submitted finish; their acks go out.
            while let Some(ack) = self.acks.next().await {
                if let Some(reply) = ack
                    && send_reply(&self.gateway, &mut sink, reply).await.is_err()
                {
                    break;
                }
            }
        }
        let (code, reason, metric) = match close {
            Close::Gone => {
                // Completes the closing handshake when the peer started it
                // (its Close was answered by the WebSocket layer; this
                // flushes the answer).
                let _ = tokio::time::timeout(CLOSE_WAIT, sink.close()).await;
                return;
            }
            Close::Shutdown => (close_code::AWAY, "server shutting down", "shutdown"),
            Close::Silent => (
                close_code::POLICY,
                "no traffic for two ping intervals",
                "silent",
            ),
            Close::WriteTimeout => (close_code::POLICY, "peer too slow to read", "write_timeout"),
            Close::TooBig => (
                close_code::SIZE,
                "frame larger than websocket.max_frame_bytes",
                "too_big",
            ),
        };
        WsMetrics::count(&self.gateway.metrics.closed, metric);
        tracing::debug!(socket = self.number, reason, "closing /ws socket");
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, sink.send(Message::Close(Some(frame)))).await;
    }
}

async fn send_reply(gateway: &Gateway, sink: &mut Sink, reply: Reply) -> Result<(), Close> {
    let mut text = reply.to_text();
    if text.len() > MAX_REPLY_BYTES {
        // Sent as it is, it would pass the write buffer's cap and close
        // the socket with no answer.
        WsMetrics::count(&gateway.metrics.errors, "reply_too_big");
        let error = format!(
            "the answer is {} bytes, over the {MAX_REPLY_BYTES} one /ws frame may carry; \
             ask for less (a LIMIT, a smaller max), or use the HTTP API",
            text.len()
        );
        text = Reply::error(reply.id(), error).to_text();
    }
    WsMetrics::count(&gateway.metrics.sent, reply.kind());
    write(gateway, sink, Message::Text(text.into()), true).await
}

/// Writes a frame (and flushes when asked) within the write timeout.
async fn write(
    gateway: &Gateway,
    sink: &mut Sink,
    message: Message,
    flush: bool,
) -> Result<(), Close> {
    let written = tokio::time::timeout(gateway.settings.write_timeout, async {
        if flush {
            sink.send(message).await
        } else {
            sink.feed(message).await
        }
    })
    .await;
    written_in_time(written)
}

async fn flush(gateway: &Gateway, sink: &mut Sink) -> Result<(), Close> {
    let flushed = tokio::time::timeout(gateway.settings.write_timeout, sink.flush()).await;
    written_in_time(flushed)
}

fn written_in_time(
    outcome: Result<Result<(), axum::Error>, tokio::time::error::Elapsed>,
) -> Result<(), Close> {
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Close::Gone),
        Err(_) => Err(Close::WriteTimeout),
    }
}

fn ack(id: Value, op: &'static str) -> Reply {
    Reply::Ack {
        id: Some(id),
        op,
        stored: None,
    }
}

/// Forwards a continuous query's windows to the socket until it stops.
async fn relay_windows(
    id: Value,
    mut results: broadcast::Receiver<Arc<tidewire_sql::WindowResult>>,
    outbox: mpsc::Sender<Reply>,
) {
    loop {
        let reply = match results.recv().await {
            Ok(window) => Reply::Window {
                id: id.clone(),
                window: window.as_ref().into(),
            },
            Err(broadcast::error::RecvError::Lagged(missed)) => Reply::error(
                Some(id.clone()),
                format!("missed {missed} results: this socket reads too slowly"),
            ),
            Err(broadcast::error::RecvError::Closed) => {
                let _ = outbox
                    .send(Reply::error(Some(id), "the continuous query stopped"))
                    .await;
                return;
            }
        };
        if outbox.send(reply).await.is_err() {
            return;
        }
    }
}
