//! The packet loop of an accepted connection: it waits in one poll over
//! the socket, the session's waker and the pending acks; reads and
//! dispatches packets; submits inbound publishes and acknowledges them in
//! order once durable; sends queued messages within the client's window
//! (with MQTT 5 topic aliases); and ends with a goodbye when the client
//! leaves, keep alive runs out, another connection takes over or the
//! server stops.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use futures_util::future::poll_fn;
use rumqttd::protocol::{
    Disconnect, DisconnectProperties, DisconnectReasonCode, Filter, Packet, PingResp, PubAck,
    PubAckProperties, PubAckReason, PubComp, PubCompReason, PubRec, PubRecReason, PubRel,
    PubRelReason, Publish, PublishProperties, RetainForwardRule, SubAck, Subscribe,
    SubscribeProperties, SubscribeReasonCode, UnsubAck, UnsubAckReason, Unsubscribe, qos,
};
use tidewire_core::{Message, Properties, PublishError, Source};
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadBuf};

use super::context::{Context, SubscribeError};
use super::handshake::Accepted;
use super::{Exit, IDLE_READ_BUFFER, TOPIC_ALIAS_MAXIMUM, Transport, write_out};
use crate::codec::{FrameError, OutgoingPublish, PublishHeader, Version};
use crate::metrics::{self, DropReason, MqttMetrics};
use crate::session::{Delivery, Session, SubOptions};

/// Messages sent per wake-up before the loop flushes and looks at input.
const SEND_BATCH: usize = 256;
/// Bytes buffered for writing before the loop flushes.
const WRITE_HIGH_WATER: usize = 1024 * 1024;
/// Read buffer once a read fills the buffer: busy connections read in bulk.
const BUSY_READ_BUFFER: usize = 64 * 1024;
/// How long a goodbye may take to write and close, and how long a
/// connection closed with a reason goes on reading what its client still
/// sends.
const LINGER: Duration = Duration::from_secs(2);
/// How much a connection closed with a reason reads before it closes.
const LINGER_BYTES: usize = 64 * 1024;

/// What woke a waiting connection.
struct Woken {
    /// Messages are queued for the client.
    ready: bool,
    /// Input was read.
    read: bool,
}

/// An inbound publish waiting to be durable before it is acknowledged.
struct PendingAck {
    pkid: u16,
    qos: u8,
    done: Pin<Box<dyn Future<Output = Result<(), PublishError>> + Send>>,
}

/// MQTT 5 topic aliases in use on a connection, set up on first use.
#[derive(Default)]
pub(super) struct TopicAliases {
    /// Set by the client.
    inbound: BTreeMap<u16, String>,
    /// Set by us, up to the client's Topic Alias Maximum.
    outbound: BTreeMap<String, u16>,
}

/// The topic alias an outbound PUBLISH goes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutboundAlias {
    /// One the client knows: the topic can be left out.
    Known(u16),
    /// One set up by this PUBLISH, which carries the topic too.
    New(u16),
}

impl TopicAliases {
    /// The alias to send `topic` with to a client that takes up to `max`:
    /// the one it has already, a new one, or none once all are in use. We
    /// set at most [`TOPIC_ALIAS_MAXIMUM`] ourselves, whatever the client
    /// allows, so a client allowing 65,535 cannot make the connection keep
    /// 65,535 topic names.
    fn outbound_alias(&mut self, topic: &str, max: u16) -> Option<OutboundAlias> {
        if let Some(known) = self.outbound.get(topic) {
            return Some(OutboundAlias::Known(*known));
        }
        let next = u16::try_from(self.outbound.len() + 1).ok()?;
        if next > max.min(TOPIC_ALIAS_MAXIMUM) {
            return None;
        }
        self.outbound.insert(topic.to_owned(), next);
        Some(OutboundAlias::New(next))
    }
}

/// The topic of an inbound PUBLISH sent with MQTT 5 Topic Alias `alias`:
/// one sent with a topic sets the alias, one sent with an empty topic uses
/// it. `aliases` is set up when the first alias is set. Errors with why
/// the connection is closed: an alias outside 1 to
/// [`TOPIC_ALIAS_MAXIMUM`], or one used before it was set.
fn resolve_inbound_alias(
    aliases: &mut Option<Box<TopicAliases>>,
    topic: String,
    alias: u16,
) -> Result<String, DisconnectReasonCode> {
    if alias == 0 || alias > TOPIC_ALIAS_MAXIMUM {
        return Err(DisconnectReasonCode::TopicAliasInvalid);
    }
    if topic.is_empty() {
        match aliases.as_ref().and_then(|a| a.inbound.get(&alias)) {
            Some(known) => Ok(known.clone()),
            None => Err(DisconnectReasonCode::ProtocolError),
        }
    } else {
        aliases
            .get_or_insert_default()
            .inbound
            .insert(alias, topic.clone());
        Ok(topic)
    }
}

/// An accepted connection with its socket and buffers.
pub(super) struct Connection<S> {
    io: S,
    read_buf: BytesMut,
    out: BytesMut,
    session: Arc<Session>,
    state: Accepted,
    pending: VecDeque<PendingAck>,
    pending_qos: usize,
    aliases: Option<Box<TopicAliases>>,
    /// The last read filled the buffer: more is probably waiting.
    read_full: bool,
    /// Quiet for long enough, it ends [`Connection::run`] to park.
    parkable: bool,
}

impl<S: Transport> Connection<S> {
    /// A connection just accepted by the handshake, with what the client
    /// sent after CONNECT in `read_buf`: resends what its session has in
    /// flight and starts the keep-alive clock.
    pub(super) fn start(io: S, mut read_buf: BytesMut, state: Accepted) -> Box<Self> {
        let nothing_more = read_buf.is_empty();
        if nothing_more {
            // Hold no read buffer while waiting.
            read_buf = BytesMut::new();
        }
        let mut conn = Connection::new(io, read_buf, state, None);
        conn.resend_inflight();
        conn.note_read();
        if nothing_more {
            // Nothing came after CONNECT: the connection may park as soon
            // as it waits, so clients connecting in a crowd do not each
            // hold a task and buffers until their first second is up.
            conn.session.link.mark_quiet();
        }
        conn
    }

