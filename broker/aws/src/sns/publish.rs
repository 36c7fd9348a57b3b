//! `Publish` and `PublishBatch`, which need the topic in the caller's
//! `topics` permission. A message is answered once it is durable in the
//! topic's log; the entries of a batch go to the log together and share
//! one group commit.
//!
//! Not served, and refused by name: `PhoneNumber` (SMS), platform
//! endpoints as `TargetArn`, `MessageStructure=json` (one message per
//! protocol: every subscription here gets the same message), and FIFO's
//! `MessageGroupId` and `MessageDeduplicationId`.

use std::collections::HashSet;

use bytes::Bytes;
use futures_util::future::join_all;
use tidewire_topics::{Publication, TopicError};

use super::context::Context;
use super::errors::{Kind, from_topic, invalid, missing};
use super::form::Form;
use super::message_attributes;
use super::xml::Answer;
use crate::AwsError;

/// Most entries in a batch, as in SNS.
const MAX_BATCH: usize = 10;
/// Longest batch entry id, as in SNS.
const MAX_ENTRY_ID_LEN: usize = 80;
/// Longest subject, as in SNS.
const MAX_SUBJECT_LEN: usize = 100;

/// The topic a publish names by `TopicArn` or `TargetArn`.
fn topic<'f>(ctx: &Context<'_>, form: &'f Form) -> Result<&'f str, AwsError> {
    if form.get("PhoneNumber").is_some() {
        return Err(invalid(
            "PhoneNumber",
            "tidewire does not send SMS; publish to a topic (TopicArn)",
        ));
    }
    match (form.get("TopicArn"), form.get("TargetArn")) {
        (Some(arn), _) => ctx.topic_of(arn, "TopicArn"),
        (None, Some(arn)) => ctx.topic_of(arn, "TargetArn"),
        (None, None) => Err(missing("TopicArn")),
    }
}

/// The message of a publish or of a batch entry, checked as SNS checks it
/// (the topic checks its size).
fn publication(ctx: &Context<'_>, topic: &str, form: &Form) -> Result<Publication, AwsError> {
    let message = form
        .get("Message")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| invalid("Message", "Empty message"))?;
    match form.get("MessageStructure") {
        None => {}
        Some("json") => {
            return Err(invalid(
                "MessageStructure",
                "tidewire does not serve MessageStructure=json: every subscription gets the same message",
            ));
        }
        Some(other) => {
            return Err(invalid(
                "MessageStructure",
                format!("must be json, not {other:?}"),
            ));
        }
    }
    for fifo in ["MessageGroupId", "MessageDeduplicationId"] {
        if form.get(fifo).is_some() {
            return Err(invalid(
                fifo,
                "FIFO topics are not supported: tidewire's topics are standard topics",
            ));
        }
    }
    let subject = form.get("Subject").map(check_subject).transpose()?;
    let attributes = message_attributes::parse(form)?;
    Ok(Publication {
        topic: topic.to_owned(),
        client_id: ctx.caller.sender(),
        subject,
        body: Bytes::copy_from_slice(message.as_bytes()),
        attributes,
        ..Publication::default()
    })
}

/// A subject SNS takes: printable ASCII, at most 100 characters.
fn check_subject(subject: &str) -> Result<String, AwsError> {
    let valid = !subject.is_empty()
        && subject.len() <= MAX_SUBJECT_LEN
        && subject.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        && !subject.starts_with(' ');
    if valid {
        return Ok(subject.to_owned());
    }
    Err(invalid(
        "Subject",
        format!(
            "must be ASCII text that begins with a letter, number or punctuation mark, without line breaks or control characters, at most {MAX_SUBJECT_LEN} characters long"
        ),
    ))
}

/// `Publish`: the message id.
pub async fn publish(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let topic = topic(ctx, form)?;
    ctx.may_publish(topic)?;
    let publication = publication(ctx, topic, form)?;
    let id = ctx
        .topics
        .publish(topic, publication)
        .await
        .map_err(from_topic)?;
    let mut answer = Answer::new("Publish");
    answer.field("MessageId", &id);
    Ok(answer)
}

/// A batch's entries, checked as SNS checks them: at least one, at most
/// ten, each with a distinct id of letters, digits, `-` and `_`.
fn entries(form: &Form) -> Result<Vec<(String, Form)>, AwsError> {
    let entries = form.members("PublishBatchRequestEntries.member")?;
    if entries.is_empty() {
        return Err(Kind::EmptyBatchRequest.error("The batch request doesn't contain any entries"));
    }
    if entries.len() > MAX_BATCH {
        return Err(Kind::TooManyEntriesInBatchRequest.error(format!(
            "The batch request contains more entries than permissible: {} (at most {MAX_BATCH})",
            entries.len()
        )));
    }
    let mut seen = HashSet::with_capacity(entries.len());
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let id = entry.get("Id").unwrap_or_default().to_owned();
        let valid = !id.is_empty()
            && id.len() <= MAX_ENTRY_ID_LEN
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Kind::InvalidBatchEntryId.error(format!(
                "The Id of a batch entry is 1 to {MAX_ENTRY_ID_LEN} letters, digits, '-' and '_', not {id:?}"
            )));
        }
        if !seen.insert(id.clone()) {
            return Err(Kind::BatchEntryIdsNotDistinct.error(format!(
                "Two or more batch entries in the request have the same Id: {id}"
            )));
        }
        out.push((id, entry));
    }
    Ok(out)
}

