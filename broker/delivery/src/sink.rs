//! What a target implements: [`Sink`]. The pump hands it one record at a
//! time, in offset order; the sink answers at once whether the record is
//! not for it ([`Sent::Skipped`]), taken ([`Sent::Accepted`], confirmed by
//! the next [`Sink::flush`]), or on its way with an acknowledgement to
//! wait for ([`Sent::Pending`]). Pending acknowledgements are awaited in
//! order, up to the pump's in-flight limit, so a target with many
//! acknowledgements in flight (JetStream's PubAcks) stays pipelined. A
//! sink that gathers records into files tells the pump how far the cursor
//! may move ([`Sink::committable`]) and when to flush while idle
//! ([`Sink::flush_deadline`]).

use std::future::Future;

use tidewire_storage::Record;

/// How a sink took one record.
#[derive(Debug)]
pub enum Sent<A> {
    /// The record is not for this sink; it counts as done.
    Skipped,
    /// Taken; the next successful [`Sink::flush`] confirms it.
    Accepted,
    /// On its way; accepted once `A` resolves to `Ok`.
    Pending(A),
}

/// Why a sink did not take a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The target cannot take it now (unreachable, timed out, refused
    /// for the moment). The pump stops, and the records after the last
    /// accepted one are sent again later.
    #[error("{reason}")]
    Retry {
        /// What went wrong, for the status and the logs.
        reason: String,
    },
    /// The target will never take this record (it cannot be mapped or
    /// is refused for what it is). It is counted as lost with the reason,
    /// and delivery goes on with the next record.
    #[error("rejected for good: {reason}")]
    Rejected {
        /// Why, for the status and the logs.
        reason: String,
    },
}

impl SinkError {
    /// A failure worth retrying later.
    pub fn retry(reason: impl ToString) -> SinkError {
        SinkError::Retry {
            reason: reason.to_string(),
        }
    }

    /// A record the target will never take.
    pub fn rejected(reason: impl ToString) -> SinkError {
        SinkError::Rejected {
            reason: reason.to_string(),
        }
    }
}

/// A target of delivery from a stream.
pub trait Sink: Send {
    /// The acknowledgement of a [`Sent::Pending`] record.
    type Ack: Future<Output = Result<(), SinkError>> + Send;

    /// Sends one record. Records come in offset order; a record after a
    /// [`SinkError::Retry`] comes again from the last accepted one.
    fn send(
        &mut self,
        record: &Record,
    ) -> impl Future<Output = Result<Sent<Self::Ack>, SinkError>> + Send;

    /// Confirms every record answered with [`Sent::Accepted`] so far.
    fn flush(&mut self) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// How far the consumer's cursor may move, given that every record
    /// before `accepted_to` was accepted and confirmed. A sink that
    /// gathers records into larger units (an export's files) answers the
    /// end of the last unit it completed, so that after a crash the pump
    /// sends the rest again. Default: all of them.
    fn committable(&self, accepted_to: u64) -> u64 {
        accepted_to
    }

    /// When the sink wants [`Sink::flush`] called although no record came
    /// (an export's `max_interval`); none: flushes follow records only.
    fn flush_deadline(&self) -> Option<std::time::Instant> {
        None
    }

    /// Called when a session starts: the pump gave up on every record not
    /// confirmed yet and sends them again, so anything still buffered from
    /// before should be dropped (as a reconnect would). A sink made per
    /// session has nothing to do.
    fn reset(&mut self) {}
}