    /// Serves the accepted `state` on `io`, with input already read in
    /// `read_buf` and the topic aliases of an earlier run, if any.
    pub(super) fn new(
        io: S,
        read_buf: BytesMut,
        state: Accepted,
        aliases: Option<Box<TopicAliases>>,
    ) -> Box<Self> {
        Box::new(Connection {
            io,
            read_buf,
            out: BytesMut::new(),
            session: Arc::clone(&state.session),
            state,
            pending: VecDeque::new(),
            pending_qos: 0,
            aliases,
            read_full: false,
            parkable: false,
        })
    }

    /// Takes the connection apart: its socket, and what outlives it while
    /// parked (buffers and pending acks go; there are none when quiet).
    pub(super) fn into_parts(self) -> (S, Accepted, Option<Box<TopicAliases>>) {
        (self.io, self.state, self.aliases)
    }

    /// The socket.
    pub(super) fn io(&self) -> &S {
        &self.io
    }

    /// Whether [`Connection::run`] may end to park once quiet.
    pub(super) fn set_parkable(&mut self, parkable: bool) {
        self.parkable = parkable;
    }

    fn v5(&self) -> bool {
        self.state.codec.version() == Version::V5
    }

    pub(super) fn ctx(&self) -> &Arc<Context> {
        self.state.ctx()
    }

    fn send(&mut self, packet: Packet) {
        if let Err(e) = self.state.codec.encode(packet, &mut self.out) {
            tracing::warn!(error = %e, "could not encode a packet");
        }
    }

    /// Serves the connection until it ends, or until it is quiet and may
    /// park ([`Exit::Quiet`]). Runs again after a resume.
    pub(super) async fn run(&mut self) -> Exit {
        // Resumed from the parking lot to be told to go: nothing goes out
        // to this socket that belongs to a successor.
        if let Some(exit) = self.told_to_go() {
            return exit;
        }
        self.pump();
        // Packets that arrived together with CONNECT. Handling input (the
        // publish path included) has a large state, boxed here and below
        // so that a waiting connection's future stays small.
        if let Some(exit) = Box::pin(self.handle_input()).await {
            return exit;
        }
        loop {
            if !self.out.is_empty() {
                if let Err(exit) = poll_fn(|cx| self.poll_write_out(cx)).await {
                    return exit;
                }
                self.ctx().sessions.touch(&self.session.link);
                self.out.clear();
                if self.out.capacity() > 4 * WRITE_HIGH_WATER {
                    self.out = BytesMut::new();
                }
            }
            let woken = match poll_fn(|cx| self.poll_wake(cx)).await {
                Ok(woken) => woken,
                Err(exit) => return exit,
            };
            if woken.read {
                self.note_read();
                if let Some(exit) = Box::pin(self.handle_input()).await {
                    return exit;
                }
                if self.read_buf.is_empty() && !self.read_full {
                    // Idle again: hold no read buffer while waiting.
                    self.read_buf = BytesMut::new();
                }
            }
            if woken.ready {
                self.pump();
            }
        }
    }

