//! The JSON 1.0 wire shapes every SQS action shares: reading a request
//! body, required and numeric parameters, batch entries (their ids and the
//! `Successful`/`Failed` answer) and paged lists of queue URLs.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{Kind, invalid, missing, unknown_attribute};
use crate::AwsError;

/// Most entries in a batch, as in SQS.
pub const MAX_BATCH: usize = 10;
/// Longest batch entry id, as in SQS.
const MAX_ENTRY_ID_LEN: usize = 80;
/// Most queue URLs one list answers, as in SQS.
const MAX_LIST: usize = 1000;

/// A request body as `T` (an empty body is `{}`). Members SQS does not
/// define are ignored, as SQS does.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, AwsError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        Kind::Serialization.error(format!("the request body does not fit the action: {e}"))
    })
}

/// An answer as JSON.
pub fn answer(value: impl Serialize) -> Result<Value, AwsError> {
    serde_json::to_value(value).map_err(|e| Kind::InternalFailure.error(e.to_string()))
}

/// A parameter the action needs.
pub fn required<T>(value: Option<T>, name: &str) -> Result<T, AwsError> {
    value.ok_or_else(|| missing(name))
}

/// A count in seconds from 0 to `max`.
pub fn seconds(
    value: Option<i64>,
    name: &str,
    max: Duration,
) -> Result<Option<Duration>, AwsError> {
    value
        .map(|v| match u64::try_from(v) {
            Ok(secs) if Duration::from_secs(secs) <= max => Ok(Duration::from_secs(secs)),
            _ => Err(invalid(
                name,
                format!("must be from 0 to {} seconds", max.as_secs()),
            )),
        })
        .transpose()
}

/// A whole number from `min` to `max`.
pub fn count(value: Option<i64>, name: &str, min: u64, max: u64) -> Result<Option<u64>, AwsError> {
    value
        .map(|v| match u64::try_from(v) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(invalid(name, format!("must be from {min} to {max}"))),
        })
        .transpose()
}

/// The attributes of `known` a request asks for by `given` names (`All`:
/// every one). Names in `unset` are SQS's but never set here: they are
/// accepted and answer nothing; any other name is refused.
pub fn attribute_names<'a>(
    given: impl IntoIterator<Item = &'a String>,
    known: &[&'static str],
    unset: &[&str],
) -> Result<BTreeSet<&'static str>, AwsError> {
    let mut wanted = BTreeSet::new();
    for name in given {
        if name == "All" {
            wanted.extend(known);
        } else if let Some(known) = known.iter().find(|n| *n == name) {
            wanted.insert(*known);
        } else if !unset.contains(&name.as_str()) {
            return Err(unknown_attribute(name));
        }
    }
    Ok(wanted)
}

/// A batch's entries, checked as SQS checks them: at least one, at most
/// ten, each with a distinct id of letters, digits, `-` and `_`.
pub fn batch<E>(entries: Option<Vec<E>>, id: impl Fn(&E) -> &str) -> Result<Vec<E>, AwsError> {
    let entries = entries.unwrap_or_default();
    if entries.is_empty() {
        return Err(
            Kind::EmptyBatchRequest.error("There should be at least one entry in the request.")
        );
    }
    if entries.len() > MAX_BATCH {
        return Err(Kind::TooManyEntriesInBatchRequest.error(format!(
            "Maximum number of entries per request are {MAX_BATCH}. You have sent {}.",
            entries.len()
        )));
    }
    let mut seen = HashSet::with_capacity(entries.len());
    for entry in &entries {
        let id = id(entry);
        let valid = !id.is_empty()
            && id.len() <= MAX_ENTRY_ID_LEN
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Kind::InvalidBatchEntryId.error(format!(
                "A batch entry id can only contain alphanumeric characters, hyphens and underscores, and be at most {MAX_ENTRY_ID_LEN} characters long; {id:?} does not."
            )));
        }
        if !seen.insert(id) {
            return Err(Kind::BatchEntryIdsNotDistinct.error(format!("Id {id} repeated.")));
        }
    }
    Ok(entries)
}

/// A request that names only a queue.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct QueueUrl {
    pub queue_url: Option<String>,
}

/// A batch's answer: the entries that succeeded and those that failed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct BatchAnswer<S> {
    pub successful: Vec<S>,
    pub failed: Vec<Failure>,
}

impl<S> BatchAnswer<S> {
    /// An answer with room for `n` entries.
    pub fn with_capacity(n: usize) -> BatchAnswer<S> {
        BatchAnswer {
            successful: Vec::with_capacity(n),
            failed: Vec::new(),
        }
    }

    /// Records the outcome of the entry `id`.
    pub fn push(&mut self, id: String, outcome: Result<S, AwsError>) {
        match outcome {
            Ok(success) => self.successful.push(success),
            Err(error) => self.failed.push(Failure {
                id,
                sender_fault: error.is_sender_fault(),
                code: error.code,
                message: error.message,
            }),
        }
    }
}

/// A batch entry that failed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Failure {
    pub id: String,
    pub sender_fault: bool,
    pub code: String,
    pub message: String,
}

/// The successful entry of a batch that answers only its id.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Done {
    pub id: String,
}

/// One page of `names` (sorted): those after `next_token`, at most
/// `max_results` (1 to 1000) of them, and the token of the next page when
/// `max_results` was given and more remain, as SQS pages its lists.
pub fn page(
    names: impl IntoIterator<Item = String>,
    max_results: Option<i64>,
    next_token: Option<&str>,
) -> Result<(Vec<String>, Option<String>), AwsError> {
    let limit = count(max_results, "MaxResults", 1, MAX_LIST as u64)?;
    let mut rest = names
        .into_iter()
        .filter(|name| next_token.is_none_or(|after| name.as_str() > after));
    let page: Vec<String> = rest
        .by_ref()
        .take(limit.map_or(MAX_LIST, |n| n as usize))
        .collect();
    let next = match (limit, page.last()) {
        (Some(_), Some(last)) if rest.next().is_some() => Some(last.clone()),
        _ => None,
    };
    Ok((page, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_checked_as_sqs_does() {
        let ids = |n: usize| (0..n).map(|i| format!("e{i}")).collect::<Vec<_>>();
        let code = |entries: Option<Vec<String>>| {
            batch(entries, String::as_str)
                .err()
                .map(|e| e.code)
                .unwrap_or_default()
        };
        assert_eq!(code(None), "AWS.SimpleQueueService.EmptyBatchRequest");
        assert_eq!(
            code(Some(ids(11))),
            "AWS.SimpleQueueService.TooManyEntriesInBatchRequest"
        );
        assert_eq!(
            code(Some(vec!["a".into(), "a".into()])),
            "AWS.SimpleQueueService.BatchEntryIdsNotDistinct"
        );
        assert_eq!(
            code(Some(vec!["a b".into()])),
            "AWS.SimpleQueueService.InvalidBatchEntryId"
        );
        assert_eq!(code(Some(ids(10))), "");
    }

    #[test]
    fn pages_follow_the_token() {
        let names = || ["a", "b", "c"].map(String::from);
        let (first, next) = page(names(), Some(2), None).expect("page");
        assert_eq!(first, ["a", "b"]);
        assert_eq!(next.as_deref(), Some("b"));
        let (second, next) = page(names(), Some(2), Some("b")).expect("page");
        assert_eq!(second, ["c"]);
        assert_eq!(next, None);
        let (all, next) = page(names(), None, None).expect("page");
        assert_eq!((all.len(), next), (3, None));
        assert!(page(names(), Some(0), None).is_err());
    }
}
