//! Event patterns: the language of EventBridge rules and SNS filter
//! policies, for tidewire's topic subscriptions (issue 20) and rules.
//!
//! - [`Pattern::parse`] reads a pattern from JSON and refuses a bad one
//!   with the path and the reason ([`PatternError`]), within [`Limits`].
//! - [`Event`] is what patterns are matched against: a JSON document
//!   flattened once into sorted `(path, value)` leaves, plus any envelope
//!   fields ([`envelope`]) or SNS message attributes ([`sns`]).
//! - [`Pattern::matches`] is the reference interpreter, one pattern at a
//!   time.
//! - [`Matcher`] compiles many patterns, each under an id, into one state
//!   machine whose matching cost depends on the event (the states it
//!   reaches and the lookups it makes there, [`MatchWork`]), not on the
//!   number of patterns; it must agree with the interpreter, and the tests
//!   check that it does on random patterns and events.
//!
//! The language, and where it differs from AWS's, is described below
//! (this crate's `README.md`).
//!
//! Layout: [`value`] (what one value-list element tests), [`wildcard`] and
//! [`cidr`] (two of those tests), `parse` (JSON to a pattern), `pattern`
//! (the pattern and its alternatives), `naive` (the interpreter), `matcher`
//! (the compiled machine), [`event`], [`envelope`], [`sns`], [`limits`],
//! [`error`].
#![doc = ""]
#![doc = include_str!("../README.md")]

pub mod cidr;
pub mod envelope;
pub mod error;
pub mod event;
pub mod limits;
mod matcher;
mod naive;
mod parse;
mod pattern;
pub mod sns;
pub mod value;
pub mod wildcard;

pub use error::{EventError, PatternError};
pub use event::{Event, EventBuilder, Leaf};
pub use limits::Limits;
pub use matcher::{MatchWork, Matcher};
pub use pattern::Pattern;
pub use sns::FilterPolicyScope;