    /// Waits for something to do: acknowledges publishes that became
    /// durable, reads input and notices queued messages, or says why the
    /// connection must end.
    fn poll_wake(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<Woken, Exit>> {
        // A connection that must go does not register with the session: a
        // successor may already be registered there.
        if let Some(exit) = self.told_to_go() {
            return Poll::Ready(Err(exit));
        }
        // Register before looking again, so a kick in between still wakes
        // this task.
        let ready = self.session.poll_ready(cx);
        if let Some(exit) = self.told_to_go() {
            return Poll::Ready(Err(exit));
        }
        let mut acked = false;
        while let Some(front) = self.pending.front_mut() {
            match front.done.as_mut().poll(cx) {
                Poll::Ready(result) => {
                    self.acknowledge(result);
                    acked = true;
                }
                Poll::Pending => break,
            }
        }
        let reading = self.pending.len() < usize::from(self.ctx().settings.receive_maximum).max(64);
        let read = match reading.then(|| self.poll_read(cx)) {
            Some(Poll::Ready(Ok(0) | Err(_))) => return Poll::Ready(Err(Exit::Closed)),
            Some(Poll::Ready(Ok(_))) => true,
            Some(Poll::Pending) | None => false,
        };
        // Input waiting in the socket counts, even if this task was busy
        // (say, writing to a slow client) past the deadline.
        if !read && self.state.keepalive_ms != 0 && self.ctx().sessions.overdue(&self.session.link)
        {
            MqttMetrics::count(&self.ctx().metrics.protocol_errors, "keepalive_timeout");
            return Poll::Ready(Err(Exit::Refused(DisconnectReasonCode::KeepAliveTimeout)));
        }
        if ready || acked || read {
            Poll::Ready(Ok(Woken { ready, read }))
        } else if self.quiet() {
            Poll::Ready(Err(Exit::Quiet))
        } else {
            Poll::Pending
        }
    }

    /// Writes (and flushes) the output buffer, taking what is written off
    /// it. A client that stops reading can hold a write up for as long as
    /// TCP keeps trying; meanwhile the connection still hears that it must
    /// go (taken over, shutting down).
    fn poll_write_out(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Result<(), Exit>> {
        let mut io = Pin::new(&mut self.io);
        let written = loop {
            if self.out.is_empty() {
                break io.as_mut().poll_flush(cx);
            }
            match io.as_mut().poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => break Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.out.advance(n),
                other => break other.map_ok(|_| ()),
            }
        };
        match written {
            Poll::Ready(result) => Poll::Ready(result.map_err(|_| Exit::Closed)),
            Poll::Pending => {
                // Woken by a kick, not (more than once) by messages queued.
                self.session.register(cx);
                match self.told_to_go() {
                    Some(exit) => Poll::Ready(Err(exit)),
                    None => Poll::Pending,
                }
            }
        }
    }

    /// True when the connection may park: the session table found it quiet
    /// for a while, and nothing is under way (acks, output, a partial
    /// packet).
    fn quiet(&self) -> bool {
        self.parkable
            && self.session.link.quiet()
            && self.pending.is_empty()
            && self.out.is_empty()
            && self.read_buf.is_empty()
    }

    fn told_to_go(&self) -> Option<Exit> {
        self.state.told_to_go()
    }

    /// Reads what the socket has. An idle connection reads into the stack
    /// and keeps only what arrived; one whose reads fill the buffer gets a
    /// large buffer to read into directly.
    fn poll_read(&mut self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<usize>> {
        let io = Pin::new(&mut self.io);
        if self.read_buf.capacity() > self.read_buf.len() || self.read_full {
            if self.read_buf.capacity() == self.read_buf.len() {
                self.read_buf.reserve(BUSY_READ_BUFFER);
            }
            let read = ready!(tokio_util::io::poll_read_buf(io, cx, &mut self.read_buf))?;
            self.read_full = self.read_buf.len() == self.read_buf.capacity();
            return Poll::Ready(Ok(read));
        }
        let mut stack = [0u8; IDLE_READ_BUFFER];
        let mut buf = ReadBuf::new(&mut stack);
        ready!(io.poll_read(cx, &mut buf))?;
        let read = buf.filled().len();
        self.read_full = read == IDLE_READ_BUFFER;
        self.read_buf.extend_from_slice(buf.filled());
        Poll::Ready(Ok(read))
    }

    /// Restarts the keep-alive clock after input arrived, and tells the
    /// table's sweep the new deadline (and that the connection is active).
    pub(super) fn note_read(&mut self) {
        self.ctx().sessions.note_input(
            &self.session.link,
            self.state.connection,
            Instant::now(),
            self.state.keepalive_ms,
        );
    }

    /// Decodes and handles every whole packet in the read buffer.
    async fn handle_input(&mut self) -> Option<Exit> {
        loop {
            let decoded = self.state.codec.decode(&mut self.read_buf);
            let (packet, header) = match decoded {
                Ok(Some(frame)) => frame,
                Ok(None) => return None,
                Err(e) => {
                    let (reason, label) = frame_error_reason(&e);
                    tracing::debug!(client_id = %self.session.client_id, error = %e, "closing connection");
                    MqttMetrics::count(&self.ctx().metrics.protocol_errors, label);
                    return Some(Exit::Refused(reason));
                }
            };
            if let Some(exit) = self.handle(packet, header).await {
                return Some(exit);
            }
        }
    }

    async fn handle(&mut self, packet: Packet, header: Option<PublishHeader>) -> Option<Exit> {
        match packet {
            Packet::Publish(publish, props) => {
                let header = header?;
                return self.on_publish(publish, props, header).await;
            }
            Packet::PubAck(ack, _) => {
                self.session.lock().complete(ack.pkid);
                self.pump();
            }
            Packet::PubRec(rec, _) => self.on_pubrec(rec),
            Packet::PubRel(rel, _) => {
                let known = self.session.lock().release(rel.pkid);
                if known {
                    // A PUBREL for an exchange begun on an earlier
                    // connection lowers the count too: the quota is per
                    // connection, and this errs toward the client.
                    self.state.unreleased = self.state.unreleased.saturating_sub(1);
                }
                let reason = if known || !self.v5() {
                    PubCompReason::Success
                } else {
                    PubCompReason::PacketIdentifierNotFound
                };
                self.send(Packet::PubComp(
                    PubComp {
                        pkid: rel.pkid,
                        reason,
                    },
                    None,
                ));
            }
            Packet::PubComp(comp, _) => {
                self.session.lock().complete(comp.pkid);
                self.pump();
            }
            Packet::Subscribe(subscribe, props) => self.on_subscribe(subscribe, props),
            Packet::Unsubscribe(unsubscribe, _) => self.on_unsubscribe(unsubscribe),
            Packet::PingReq(_) => self.send(Packet::PingResp(PingResp)),
            Packet::Disconnect(disconnect, props) => {
                return Some(self.on_disconnect(disconnect, props));
            }
            Packet::Connect(..) => {
                MqttMetrics::count(&self.ctx().metrics.protocol_errors, "second_connect");
                return Some(Exit::Refused(DisconnectReasonCode::ProtocolError));
            }
            _ => {
                MqttMetrics::count(&self.ctx().metrics.protocol_errors, "unexpected_packet");
                return Some(Exit::Refused(DisconnectReasonCode::ProtocolError));
            }
        }
        None
    }

    async fn on_publish(
        &mut self,
        publish: Publish,
        props: Option<PublishProperties>,
        header: PublishHeader,
    ) -> Option<Exit> {
        self.ctx().metrics.received.inc(header.qos);
        let PublishHeader { qos, pkid, .. } = header;
        let props = props.unwrap_or_default();

        // Topic, resolving MQTT 5 topic aliases.
        let Ok(mut topic) = String::from_utf8(publish.topic.to_vec()) else {
            return Some(Exit::Refused(DisconnectReasonCode::MalformedPacket));
        };
        if let Some(alias) = props.topic_alias {
            match resolve_inbound_alias(&mut self.aliases, topic, alias) {
                Ok(resolved) => topic = resolved,
                Err(reason) => {
                    if reason == DisconnectReasonCode::TopicAliasInvalid {
                        MqttMetrics::count(&self.ctx().metrics.protocol_errors, "topic_alias");
                    }
                    return Some(Exit::Refused(reason));
                }
            }
        }

        // A QoS 2 retry of a message we already have: acknowledge again.
        if qos == 2 {
            let known = self.session.lock().awaits_release(pkid);
            if known {
                self.send_ack(pkid, 2, Ok(()));
                return None;
            }
            if self.pending.iter().any(|p| p.pkid == pkid && p.qos == 2) {
                return None;
            }
        }
        let receive_maximum = self.ctx().settings.receive_maximum;
        if self.v5()
            && exceeds_receive_maximum(
                qos,
                self.pending_qos,
                self.state.unreleased,
                receive_maximum,
            )
        {
            MqttMetrics::count(&self.ctx().metrics.protocol_errors, "receive_maximum");
            return Some(Exit::Refused(DisconnectReasonCode::ReceiveMaximumExceeded));
        }
        if !self.state.acl.acl().may_publish(&topic) {
            MqttMetrics::count(&self.ctx().metrics.denied, "publish_acl");
            tracing::debug!(client_id = %self.session.client_id, topic, "publish denied by ACL");
            self.send_ack(pkid, qos, Err(PubAckReason::NotAuthorized));
            return None;
        }

        let message = Message {
            topic,
            client_id: self.session.client_id.clone(),
            qos,
            retain: publish.retain,
            payload: publish.payload,
            properties: Properties {
                user: props.user_properties,
                content_type: props.content_type,
                response_topic: props.response_topic,
                correlation_data: props.correlation_data,
                message_expiry_secs: props.message_expiry_interval,
                payload_format_utf8: props.payload_format_indicator == Some(1),
            },
        };
        match self.ctx().broker.submit(Source::Mqtt, message).await {
            Ok(ticket) => {
                if qos > 0 {
                    self.pending_qos += 1;
                }
                self.pending.push_back(PendingAck {
                    pkid,
                    qos,
                    done: Box::pin(ticket.done()),
                });
                None
            }
            Err(e) => self.refused_publish(pkid, qos, &e),
        }
    }

    /// Answers a publish the broker refused, by protocol version.
    fn refused_publish(&mut self, pkid: u16, qos: u8, e: &PublishError) -> Option<Exit> {
        tracing::debug!(client_id = %self.session.client_id, error = %e, "publish refused");
        match publish_refusal(e, self.v5()) {
            Ok(reason) => {
                self.send_ack(pkid, qos, Err(reason));
                None
            }
            Err(reason) => Some(Exit::Refused(reason)),
        }
    }

    /// Sends PUBACK/PUBREC for `pkid` (nothing for QoS 0). MQTT 3.1.1 has no
    /// failure codes, so a refusal is acknowledged plainly there.
    fn send_ack(&mut self, pkid: u16, qos: u8, outcome: Result<(), PubAckReason>) {
        let reason = ack_reason(outcome, self.v5());
        match qos {
            1 => self.send(Packet::PubAck(PubAck { pkid, reason }, None)),
            2 => {
                if reason == PubAckReason::Success && self.session.lock().await_release(pkid) {
                    self.state.unreleased = self.state.unreleased.saturating_add(1);
                }
                self.send(Packet::PubRec(
                    PubRec {
                        pkid,
                        reason: pubrec_reason(reason),
                    },
                    None,
                ));
            }
            _ => {}
        }
    }

    /// Acknowledges the oldest pending publish once it is durable.
    fn acknowledge(&mut self, result: Result<(), PublishError>) {
        let Some(done) = self.pending.pop_front() else {
            return;
        };
        if done.qos > 0 {
            self.pending_qos -= 1;
        }
        match result {
            Ok(_) => self.send_ack(done.pkid, done.qos, Ok(())),
            Err(e) => {
                tracing::warn!(client_id = %self.session.client_id, error = %e, "publish not stored");
                let props = PubAckProperties {
                    reason_string: Some(e.to_string()),
                    user_properties: Vec::new(),
                };
                if self.v5() && done.qos == 1 {
                    self.send(Packet::PubAck(
                        PubAck {
                            pkid: done.pkid,
                            reason: PubAckReason::UnspecifiedError,
                        },
                        Some(props),
                    ));
                } else {
                    self.send_ack(done.pkid, done.qos, Err(PubAckReason::UnspecifiedError));
                }
            }
        }
    }

    fn on_pubrec(&mut self, rec: PubRec) {
        let failed = !matches!(
            rec.reason,
            PubRecReason::Success | PubRecReason::NoMatchingSubscribers
        );
        if failed {
            self.session.lock().complete(rec.pkid);
            self.pump();
            return;
        }
        let known = self.session.lock().mark_released(rec.pkid);
        let reason = if known || !self.v5() {
            PubRelReason::Success
        } else {
            PubRelReason::PacketIdentifierNotFound
        };
        self.send(Packet::PubRel(
            PubRel {
                pkid: rec.pkid,
                reason,
            },
            None,
        ));
    }

    fn on_subscribe(&mut self, subscribe: Subscribe, props: Option<SubscribeProperties>) {
        let id = props.and_then(|p| p.id);
        let v5 = self.v5();
        let mut codes = Vec::with_capacity(subscribe.filters.len());
        let mut retained = Vec::new();
        for filter in subscribe.filters {
            let options = sub_options(&filter, v5, id);
            let outcome =
                self.ctx()
                    .subscribe(&self.session, &self.state.acl.acl(), &filter.path, options);
            codes.push(match outcome {
                Ok(send_retained) => {
                    retained.extend(send_retained.then_some((filter.path, options)));
                    SubscribeReasonCode::Success(qos(options.qos).unwrap_or_default())
                }
                Err(e) => refused_subscription_code(e, v5),
            });
        }
        self.send(Packet::SubAck(
            SubAck {
                pkid: subscribe.pkid,
                return_codes: codes,
            },
            None,
        ));
        for (filter, options) in retained {
            self.ctx().queue_retained(&self.session, &filter, options);
        }
    }

    fn on_unsubscribe(&mut self, unsubscribe: Unsubscribe) {
        let reasons = unsubscribe
            .filters
            .iter()
            .map(|filter| {
                if self.ctx().unsubscribe(&self.session, filter) {
                    UnsubAckReason::Success
                } else {
                    UnsubAckReason::NoSubscriptionExisted
                }
            })
            .collect();
        self.send(Packet::UnsubAck(
            UnsubAck {
                pkid: unsubscribe.pkid,
                reasons,
            },
            None,
        ));
    }

    fn on_disconnect(
        &mut self,
        disconnect: Disconnect,
        props: Option<DisconnectProperties>,
    ) -> Exit {
        if let Some(expiry) = props.and_then(|p| p.session_expiry_interval) {
            self.session.lock().expiry_secs = expiry;
        }
        Exit::Disconnected {
            with_will: disconnect.reason_code == DisconnectReasonCode::DisconnectWithWillMessage,
        }
    }

    /// After a reconnect: resend unacknowledged messages with DUP set, and
    /// PUBREL for those already PUBREC'd.
    fn resend_inflight(&mut self) {
        let inflight = self.session.lock().inflight_in_order();
        for (pkid, entry) in inflight {
            if entry.released {
                self.send(Packet::PubRel(
                    PubRel {
                        pkid,
                        reason: PubRelReason::Success,
                    },
                    None,
                ));
            } else {
                self.send_publish(&entry.delivery, pkid, true, false);
            }
        }
    }

    /// Sends queued messages while the client's window allows.
    fn pump(&mut self) {
        let window = usize::from(
            self.ctx()
                .settings
                .max_inflight
                .min(self.state.client_receive_max),
        );
        let now = Instant::now();
        for _ in 0..SEND_BATCH {
            if self.out.len() >= WRITE_HIGH_WATER {
                break;
            }
            let next = {
                let mut state = self.session.lock();
                let Some(front) = state.queue.front() else {
                    return;
                };
                if front.qos > 0 && state.inflight_count() >= window {
                    return;
                }
                let Some(delivery) = state.queue.pop_front() else {
                    return;
                };
                if delivery.expired(now) {
                    self.ctx()
                        .metrics
                        .dropped(DropReason::Expired, metrics::SessionKind::Mqtt);
                    continue;
                }
                let pkid = if delivery.qos > 0 {
                    match state.next_pkid() {
                        Some(pkid) => {
                            state.track(pkid, delivery.clone());
                            pkid
                        }
                        None => {
                            state.queue.push_front(delivery);
                            return;
                        }
                    }
                } else {
                    0
                };
                (delivery, pkid)
            };
            let (delivery, pkid) = next;
            let before = self.out.len();
            self.send_publish(&delivery, pkid, false, true);
            let too_large = self.out.len() - before > self.state.client_max_packet as usize;
            if too_large {
                self.out.truncate(before);
                if pkid > 0 {
                    self.session.lock().complete(pkid);
                }
                self.ctx()
                    .metrics
                    .dropped(DropReason::TooLargeForClient, metrics::SessionKind::Mqtt);
                continue;
            }
            self.ctx().metrics.sent.inc(delivery.qos);
        }
        // More may be waiting: come back after flushing.
        self.session.notify();
    }

    /// Encodes a delivery as a PUBLISH into the output buffer.
    fn send_publish(&mut self, delivery: &Delivery, pkid: u16, dup: bool, use_alias: bool) {
        let message = &delivery.message;
        let mut topic: &str = &message.topic;
        let mut alias = None;
        if use_alias && self.v5() && self.state.client_alias_max > 0 {
            let max = self.state.client_alias_max;
            let aliases = self.aliases.get_or_insert_default();
            match aliases.outbound_alias(&message.topic, max) {
                Some(OutboundAlias::Known(known)) => {
                    alias = Some(known);
                    topic = "";
                }
                Some(OutboundAlias::New(new)) => alias = Some(new),
                None => {}
            }
        }
        let publish = OutgoingPublish {
            topic: topic.as_bytes(),
            payload: &message.payload,
            qos: delivery.qos,
            pkid,
            dup,
            retain: delivery.retain,
        };
        // 3.1.1 has no properties: nothing to build.
        let props = self.v5().then(|| {
            let p = &message.properties;
            PublishProperties {
                payload_format_indicator: p.payload_format_utf8.then_some(1),
                message_expiry_interval: delivery.remaining_secs(Instant::now()),
                topic_alias: alias,
                response_topic: p.response_topic.clone(),
                correlation_data: p.correlation_data.clone(),
                user_properties: p.user.clone(),
                subscription_identifiers: delivery.subscription_ids.clone(),
                content_type: p.content_type.clone(),
            }
        });
        let encoded = self
            .state
            .codec
            .encode_publish(&publish, props.as_ref(), &mut self.out);
        if let Err(e) = encoded {
            tracing::warn!(error = %e, "could not encode a PUBLISH");
        }
    }

    /// Ends the connection: finish acks, say goodbye, publish the will
    /// when due, release the session, and read on for a while after a
    /// goodbye with a reason.
    pub(super) async fn finish(&mut self, exit: Exit) {
        // Publishes already submitted finish (they are in the streams'
        // queues and reach subscribers); their acks go out if the peer is
        // still there.
        while let Some(front) = self.pending.front_mut() {
            let result = front.done.as_mut().await;
            self.acknowledge(result);
        }
        if exit == Exit::TakenOver {
            // The client is back on a connection that waits for this one;
            // what is left to send here can wait for a slow socket alone.
            self.state.release(exit);
        }
        let goodbye = exit.disconnect_reason().filter(|_| self.v5());
        if let Some(reason_code) = goodbye {
            self.send(Packet::Disconnect(Disconnect { reason_code }, None));
        }
        let (io, out) = (&mut self.io, &self.out);
        let _ = tokio::time::timeout(LINGER, async {
            if !out.is_empty() {
                let _ = write_out(io, out).await;
            }
            // A WebSocket's close flushes its Close frame: a client that
            // stopped reading could hold it up.
            let _ = io.shutdown().await;
        })
        .await;
        self.state.release(exit);
        if goodbye.is_some() && !self.ctx().is_closing() {
            linger(&mut self.io).await;
        }
    }
}

/// Reads and discards what a client we said goodbye to still sends, for a
/// while: closing a socket with unread input resets it, and a reset can
/// destroy the DISCONNECT (and its reason) before the client reads it.
async fn linger<S: Transport>(io: &mut S) {
    let mut scratch = [0u8; IDLE_READ_BUFFER];
    let mut discarded = 0;
    let _ = tokio::time::timeout(LINGER, async {
        while discarded < LINGER_BYTES {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => return,
                Ok(n) => discarded += n,
            }
        }
    })
    .await;
}

/// Why a connection is closed when its input cannot be framed, and the
/// label it is counted under.
fn frame_error_reason(e: &FrameError) -> (DisconnectReasonCode, &'static str) {
    match e {
        FrameError::TooLarge(_) => (DisconnectReasonCode::PacketTooLarge, "packet_too_large"),
        FrameError::UnexpectedType(_) => (DisconnectReasonCode::ProtocolError, "unexpected_packet"),
        _ => (DisconnectReasonCode::MalformedPacket, "malformed"),
    }
}

/// Whether a QoS `qos` publish from an MQTT 5 client goes over our Receive
/// Maximum: publishes waiting to be durable count against it, and so do
/// QoS 2 ones waiting for PUBREL. QoS 0 never does.
fn exceeds_receive_maximum(
    qos: u8,
    awaiting_durability: usize,
    awaiting_release: u16,
    receive_maximum: u16,
) -> bool {
    qos > 0 && awaiting_durability + usize::from(awaiting_release) >= usize::from(receive_maximum)
}

/// How a publish the broker refused is answered: `Ok` acknowledged with
/// this reason, `Err` the connection closed with this one. MQTT 3.1.1 has
/// no negative ack: an invalid topic or a failed store closes the
/// connection (the client will retry); an oversize payload (for the broker
/// or for a queue or fan-out topic the topic feeds) is acknowledged and dropped, as
/// Mosquitto does, and counted as refused.
fn publish_refusal(e: &PublishError, v5: bool) -> Result<PubAckReason, DisconnectReasonCode> {
    let reason = match e {
        PublishError::InvalidTopic(_) => PubAckReason::TopicNameInvalid,
        PublishError::PayloadTooLarge { .. } => PubAckReason::QuotaExceeded,
        // A queue or fan-out topic fed by the topic refused it (over its
        // size limit).
        PublishError::Queue {
            client_error: true, ..
        }
        | PublishError::Topic {
            client_error: true, ..
        } => PubAckReason::QuotaExceeded,
        _ => PubAckReason::UnspecifiedError,
    };
    if !v5 && reason != PubAckReason::QuotaExceeded {
        return Err(DisconnectReasonCode::UnspecifiedError);
    }
    Ok(reason)
}

/// The reason code of a PUBACK/PUBREC: MQTT 3.1.1 has no failure codes,
/// so a refusal is acknowledged plainly there.
fn ack_reason(outcome: Result<(), PubAckReason>, v5: bool) -> PubAckReason {
    match outcome {
        Ok(()) => PubAckReason::Success,
        Err(_) if !v5 => PubAckReason::Success,
        Err(reason) => reason,
    }
}

/// The options a SUBSCRIBE asks for one filter (QoS at most 2), with
/// subscription identifier `id`. No Local and Retain As Published are
/// MQTT 5's.
fn sub_options(filter: &Filter, v5: bool, id: Option<usize>) -> SubOptions {
    SubOptions {
        qos: (filter.qos as u8).min(2),
        no_local: v5 && filter.nolocal,
        retain_as_published: v5 && filter.preserve_retain,
        retain_handling: match filter.retain_forward_rule {
            RetainForwardRule::OnEverySubscribe => 0,
            RetainForwardRule::OnNewSubscribe => 1,
            RetainForwardRule::Never => 2,
        },
        id,
    }
}

/// The SUBACK code for a refused subscription: 3.1.1 has only "failure".
fn refused_subscription_code(e: SubscribeError, v5: bool) -> SubscribeReasonCode {
    match e {
        _ if !v5 => SubscribeReasonCode::Failure,
        SubscribeError::InvalidFilter => SubscribeReasonCode::TopicFilterInvalid,
        SubscribeError::NotAuthorized => SubscribeReasonCode::NotAuthorized,
    }
}

fn pubrec_reason(reason: PubAckReason) -> PubRecReason {
    match reason {
        PubAckReason::Success => PubRecReason::Success,
        PubAckReason::NoMatchingSubscribers => PubRecReason::NoMatchingSubscribers,
        PubAckReason::UnspecifiedError => PubRecReason::UnspecifiedError,
        PubAckReason::ImplementationSpecificError => PubRecReason::ImplementationSpecificError,
        PubAckReason::NotAuthorized => PubRecReason::NotAuthorized,
        PubAckReason::TopicNameInvalid => PubRecReason::TopicNameInvalid,
        PubAckReason::PacketIdentifierInUse => PubRecReason::PacketIdentifierInUse,
        PubAckReason::QuotaExceeded => PubRecReason::QuotaExceeded,
        PubAckReason::PayloadFormatInvalid => PubRecReason::PayloadFormatInvalid,
    }
}

#[cfg(test)]
mod tests {
    use rumqttd::protocol::{ConnectProperties, QoS};
    use tidewire_core::topic::TopicError;
    use tokio::io::DuplexStream;

