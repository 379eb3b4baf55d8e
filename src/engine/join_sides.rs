//! Build hash joins on the smaller input when DataFusion cannot tell which one that is.
//!
//! DataFusion's `JoinSelection` puts the smaller input on the build side by comparing
//! statistics. CSV and JSON sources have none, so it keeps the written order, and
//! `events LEFT JOIN account_migrations` hashes every event: in benches/pipeline at 100M
//! rows that was two 1.97 GB build-side reservations, which cannot spill, and the run
//! failed under `--memory-limit 4G`.
//! Files have sizes even without statistics. [`BuildOnSmallerFiles`] runs right after
//! `JoinSelection` (before repartitioning and dynamic filters are added, as swapping
//! requires) and, for a join whose inputs have no statistics, swaps the inputs when the
//! files under the build side are larger than those under the probe side.

use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::HashJoinExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::ExecutionPlan;

/// The name of DataFusion's rule this one must follow.
pub const AFTER_RULE: &str = "join_selection";

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
            Ok(match swapped(&node)? {
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

fn swapped(node: &Arc<dyn ExecutionPlan>) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(join) = node.downcast_ref::<HashJoinExec>() else {
        return Ok(None);
    };
    // Where statistics exist, JoinSelection has decided with better numbers. A NOT IN
    // (null-aware anti join) must keep its outer input on the left.
    if !join.join_type().supports_swap()
        || join.null_aware
        || (has_size(join.left())? && has_size(join.right())?)
    {
        return Ok(None);
    }
    let (Some(build), Some(probe)) = (file_bytes(join.left())?, file_bytes(join.right())?) else {
        return Ok(None);
    };
    if build <= probe {
        return Ok(None);
    }
    // A join DataFusion cannot swap stays as planned rather than failing the query.
    Ok(join.swap_inputs(*join.partition_mode()).ok())
}

fn has_size(plan: &Arc<dyn ExecutionPlan>) -> Result<bool> {
    let stats = StatisticsContext::new().compute(plan.as_ref(), &StatisticsArgs::new())?;
    Ok(stats.total_byte_size.get_value().is_some() || stats.num_rows.get_value().is_some())
}

/// Bytes of the files every leaf under `plan` reads; None when a leaf is not a file scan
/// (memory tables, VALUES, table functions): their size is unknown.
fn file_bytes(plan: &Arc<dyn ExecutionPlan>) -> Result<Option<u64>> {
    let mut total = Some(0u64);
    plan.apply(|node| {
        if !node.children().is_empty() {
            return Ok(TreeNodeRecursion::Continue);
        }
        let files = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>());
        match (files, total.as_mut()) {
            (Some(config), Some(sum)) => {
                *sum += config
                    .file_groups
                    .iter()
                    .flat_map(|group| group.iter())
                    .map(|file| file.object_meta.size)
                    .sum::<u64>();
                Ok(TreeNodeRecursion::Continue)
            }
            _ => {
                total = None;
                Ok(TreeNodeRecursion::Stop)
            }
        }
    })?;
    Ok(total)
}
