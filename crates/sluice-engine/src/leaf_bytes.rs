//! What the leaves of a physical plan read, in bytes: the join-side choice and the
//! dedup's choice between its hash table and a sort both size their inputs this way.

use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::Result;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::ExecutionPlan;

/// Bytes every leaf under `plan` reads: a file scan's file sizes (each range once) times
/// `weight` of the scan, or for other leaves (the in-memory copies of small sources,
/// VALUES) the byte size their statistics give. None when a leaf's size is unknown (table
/// functions, streams).
pub(crate) fn leaf_bytes(
    plan: &Arc<dyn ExecutionPlan>,
    weight: impl Fn(&FileScanConfig) -> u64,
) -> Result<Option<u64>> {
    let mut total = Some(0u64);
    let mut failed = None;
    plan.apply(|node| {
        if !node.children().is_empty() {
            return Ok(TreeNodeRecursion::Continue);
        }
        let files = node
            .downcast_ref::<DataSourceExec>()
            .and_then(|scan| scan.data_source().downcast_ref::<FileScanConfig>());
        let bytes = match files {
            // A file split into ranges is in several groups: each range counts once.
            Some(config) => Some(
                config
                    .file_groups
                    .iter()
                    .flat_map(|group| group.iter())
                    .map(|file| {
                        file.range
                            .as_ref()
                            .map_or(file.object_meta.size, |r| (r.end - r.start) as u64)
                    })
                    .sum::<u64>()
                    * weight(config),
            ),
            None => match StatisticsContext::new().compute(node.as_ref(), &StatisticsArgs::new()) {
                Ok(stats) => stats.total_byte_size.get_value().map(|b| *b as u64),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            },
        };
        match (bytes, total.as_mut()) {
            (Some(bytes), Some(sum)) => {
                *sum += bytes;
                Ok(TreeNodeRecursion::Continue)
            }
            _ => {
                total = None;
                Ok(TreeNodeRecursion::Stop)
            }
        }
    })?;
    match failed {
        Some(e) => Err(e),
        None => Ok(total),
    }
}