    use super::super::handshake::no_connect_properties;
    use super::super::test_support::{TestContext, connect, count, delivery};
    use super::*;
    use crate::codec::Codec;

    #[test]
    fn frame_errors_close_with_a_reason_that_says_what_was_wrong() {
        assert_eq!(
            frame_error_reason(&FrameError::TooLarge(1 << 30)),
            (DisconnectReasonCode::PacketTooLarge, "packet_too_large")
        );
        assert_eq!(
            frame_error_reason(&FrameError::UnexpectedType(2)),
            (DisconnectReasonCode::ProtocolError, "unexpected_packet")
        );
        assert_eq!(
            frame_error_reason(&FrameError::Malformed("bad length".into())),
            (DisconnectReasonCode::MalformedPacket, "malformed")
        );
    }

    #[test]
    fn inbound_topic_aliases_are_set_with_a_topic_and_used_without_one() {
        let mut aliases = None;
        assert_eq!(
            resolve_inbound_alias(&mut aliases, String::new(), 3),
            Err(DisconnectReasonCode::ProtocolError),
            "used before it was set"
        );
        assert!(aliases.is_none(), "nothing set up for a failed lookup");
        assert_eq!(
            resolve_inbound_alias(&mut aliases, "plant/a".into(), 3),
            Ok("plant/a".to_owned())
        );
        assert_eq!(
            resolve_inbound_alias(&mut aliases, String::new(), 3),
            Ok("plant/a".to_owned())
        );
        assert_eq!(
            resolve_inbound_alias(&mut aliases, "plant/b".into(), 3),
            Ok("plant/b".to_owned()),
            "set again"
        );
        assert_eq!(
            resolve_inbound_alias(&mut aliases, String::new(), 3),
            Ok("plant/b".to_owned())
        );
        for invalid in [0, TOPIC_ALIAS_MAXIMUM + 1, u16::MAX] {
            assert_eq!(
                resolve_inbound_alias(&mut aliases, "plant/c".into(), invalid),
                Err(DisconnectReasonCode::TopicAliasInvalid),
                "alias {invalid}"
            );
        }
        assert_eq!(
            resolve_inbound_alias(&mut aliases, "plant/c".into(), TOPIC_ALIAS_MAXIMUM),
            Ok("plant/c".to_owned())
        );
    }

