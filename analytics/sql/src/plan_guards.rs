//! What tidewire adds to every physical plan before it runs ([`guard`]):
//!
//! - every operator is wrapped in a [`CooperativeExec`], so each one gives
//!   Tokio a turn once it has produced its share of batches. DataFusion
//!   makes only the scans cooperative; an operator that builds its output
//!   from memory (a cross join) would otherwise loop for hours without
//!   yielding, and a query past its timeout could not be stopped;
//! - the build side of every join is wrapped in a [`HeldInput`], which
//!   charges each batch the join collects to the query's memory pool. The
//!   join charges the batches' arrays itself, but not the batches: a
//!   `count(*)` over a 5-way cross join collects billions of rows as tens
//!   of millions of column-less batches that it counts as 0 bytes (3.6 GB
//!   for 300 records).

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{CrossJoinExec, HashJoinExec, NestedLoopJoinExec};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    ChildrenPropertiesMode, DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr,
    PlanProperties, ReplaceChildrenOptions, SendableRecordBatchStream,
};
use futures_util::StreamExt;

/// What one collected batch costs beyond its arrays: the batch, its column
/// vector and its schema handle, as measured (about 130 bytes).
pub const BATCH_OVERHEAD_BYTES: usize = 128;

/// `plan`, guarded as the module describes.
pub fn guard(plan: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        if node.is::<CooperativeExec>() {
            return Ok(Transformed::no(node));
        }
        let node = if collects_first_child(&node) {
            let mut children: Vec<Arc<dyn ExecutionPlan>> =
                node.children().into_iter().cloned().collect();
            let build = children
                .first_mut()
                .ok_or_else(|| DataFusionError::Internal("a join without inputs".into()))?;
            *build = Arc::new(HeldInput::new(Arc::clone(build)));
            let recompute = ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);
            node.replace_children(children, recompute)?
        } else {
            node
        };
        let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
        Ok(Transformed::yes(wrapped))
    })
    .data()
}

/// Joins that collect their first input into memory before producing.
fn collects_first_child(node: &Arc<dyn ExecutionPlan>) -> bool {
    node.is::<CrossJoinExec>() || node.is::<NestedLoopJoinExec>() || node.is::<HashJoinExec>()
}

/// Passes its input through, charging [`BATCH_OVERHEAD_BYTES`] per batch
/// to the query's memory pool until the stream is dropped.
#[derive(Debug)]
pub struct HeldInput {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
}

impl HeldInput {
    /// Wraps `input`.
    pub fn new(input: Arc<dyn ExecutionPlan>) -> HeldInput {
        let properties = Arc::clone(input.properties());
        HeldInput { input, properties }
    }
}

impl DisplayAs for HeldInput {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HeldInputExec")
    }
}

impl ExecutionPlan for HeldInput {
    fn name(&self) -> &str {
        "HeldInputExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match (children.pop(), children.is_empty()) {
            (Some(input), true) => Ok(Arc::new(HeldInput::new(input))),
            _ => Err(DataFusionError::Internal(
                "HeldInputExec takes exactly one input".into(),
            )),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let reservation = MemoryConsumer::new("join input batches").register(context.memory_pool());
        let input = self.input.execute(partition, context)?;
        let schema = input.schema();
        let charged = input.map(move |batch| {
            reservation.try_grow(BATCH_OVERHEAD_BYTES)?;
            batch
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, charged)))
    }
}
