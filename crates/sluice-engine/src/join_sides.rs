//! Build hash joins on the smaller input when DataFusion cannot tell which one that is.
//!
//! DataFusion's `JoinSelection` puts the smaller input on the build side by comparing
//! statistics. CSV and JSON sources have none, so it keeps the written order, and
//! `events LEFT JOIN account_migrations` hashes every event: in benches/pipeline at 100M
//! rows that was two 1.97 GB build-side reservations, which cannot spill, and the run
//! failed under `--memory-limit 4G`.
//! Files have sizes even without statistics, and the in-memory copies sluice keeps of
//! small sources know theirs. [`BuildOnSmallerFiles`] runs right after
//! `JoinSelection` (before repartitioning and dynamic filters are added, as swapping
//! requires) and, for a join whose inputs have no statistics, swaps the inputs when the
//! files under the build side are larger than those under the probe side.
//!
//! JoinSelection also picks `Partitioned` mode for a build side of more than 128K rows and
//! without statistics, which hash-repartitions
//! both inputs: in benches/pipeline that copied every (wide) event row once per join,
//! three times over. When the build side's files are small in absolute terms and next to
//! the probe side's, the rule collects the build side once instead (`CollectLeft`, a
//! broadcast), so the probe side streams through without being repartitioned.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode};
use datafusion::common::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::ExecutionPlan;

use super::leaf_bytes::leaf_bytes;

/// The name of DataFusion's rule this one must follow.
pub const AFTER_RULE: &str = "join_selection";

/// A build side is collected once (broadcast) rather than partitioned when its files are
/// at most this large. CSV text is larger than the columns a join reads (the accounts of
/// the 100M-row benchmark: 393 MB of CSV, about 150 MB in memory), so this bounds the one
/// shared hash table well inside a 4G memory limit.
const COLLECT_MAX_FILE_BYTES: u64 = 1 << 30;

/// ... and at most this fraction of the probe side's files: a build side of similar size
/// is better built in parallel, one partition per core.
const COLLECT_MAX_SHARE_OF_PROBE: u64 = 4;

#[derive(Debug, Default)]
pub struct BuildOnSmallerFiles;

impl PhysicalOptimizerRule for BuildOnSmallerFiles {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !config.optimizer.join_reordering {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            Ok(match rechosen(&node)? {
                Some(new) => Transformed::yes(new),
                None => Transformed::no(node),
            })
        })
        .data()
    }

    fn name(&self) -> &str {
        "sluice_build_on_smaller_files"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// The join with its build side and mode chosen by input sizes; None to keep it as planned.
fn rechosen(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(join) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    let (Some(left), Some(right)) = (
        leaf_bytes(join.left(), |_| 1)?,
        leaf_bytes(join.right(), |_| 1)?,
    ) else {
        return Ok(None);
    };
    // Where both inputs have statistics, JoinSelection has chosen the build side with
    // better numbers (a filter's estimate, say); the mode is still ours to choose, as its
    // row threshold (128K) partitions a build side of a few megabytes.
    let decided = has_size(join.left())? && has_size(join.right())?;
    // A NOT IN (null-aware anti join) must keep its outer input on the left.
    let swap = !decided && left > right && join.join_type().supports_swap() && !join.null_aware;
    let (build, probe) = if swap { (right, left) } else { (left, right) };
    let collect = *join.partition_mode() == PartitionMode::Partitioned
        && build <= COLLECT_MAX_FILE_BYTES
        && build.saturating_mul(COLLECT_MAX_SHARE_OF_PROBE) <= probe;
    let mode = if collect {
        PartitionMode::CollectLeft
    } else {
        *join.partition_mode()
    };
    // A join DataFusion cannot rebuild stays as planned rather than failing the query.
    Ok(match (swap, collect) {
        (true, _) => join.swap_inputs(mode).ok(),
        (false, true) => join
            .builder()
            .with_partition_mode(mode)
            .build()
            .ok()
            .map(|join| Arc::new(join) as Arc<dyn ExecutionPlan>),
        (false, false) => None,
    })
}

fn has_size(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let stats = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())?;
    Ok(stats.total_byte_size.get_value().is_some() || stats.num_rows.get_value().is_some())
}
