//! What every SQS action needs about its request: the queues, who calls
//! (and what they may do), and how queues are named on the wire — URLs
//! `http://HOST/ACCOUNT/QUEUE` with the Host the client used, ARNs
//! `arn:aws:sqs:REGION:ACCOUNT:QUEUE` in the region the request was signed
//! for. A request may name a queue by URL or by bare name.

use std::sync::Arc;

use tidewire_queues::{Queue, Queues};

use super::errors::{Kind, from_queue, invalid, missing, no_such_queue};
use crate::{AwsError, Caller, DEFAULT_REGION};

/// One SQS request's surroundings.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Every queue.
    pub queues: &'a Queues,
    /// Who asks.
    pub caller: &'a Caller,
    /// The account id of URLs and ARNs.
    pub account: &'a str,
    /// The `Host` the request was sent to.
    pub host: &'a str,
}

impl Context<'_> {
    /// The region of ARNs.
    fn region(&self) -> &str {
        self.caller.region.as_deref().unwrap_or(DEFAULT_REGION)
    }

    /// A queue's URL.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/{}/{name}", self.host, self.account)
    }

    /// A queue's ARN.
    pub fn arn(&self, name: &str) -> String {
        format!("arn:aws:sqs:{}:{}:{name}", self.region(), self.account)
    }

    /// The queue a required `QueueUrl` names: a URL, a path
    /// `ACCOUNT/QUEUE`, or a bare name. A URL of another account names no
    /// queue here.
    pub fn queue_name<'u>(&self, url: Option<&'u str>) -> Result<&'u str, AwsError> {
        let url = url.ok_or_else(|| missing("QueueUrl"))?;
        let path = match url.split_once("://") {
            Some((_, rest)) => rest.split_once('/').map_or("", |(_, path)| path),
            None => url,
        };
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [name] => Ok(name),
            [account, name] if *account == self.account => Ok(name),
            _ => Err(no_such_queue()),
        }
    }

    /// The queue an ARN (`param`) names.
    pub fn name_of_arn<'u>(&self, arn: &'u str, param: &str) -> Result<&'u str, AwsError> {
        match arn.split(':').collect::<Vec<_>>().as_slice() {
            ["arn", _, "sqs", _, account, name] if !name.is_empty() => {
                if *account == self.account {
                    Ok(name)
                } else {
                    Err(Kind::ResourceNotFound
                        .error(format!("{param} {arn:?} names a queue of another account")))
                }
            }
            _ => Err(invalid(
                param,
                format!("{arn:?} is not a queue ARN (arn:aws:sqs:REGION:ACCOUNT:QUEUE)"),
            )),
        }
    }

    /// The queue of a required `QueueUrl`, if the caller may use it.
    pub fn usable(&self, url: Option<&str>) -> Result<Arc<Queue>, AwsError> {
        let name = self.queue_name(url)?;
        self.may_use(name)?;
        self.queues.get(name).map_err(from_queue)
    }

    /// Refuses unless the caller may send to and receive from `name`.
    pub fn may_use(&self, name: &str) -> Result<(), AwsError> {
        if self.caller.principal.may_use_queue(name) {
            return Ok(());
        }
        Err(Kind::AccessDenied.error(format!(
            "{} may not use the queue {name:?}: it is not in its `queues` permission",
            self.caller.who()
        )))
    }

    /// Refuses unless the caller may administer (`action` changes queues).
    pub fn must_be_admin(&self, action: &str) -> Result<(), AwsError> {
        if self.caller.principal.is_admin() {
            return Ok(());
        }
        Err(Kind::AccessDenied.error(format!(
            "{} may not call {action}: it needs the `admin` permission",
            self.caller.who()
        )))
    }
}