    #[test]
    fn outbound_topic_aliases_are_numbered_up_to_the_client_s_maximum() {
        let mut aliases = TopicAliases::default();
        assert_eq!(aliases.outbound_alias("a", 2), Some(OutboundAlias::New(1)));
        assert_eq!(aliases.outbound_alias("b", 2), Some(OutboundAlias::New(2)));
        assert_eq!(aliases.outbound_alias("c", 2), None, "all in use");
        assert_eq!(
            aliases.outbound_alias("a", 2),
            Some(OutboundAlias::Known(1))
        );
        assert_eq!(
            aliases.outbound_alias("b", 2),
            Some(OutboundAlias::Known(2))
        );
        let mut generous = TopicAliases::default();
        for i in 1..=TOPIC_ALIAS_MAXIMUM {
            let topic = format!("t/{i}");
            assert_eq!(
                generous.outbound_alias(&topic, u16::MAX),
                Some(OutboundAlias::New(i))
            );
        }
        assert_eq!(generous.outbound_alias("one/more", u16::MAX), None);
    }

    #[test]
    fn receive_maximum_counts_publishes_awaiting_durability_or_release() {
        // (qos, awaiting durability, awaiting PUBREL, receive maximum)
        let cases = [
            (1, 0, 0, 1, false),
            (1, 1, 0, 1, true),
            (2, 0, 1, 1, true),
            (1, 1, 1, 3, false),
            (1, 2, 1, 3, true),
            (0, 10, 10, 1, false),
        ];
        for (qos, durable, release, max, exceeds) in cases {
            assert_eq!(
                exceeds_receive_maximum(qos, durable, release, max),
                exceeds,
                "qos {qos}, awaiting durability {durable}, PUBREL {release}, maximum {max}"
            );
        }
    }

