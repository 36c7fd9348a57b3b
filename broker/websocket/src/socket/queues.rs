//! A `/ws` socket's queue ops. `queue_send` and `queue_delete` are
//! answered in order with the socket's publish acks, once durable (they
//! count towards `websocket.max_inflight_publishes`); `queue_receive`
//! runs beside the socket, so a long poll never holds up its other
//! traffic, with at most [`MAX_RECEIVES`] waiting per socket. The
//! socket's principal needs the `queues` permission for the queue, as over
//! HTTP.

use std::sync::Arc;

use tidewire_queues::Queue;
use tidewire_queues::json::{self, MessageView};

use super::Socket;
use crate::frames::{QueueAnswer, QueueDelete, QueueReceive, QueueSend, Reply};
use crate::metrics::WsMetrics;

/// Queue receives one socket may have waiting at once.
pub(super) const MAX_RECEIVES: usize = 4;

impl Socket {
    /// Sends a message; its answer joins the acks.
    pub(super) fn queue_send(&mut self, request: QueueSend) -> Option<Reply> {
        let QueueSend { id, queue, message } = request;
        let queue = match self.usable_queue(&queue) {
            Ok(queue) => queue,
            Err(e) => return Some(self.error(Some(id), "queue_send", e)),
        };
        let sender = self
            .acl
            .principal()
            .username()
            .map_or_else(|| self.session.client_id.clone(), str::to_owned);
        let out = match message.into_outgoing(sender) {
            Ok(out) => out,
            Err(e) => return Some(self.error(Some(id), "queue_send", json::describe(&e))),
        };
        let errors = self.gateway.metrics.errors.clone();
        self.acks.push_back(Box::pin(async move {
            Some(match queue.send(out).await {
                Ok(sent) => Reply::Queue {
                    id,
                    answer: QueueAnswer::Sent(sent.into()),
                },
                Err(e) => {
                    WsMetrics::count(&errors, "queue_send");
                    Reply::error(Some(id), json::describe(&e))
                }
            })
        }));
        None
    }

    /// Deletes a received message; its answer joins the acks.
    pub(super) fn queue_delete(&mut self, request: QueueDelete) -> Option<Reply> {
        let QueueDelete {
            id,
            queue,
            receipt_handle,
            ..
        } = request;
        let queue = match self.usable_queue(&queue) {
            Ok(queue) => queue,
            Err(e) => return Some(self.error(Some(id), "queue_delete", e)),
        };
        let errors = self.gateway.metrics.errors.clone();
        self.acks.push_back(Box::pin(async move {
            Some(match queue.delete(&receipt_handle).await {
                Ok(()) => Reply::Queue {
                    id,
                    answer: QueueAnswer::Deleted {},
                },
                Err(e) => {
                    WsMetrics::count(&errors, "queue_delete");
                    Reply::error(Some(id), json::describe(&e))
                }
            })
        }));
        None
    }

    /// Starts a receive beside the socket; its answer comes through the
    /// outbox.
    pub(super) fn queue_receive(&mut self, request: QueueReceive) -> Option<Reply> {
        let QueueReceive { id, queue, receive } = request;
        if let Err(e) = self.may_use_queue(&queue) {
            return Some(self.error(Some(id), "queue_receive", e));
        }
        let options = match receive.options() {
            Ok(options) => options,
            Err(e) => return Some(self.error(Some(id), "queue_receive", json::describe(&e))),
        };
        let Ok(permit) = Arc::clone(&self.receives).try_acquire_owned() else {
            return Some(self.error(
                Some(id),
                "busy",
                format!(
                    "{MAX_RECEIVES} queue receives are already waiting on this socket; \
                     wait for one to answer"
                ),
            ));
        };
        let queues = self.gateway.queues.clone();
        let outbox = self.outbox.clone();
        let errors = self.gateway.metrics.errors.clone();
        self.helpers.spawn(async move {
            let reply = match queues.receive(&queue, options).await {
                Ok(messages) => Reply::Queue {
                    id,
                    answer: QueueAnswer::Received {
                        messages: messages.into_iter().map(MessageView::from).collect(),
                    },
                },
                Err(e) => {
                    WsMetrics::count(&errors, "queue_receive");
                    Reply::error(Some(id), json::describe(&e))
                }
            };
            // As for queries: the slot is free once the answer is on its
            // way.
            let _ = outbox.send(reply).await;
            drop(permit);
        });
        None
    }

    /// The queue `name`, if the socket may use it and it exists.
    fn usable_queue(&self, name: &str) -> Result<Arc<Queue>, String> {
        self.may_use_queue(name)?;
        self.gateway
            .queues
            .get(name)
            .map_err(|e| json::describe(&e))
    }

    fn may_use_queue(&self, name: &str) -> Result<(), String> {
        if self.acl.principal().may_use_queue(name) {
            Ok(())
        } else {
            Err(format!(
                "forbidden: not allowed to use queue {name:?} (the queues permission)"
            ))
        }
    }
}
