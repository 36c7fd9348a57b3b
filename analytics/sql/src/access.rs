//! Which streams a query may read: [`ReadAccess`], checked against every
//! table its plan scans (subqueries included) before anything runs. A
//! query reaching a stream it may not read is refused whole
//! ([`SqlError::Forbidden`]), never answered in part. A history table
//! (`<stream>_history`) needs the permission of its stream.

use std::sync::Arc;

use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::logical_expr::LogicalPlan;
use tidewire_auth::Principal;

use crate::error::SqlError;
use crate::history;

/// Says whether a stream may be read.
type StreamCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The streams one query may read.
#[derive(Clone)]
pub struct ReadAccess {
    /// `None`: every stream.
    allows: Option<StreamCheck>,
}

impl std::fmt::Debug for ReadAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.allows.is_some() {
            "ReadAccess(some)"
        } else {
            "ReadAccess(all)"
        })
    }
}

impl ReadAccess {
    /// Every stream: the broker's own queries (continuous queries an
    /// admin defined, embedding, tests).
    pub fn all() -> ReadAccess {
        ReadAccess { allows: None }
    }

    /// The streams `principal` may read (its `sql` permission).
    pub fn of(principal: &Principal) -> ReadAccess {
        let principal = principal.clone();
        ReadAccess {
            allows: Some(Arc::new(move |stream| principal.may_read(stream))),
        }
    }

    /// May the query read the stream `name`?
    pub fn allows(&self, name: &str) -> bool {
        self.allows.as_ref().is_none_or(|allows| allows(name))
    }

    /// Refuses `plan` if it scans a stream this access does not cover.
    pub(crate) fn check(&self, plan: &LogicalPlan) -> Result<(), SqlError> {
        if self.allows.is_none() {
            return Ok(());
        }
        let mut refused = None;
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                // `<stream>_history` reads the stream's records.
                let stream = history::stream_read_by(scan);
                if !self.allows(&stream) {
                    refused = Some(stream);
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        match refused {
            Some(stream) => Err(SqlError::Forbidden(format!(
                "not allowed to read stream {stream:?} (the sql permission)"
            ))),
            None => Ok(()),
        }
    }
}