/// `PublishBatch`: each entry succeeds or fails on its own.
pub async fn publish_batch(ctx: &Context<'_>, form: &Form) -> Result<Answer, AwsError> {
    let name = ctx.topic_of(form.required("TopicArn")?, "TopicArn")?;
    ctx.may_publish(name)?;
    let entries = entries(form)?;
    let topic = ctx.topics.get(name).map_err(from_topic)?;
    let checked: Vec<(String, Result<Publication, AwsError>)> = entries
        .into_iter()
        .map(|(id, entry)| {
            let publication = publication(ctx, name, &entry);
            (id, publication)
        })
        .collect();
    let max = topic.spec().config.max_message_bytes.as_u64();
    let total: u64 = checked
        .iter()
        .filter_map(|(_, p)| p.as_ref().ok())
        .map(|p| p.size() as u64)
        .sum();
    if total > max {
        return Err(Kind::BatchRequestTooLong.error(format!(
            "The length of all the messages put together is {total} bytes, more than the topic takes ({max})"
        )));
    }
    // Queue every entry, then wait for the one commit they share.
    let mut queued = Vec::with_capacity(checked.len());
    for (id, publication) in checked {
        let outcome = match publication {
            Ok(publication) => topic.publish(publication).await.map_err(from_topic),
            Err(error) => Err(error),
        };
        queued.push((id, outcome));
    }
    let durable = join_all(queued.into_iter().map(|(id, outcome)| async move {
        let outcome = match outcome {
            Ok((message_id, ticket)) => ticket
                .await
                .map(|_| message_id)
                .map_err(|e| from_topic(TopicError::from(e))),
            Err(error) => Err(error),
        };
        (id, outcome)
    }))
    .await;
    let mut answer = Answer::new("PublishBatch");
    answer.open("Successful");
    for (id, outcome) in &durable {
        if let Ok(message_id) = outcome {
            answer
                .open("member")
                .field("Id", id)
                .field("MessageId", message_id)
                .close("member");
        }
    }
    answer.close("Successful").open("Failed");
    for (id, outcome) in &durable {
        if let Err(error) = outcome {
            answer
                .open("member")
                .field("Id", id)
                .field("Code", &error.code)
                .field("Message", &error.message)
                .field("SenderFault", &error.is_sender_fault().to_string())
                .close("member");
        }
    }
    answer.close("Failed");
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(ids: &[&str]) -> Form {
        let mut pairs = vec![("TopicArn".to_owned(), "arn:aws:sns:r:1:t".to_owned())];
        for (i, id) in ids.iter().enumerate() {
            let key = |f: &str| format!("PublishBatchRequestEntries.member.{}.{f}", i + 1);
            pairs.push((key("Id"), (*id).to_owned()));
            pairs.push((key("Message"), format!("m{i}")));
        }
        Form::new(pairs)
    }

    #[test]
    fn batches_are_checked_as_sns_does() {
        let code = |form: Form| entries(&form).err().map(|e| e.code).unwrap_or_default();
        assert_eq!(code(batch(&[])), "EmptyBatchRequest");
        let eleven: Vec<String> = (0..11).map(|i| format!("e{i}")).collect();
        let eleven: Vec<&str> = eleven.iter().map(String::as_str).collect();
        assert_eq!(code(batch(&eleven)), "TooManyEntriesInBatchRequest");
        assert_eq!(code(batch(&["a", "a"])), "BatchEntryIdsNotDistinct");
        assert_eq!(code(batch(&["a b"])), "InvalidBatchEntryId");
        assert_eq!(code(batch(&[""])), "InvalidBatchEntryId");
        let ok = entries(&batch(&["one", "two"])).expect("valid");
        assert_eq!(ok[0].0, "one");
        assert_eq!(ok[1].1.get("Message"), Some("m1"));
    }

    #[test]
    fn subjects_are_checked_as_sns_does() {
        assert_eq!(
            check_subject("Alarm: high").ok().as_deref(),
            Some("Alarm: high")
        );
        for bad in [
            "",
            " lead",
            "line\nbreak",
            "tab\there",
            "ünïcode",
            &"s".repeat(101),
        ] {
            let error = check_subject(bad).expect_err(bad);
            assert!(error.message.starts_with("Invalid parameter: Subject"));
        }
    }
}
