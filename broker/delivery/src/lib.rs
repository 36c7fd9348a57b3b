//! The delivery layer: everything that sends a stream's records somewhere
//! else, at least once, from a durable cursor.
//!
//! Layout: [`cursor`] (the fsynced position of one consumer),
//! [`position`] (where a read starts, and waiting for records past a
//! position, shared with the records API's long-poll), [`sink`]
//! (the small trait a target implements: send one record, answer skipped,
//! accepted or pending, and flush), [`pump`] (the one loop that reads
//! from the cursor, tails the stream, keeps acknowledgements in flight,
//! commits past accepted records and counts losses), [`status`] (what
//! the pump reports, and a ready-made board for consumers without one)
//! and [`board`] (the part of a board that consumers with their own
//! series, exports and subscriptions, share).
//!
//! A target writes only what is its own: the NATS bridge's outbound link
//! is a [`Sink`] that maps topics to subjects and publishes.

pub mod board;
pub mod cursor;
pub mod error;
pub mod position;
pub mod pump;
pub mod sink;
pub mod status;

pub use board::PumpBoard;
pub use cursor::Cursor;
pub use error::DeliveryError;
pub use position::{Start, records_after};
pub use pump::{Pump, PumpConfig};
pub use sink::{Sent, Sink, SinkError};
pub use status::{DeliveryStatus, Lag, Report, StatusSnapshot};