    #[test]
    fn refused_publishes_are_answered_in_each_version_s_terms() {
        let invalid = PublishError::InvalidTopic(TopicError::Empty);
        let too_large = PublishError::PayloadTooLarge { size: 10, max: 5 };
        assert_eq!(
            publish_refusal(&invalid, true),
            Ok(PubAckReason::TopicNameInvalid)
        );
        assert_eq!(
            publish_refusal(&too_large, true),
            Ok(PubAckReason::QuotaExceeded)
        );
        assert_eq!(
            publish_refusal(&invalid, false),
            Err(DisconnectReasonCode::UnspecifiedError),
            "3.1.1 closes"
        );
        assert_eq!(
            publish_refusal(&too_large, false),
            Ok(PubAckReason::QuotaExceeded),
            "acknowledged and dropped"
        );
        assert_eq!(
            ack_reason(Err(PubAckReason::QuotaExceeded), false),
            PubAckReason::Success,
            "3.1.1 acknowledges plainly"
        );
        assert_eq!(
            ack_reason(Err(PubAckReason::QuotaExceeded), true),
            PubAckReason::QuotaExceeded
        );
        assert_eq!(ack_reason(Ok(()), true), PubAckReason::Success);
    }

    #[test]
    fn pubrec_carries_the_reason_a_puback_would() {
        let pairs = [
            (PubAckReason::Success, PubRecReason::Success),
            (PubAckReason::NotAuthorized, PubRecReason::NotAuthorized),
            (
                PubAckReason::TopicNameInvalid,
                PubRecReason::TopicNameInvalid,
            ),
            (PubAckReason::QuotaExceeded, PubRecReason::QuotaExceeded),
            (
                PubAckReason::UnspecifiedError,
                PubRecReason::UnspecifiedError,
            ),
        ];
        for (ack, rec) in pairs {
            assert_eq!(pubrec_reason(ack), rec);
        }
    }

