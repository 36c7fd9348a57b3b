//! Per-stream log settings: fsync policy, retention and segment rolling.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// Default segment size at which the active segment is sealed.
pub const DEFAULT_SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Default age of the oldest record in the active segment at which it is sealed.
pub const DEFAULT_SEGMENT_AGE: Duration = Duration::from_secs(3600);
/// Default spacing of sparse index entries, in bytes of log.
pub const DEFAULT_INDEX_INTERVAL_BYTES: u64 = 4096;

/// When appended records are fdatasync'ed, and so when an append is
/// acknowledged as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Every append is fdatasync'ed before it resolves. Concurrent appends
    /// share one fdatasync (group commit).
    Always,
    /// Appends resolve once written to the OS; an fdatasync runs at least
    /// this often while there are unsynced writes.
    Interval(Duration),
    /// Appends resolve once written to the OS; fdatasync only when a segment
    /// is sealed and at shutdown.
    Never,
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "never" => Ok(FsyncPolicy::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval:")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        format!(
                            "invalid fsync policy {s:?}: expected \"always\", \"never\" or \"interval:MS\" with MS > 0"
                        )
                    })?;
                Ok(FsyncPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

impl fmt::Display for FsyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FsyncPolicy::Always => f.write_str("always"),
            FsyncPolicy::Never => f.write_str("never"),
            FsyncPolicy::Interval(d) => write!(f, "interval:{}", d.as_millis()),
        }
    }
}

/// How much of a stream is kept. Whole sealed segments are deleted once all
/// of their records are older than `max_age`, or while the stream is larger
/// than `max_bytes`. The active segment is never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    /// Keep records at most this long (none: forever).
    pub max_age: Option<Duration>,
    /// Keep at most about this many bytes (none: no limit).
    pub max_bytes: Option<u64>,
}

/// Settings for one stream's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogConfig {
    /// When appends become durable.
    pub fsync: FsyncPolicy,
    /// What is kept.
    pub retention: Retention,
    /// The active segment is sealed once it would grow past this size.
    pub segment_bytes: u64,
    /// The active segment is sealed once its oldest record is this old.
    pub segment_age: Duration,
    /// Spacing of the sparse offset/time index.
    pub index_interval_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            fsync: FsyncPolicy::Always,
            retention: Retention::default(),
            segment_bytes: DEFAULT_SEGMENT_BYTES,
            segment_age: DEFAULT_SEGMENT_AGE,
            index_interval_bytes: DEFAULT_INDEX_INTERVAL_BYTES,
        }
    }
}

impl LogConfig {
    /// The age at which the active segment is sealed: never later than the
    /// retention age, so that retention can act on it.
    pub(crate) fn effective_segment_age(&self) -> Duration {
        match self.retention.max_age {
            Some(max_age) => self.segment_age.min(max_age),
            None => self.segment_age,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsync_policy_parses_and_prints() {
        for text in ["always", "never", "interval:250"] {
            let policy: FsyncPolicy = text.parse().expect("valid policy");
            assert_eq!(policy.to_string(), text);
        }
        assert_eq!(
            "interval:5".parse::<FsyncPolicy>(),
            Ok(FsyncPolicy::Interval(Duration::from_millis(5)))
        );
        for bad in [
            "",
            "sometimes",
            "interval:",
            "interval:0",
            "interval:-3",
            "Always",
        ] {
            let err = bad.parse::<FsyncPolicy>().expect_err(bad);
            assert!(err.contains("invalid fsync policy"), "{err}");
        }
    }
}
