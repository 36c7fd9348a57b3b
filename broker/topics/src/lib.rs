//! Fan-out topics (SNS): being written.