    #[test]
    fn subscription_options_and_refusals_follow_the_version() {
        let filter = Filter {
            path: "plant/#".into(),
            qos: QoS::ExactlyOnce,
            nolocal: true,
            preserve_retain: true,
            retain_forward_rule: RetainForwardRule::OnNewSubscribe,
        };
        let v5 = sub_options(&filter, true, Some(7));
        assert_eq!(
            (
                v5.qos,
                v5.no_local,
                v5.retain_as_published,
                v5.retain_handling,
                v5.id
            ),
            (2, true, true, 1, Some(7))
        );
        let v311 = sub_options(&filter, false, None);
        assert_eq!((v311.no_local, v311.retain_as_published), (false, false));
        let never = Filter {
            retain_forward_rule: RetainForwardRule::Never,
            ..filter
        };
        assert_eq!(sub_options(&never, true, None).retain_handling, 2);

        assert_eq!(
            refused_subscription_code(SubscribeError::InvalidFilter, true),
            SubscribeReasonCode::TopicFilterInvalid
        );
        assert_eq!(
            refused_subscription_code(SubscribeError::NotAuthorized, true),
            SubscribeReasonCode::NotAuthorized
        );
        for e in [SubscribeError::InvalidFilter, SubscribeError::NotAuthorized] {
            assert_eq!(
                refused_subscription_code(e, false),
                SubscribeReasonCode::Failure
            );
        }
    }

    /// A client's PUBLISH, as bytes.
    fn publish(version: Version, topic: &str, qos: u8, pkid: u16) -> BytesMut {
        let mut out = BytesMut::new();
        let publish = OutgoingPublish {
            topic: topic.as_bytes(),
            payload: b"21.5",
            qos,
            pkid,
            dup: false,
            retain: false,
        };
        let props = (version == Version::V5).then(PublishProperties::default);
        Codec::new(version, 1 << 20)
            .encode_publish(&publish, props.as_ref(), &mut out)
            .expect("encode PUBLISH");
        out
    }

    /// A client's packet other than PUBLISH, as bytes.
    fn packet(version: Version, packet: Packet) -> BytesMut {
        let mut out = BytesMut::new();
        Codec::new(version, 1 << 20)
            .encode(packet, &mut out)
            .expect("encode");
        out
    }

    /// Takes what the connection has sent, decoded, with the header of
    /// each PUBLISH.
    fn sent_frames(conn: &mut Connection<DuplexStream>) -> Vec<(Packet, Option<PublishHeader>)> {
        let codec = Codec::new(conn.state.codec.version(), 1 << 20);
        let mut out = std::mem::take(&mut conn.out);
        let mut frames = Vec::new();
        while let Some(frame) = codec.decode(&mut out).expect("a valid packet") {
            frames.push(frame);
        }
        frames
    }

    /// Takes what the connection has sent, decoded.
    fn sent(conn: &mut Connection<DuplexStream>) -> Vec<Packet> {
        sent_frames(conn)
            .into_iter()
            .map(|(packet, _)| packet)
            .collect()
    }

    /// Waits for every pending publish to be durable and acknowledges it.
    async fn acknowledge_durable(conn: &mut Connection<DuplexStream>) {
        while let Some(front) = conn.pending.front_mut() {
            let result = front.done.as_mut().await;
            conn.acknowledge(result);
        }
    }

    #[tokio::test]
    async fn a_v5_client_over_the_receive_maximum_is_disconnected() {
        let test = TestContext::new("receive_maximum = 2");
        let (mut conn, _client) = test.connection(Version::V5, "sensor").await;
        for (qos, pkid) in [(1, 1), (1, 2), (0, 0)] {
            conn.read_buf
                .extend_from_slice(&publish(Version::V5, "plant/t", qos, pkid));
        }
        assert_eq!(conn.handle_input().await, None, "QoS 0 does not count");
        assert_eq!((conn.pending.len(), conn.pending_qos), (3, 2));
        conn.read_buf
            .extend_from_slice(&publish(Version::V5, "plant/t", 1, 3));
        assert_eq!(
            conn.handle_input().await,
            Some(Exit::Refused(DisconnectReasonCode::ReceiveMaximumExceeded))
        );
        assert_eq!(
            count(&test.ctx.metrics.protocol_errors, "receive_maximum"),
            1
        );
        acknowledge_durable(&mut conn).await;
        assert_eq!(conn.pending_qos, 0);
        let acks: Vec<u16> = sent(&mut conn)
            .into_iter()
            .map(|p| match p {
                Packet::PubAck(ack, _) if ack.reason == PubAckReason::Success => ack.pkid,
                other => panic!("expected a PUBACK, got {other:?}"),
            })
            .collect();
        assert_eq!(acks, [1, 2], "in arrival order, once durable");
    }

    #[tokio::test]
    async fn a_3_1_1_client_has_no_receive_maximum() {
        let test = TestContext::new("receive_maximum = 1");
        let (mut conn, _client) = test.connection(Version::V311, "sensor").await;
        for pkid in 1..=3 {
            conn.read_buf
                .extend_from_slice(&publish(Version::V311, "plant/t", 1, pkid));
        }
        assert_eq!(conn.handle_input().await, None);
        assert_eq!(conn.pending_qos, 3);
    }

    #[tokio::test]
    async fn qos2_publishes_count_against_the_receive_maximum_until_pubrel() {
        let test = TestContext::new("receive_maximum = 1");
        let (mut conn, _client) = test.connection(Version::V5, "sensor").await;
        conn.read_buf
            .extend_from_slice(&publish(Version::V5, "plant/t", 2, 7));
        assert_eq!(conn.handle_input().await, None);
        acknowledge_durable(&mut conn).await;
        assert_eq!((conn.pending_qos, conn.state.unreleased), (0, 1));
        assert!(matches!(
            sent(&mut conn)[..],
            [Packet::PubRec(
                PubRec {
                    pkid: 7,
                    reason: PubRecReason::Success
                },
                _
            )]
        ));

        // A retry before PUBREL is acknowledged again, and not counted twice.
        conn.read_buf
            .extend_from_slice(&publish(Version::V5, "plant/t", 2, 7));
        assert_eq!(conn.handle_input().await, None);
        assert!(conn.pending.is_empty(), "not submitted again");
        assert_eq!(conn.state.unreleased, 1);
        assert!(matches!(
            sent(&mut conn)[..],
            [Packet::PubRec(PubRec { pkid: 7, .. }, _)]
        ));

        // PUBREL frees the place.
        let release = PubRel {
            pkid: 7,
            reason: PubRelReason::Success,
        };
        conn.read_buf
            .extend_from_slice(&packet(Version::V5, Packet::PubRel(release, None)));
        assert_eq!(conn.handle_input().await, None);
        assert_eq!(conn.state.unreleased, 0);
        assert!(matches!(
            sent(&mut conn)[..],
            [Packet::PubComp(
                PubComp {
                    pkid: 7,
                    reason: PubCompReason::Success
                },
                _
            )]
        ));
        conn.read_buf
            .extend_from_slice(&publish(Version::V5, "plant/t", 2, 8));
        assert_eq!(conn.handle_input().await, None, "room again");
        acknowledge_durable(&mut conn).await;

        // Unreleased, 8 holds the only place.
        conn.read_buf
            .extend_from_slice(&publish(Version::V5, "plant/t", 1, 9));
        assert_eq!(
            conn.handle_input().await,
            Some(Exit::Refused(DisconnectReasonCode::ReceiveMaximumExceeded))
        );
    }

    #[tokio::test]
    async fn a_publish_the_acl_denies_is_refused_in_v5_and_acknowledged_in_3_1_1() {
        let test = TestContext::new("[anonymous]\npublish = [\"plant/#\"]");
        for (version, reason) in [
            (Version::V5, PubAckReason::NotAuthorized),
            (Version::V311, PubAckReason::Success),
        ] {
            let (mut conn, _client) = test.connection(version, "sensor").await;
            conn.read_buf
                .extend_from_slice(&publish(version, "office/t", 1, 4));
            assert_eq!(conn.handle_input().await, None);
            assert!(conn.pending.is_empty(), "not submitted");
            assert_eq!(
                sent(&mut conn),
                [Packet::PubAck(PubAck { pkid: 4, reason }, None)],
                "{version:?}"
            );
        }
        assert_eq!(count(&test.ctx.metrics.denied, "publish_acl"), 2);
    }

    /// Takes the topics and packet ids of the PUBLISH packets sent.
    fn published(conn: &mut Connection<DuplexStream>) -> Vec<(String, u16)> {
        sent_frames(conn)
            .into_iter()
            .map(|frame| match frame {
                (Packet::Publish(publish, _), Some(header)) => (
                    String::from_utf8(publish.topic.to_vec()).expect("UTF-8"),
                    header.pkid,
                ),
                other => panic!("expected a PUBLISH, got {other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn messages_are_sent_within_the_client_s_window() {
        let test = TestContext::new("");
        let props = ConnectProperties {
            receive_maximum: Some(1),
            ..no_connect_properties()
        };
        let (mut conn, _client) = test
            .connection_with(Version::V5, connect("display", true), Some(props))
            .await;
        for topic in ["plant/a", "plant/b", "plant/c"] {
            conn.session.enqueue(delivery(topic, 1));
        }
        conn.pump();
        let first = published(&mut conn);
        assert_eq!(first.len(), 1, "a window of one: {first:?}");
        assert_eq!(first[0].0, "plant/a");
        assert_eq!(conn.session.inspect(|s| s.inflight_count()), 1);

        let ack = PubAck {
            pkid: first[0].1,
            reason: PubAckReason::Success,
        };
        conn.read_buf
            .extend_from_slice(&packet(Version::V5, Packet::PubAck(ack, None)));
        assert_eq!(conn.handle_input().await, None);
        let next: Vec<String> = published(&mut conn)
            .into_iter()
            .map(|(topic, _)| topic)
            .collect();
        assert_eq!(next, ["plant/b"], "the PUBACK made room for one more");
        assert_eq!(conn.session.inspect(|s| s.queue.len()), 1);
    }

    #[tokio::test]
    async fn expired_messages_are_dropped_not_sent() {
        let test = TestContext::new("");
        let (mut conn, _client) = test.connection(Version::V5, "display").await;
        let mut stale = delivery("plant/old", 0);
        stale.expires_at = Some(Instant::now());
        conn.session.enqueue(stale);
        conn.session.enqueue(delivery("plant/new", 0));
        conn.pump();
        assert_eq!(published(&mut conn), [("plant/new".to_owned(), 0)]);
    }
}
