//! Deduplication by `row_number() = 1`, the way analysts write it:
//!
//! ```sql
//! SELECT * FROM (SELECT *, row_number() OVER (PARTITION BY event_id ORDER BY event_ts) AS rn
//!                FROM events) WHERE rn = 1
//! ```
//!
//! DataFusion plans this as Sort -> BoundedWindowAggExec -> Filter. With as many window
//! partitions as rows (one per event id) the window operator's per-partition bookkeeping
//! dominates the whole query: in EXPLAIN ANALYZE of benches/pipeline at 10M rows, 31 s of
//! compute in a 37.6 s run, where the sort under it took 1.8 s.
//! The input is already sorted by the partition keys (then the ORDER BY), so the rows with
//! `rn = 1` are exactly the first row of each run of equal keys: [`FirstRowPerKeyExec`]
//! finds those runs with arrow's `partition` kernel in one pass and keeps their first rows.
//! [`DedupFirstRow`] puts it in place of the window and the filter. When the input is not
//! sorted yet (DataFusion put a sort under the window), it puts
//! [`BestRowPerKeyExec`](super::best_row::BestRowPerKeyExec) in place of the sort, the
//! window and the filter, unless a node above relies on the window's output order.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue, Statistics};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column, Literal};
use datafusion::physical_expr::window::StandardWindowExpr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::{ProjectionExec, ProjectionExpr};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::{BoundedWindowAggExec, WindowUDFExpr};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    InputOrderMode, PlanProperties,
};
use futures::StreamExt;

use super::best_row::BestRowPerKeyExec;

/// Replaces `Filter(rn = 1) <- BoundedWindowAggExec(row_number() PARTITION BY k ORDER BY o)`
/// over input sorted by the keys with [`FirstRowPerKeyExec`]. Any other window query is
/// left as it is.
#[derive(Debug, Default)]
pub struct DedupFirstRow {
    /// Only rewrite when every key is a plain column: the operator then travels to cluster
    /// executors as column names and indexes (see `cluster::codec`).
    pub column_keys_only: bool,
}

impl PhysicalOptimizerRule for DedupFirstRow {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // An order reaches the user only as one ordered stream: several partitions are
        // written (or sent) as they come, whatever order each of them has.
        let order_needed =
            plan.output_ordering().is_some() && plan.output_partitioning().partition_count() == 1;
        // `SET sluice.dedup = 'sort'` keeps DataFusion's sort: see benches/pipeline.
        let dedup = super::options::SluiceOptions::dedup(config)?;
        let by_hash = matches!(
            dedup,
            super::options::Dedup::Hash | super::options::Dedup::Split
        );
        let choice = Choice {
            column_keys_only: self.column_keys_only,
            by_hash: !self.column_keys_only && by_hash,
            shared: !self.column_keys_only && dedup == super::options::Dedup::Hash,
        };
        optimize_node(plan, order_needed, false, choice)
    }

    fn name(&self) -> &str {
        "sluice_dedup_first_row"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// What the rule may put in: only operators with column keys (a cluster plan), and the
/// hash dedup (chosen, and not on a cluster: it has no codec).
#[derive(Clone, Copy)]
struct Choice {
    column_keys_only: bool,
    by_hash: bool,
    /// One table for the scan's partitions where it applies (not `SET sluice.dedup = 'split'`).
    shared: bool,
}

/// Rewrite `node` and what is below it. `order_needed`: some node above relies on this
/// node's output order (it requires an ordering, or passes its input's order on to one that
/// does, or it is the query's ordered result). `split_needed`: some node above relies on
/// this node's hash partitioning (it requires one, and nothing in between splits again).
fn optimize_node(
    node: Arc<dyn ExecutionPlan>,
    order_needed: bool,
    split_needed: bool,
    choice: Choice,
) -> Result<Arc<dyn ExecutionPlan>> {
    let node = match rewrite(&node, choice, order_needed, split_needed)? {
        Some(new) => new,
        None => node,
    };
    let children: Vec<Arc<dyn ExecutionPlan>> = node.children().into_iter().cloned().collect();
    if children.is_empty() {
        return Ok(node);
    }
    let required = node.required_input_ordering();
    let maintains = node.maintains_input_order();
    let distributions = node.input_distribution_requirements();
    let splits_again = node.downcast_ref::<RepartitionExec>().is_some()
        || node.downcast_ref::<CoalescePartitionsExec>().is_some()
        || node.downcast_ref::<SortPreservingMergeExec>().is_some();
    let mut changed = false;
    let mut new_children = Vec::with_capacity(children.len());
    for (k, child) in children.into_iter().enumerate() {
        let needed = required.get(k).is_some_and(|r| r.is_some())
            || (order_needed && maintains.get(k).copied().unwrap_or(false));
        let split = matches!(
            distributions.child_distribution(k),
            Some(Distribution::KeyPartitioned(_))
        ) || (split_needed && !splits_again);
        let new = optimize_node(child.clone(), needed, split, choice)?;
        changed |= !Arc::ptr_eq(&new, &child);
        new_children.push(new);
    }
    if changed {
        datafusion::physical_plan::execution_plan::replace_children_if_necessary(node, new_children)
    } else {
        Ok(node)
    }
}

fn rewrite(
    node: &Arc<dyn ExecutionPlan>,
    choice: Choice,
    order_needed: bool,
    split_needed: bool,
) -> Result<Option<Arc<dyn ExecutionPlan>>> {
    let Some(filter) = node.downcast_ref::<FilterExec>() else {
        return Ok(None);
    };
    let Some(mut rn) = first_only(filter.predicate()) else {
        return Ok(None);
    };
    // Projection pushdown may leave a column-only projection between filter and window.
    let mut between: Option<&ProjectionExec> = None;
    let mut below = filter.input();
    if let Some(projection) = below.downcast_ref::<ProjectionExec>() {
        let Some(column) = projection
            .expr()
            .get(rn)
            .and_then(|p| p.expr.downcast_ref::<Column>())
        else {
            return Ok(None);
        };
        rn = column.index();
        between = Some(projection);
        below = projection.input();
    }
    let Some(window) = below.downcast_ref::<BoundedWindowAggExec>() else {
        return Ok(None);
    };
    let input = window.input();
    let [expr] = window.window_expr() else {
        return Ok(None);
    };
    let is_row_number = expr
        .as_any()
        .downcast_ref::<StandardWindowExpr>()
        .and_then(|e| {
            e.get_standard_func_expr()
                .as_any()
                .downcast_ref::<WindowUDFExpr>()
        })
        .is_some_and(|f| f.fun().name() == "row_number");
    // Sorted: every partition key is a sort key of the input, so equal keys are adjacent.
    if !is_row_number
        || expr.partition_by().is_empty()
        || window.input_order_mode != InputOrderMode::Sorted
        || rn != input.schema().fields().len()
        || (choice.column_keys_only
            && !expr
                .partition_by()
                .iter()
                .all(|k| k.downcast_ref::<Column>().is_some()))
    {
        return Ok(None);
    }
    // A sort DataFusion put under the window only for it: find the rows by hash instead,
    // when nothing above needs them in key order and the plan stays on this machine.
    // Its input must already be split by key (hash-partitioned, or one partition).
    let sort = input.downcast_ref::<SortExec>().filter(|s| {
        s.fetch().is_none()
            && (s.preserve_partitioning() || s.input().output_partitioning().partition_count() == 1)
    });
    // Nothing above needs the rows split by key: one table shared by the input's
    // partitions replaces the split.
    let shared = match sort {
        Some(sort) if !order_needed && !split_needed && choice.shared => BestRowPerKeyExec::shared(
            sort.input(),
            expr.partition_by(),
            sort.expr(),
            window.schema(),
        )?,
        _ => None,
    };
    let mut plan: Arc<dyn ExecutionPlan> = match sort {
        _ if shared.is_some() => match shared {
            Some(exec) => Arc::new(exec),
            None => return Ok(None),
        },
        Some(sort) if !order_needed && choice.by_hash => Arc::new(BestRowPerKeyExec::new(
            sort.input().clone(),
            expr.partition_by().to_vec(),
            sort.expr().clone(),
            window.schema(),
        )),
        _ => Arc::new(FirstRowPerKeyExec::new(
            input.clone(),
            expr.partition_by().to_vec(),
            window.schema(),
        )),
    };
    // The dedup has the window's columns, so the nodes above read it unchanged.
    if let Some(projection) = between {
        plan = Arc::new(ProjectionExec::try_new(projection.expr().to_vec(), plan)?);
    }
    if let Some(columns) = filter.projection() {
        let schema = plan.schema();
        let exprs = columns.iter().map(|&k| ProjectionExpr {
            expr: Arc::new(Column::new(schema.field(k).name(), k)) as Arc<dyn PhysicalExpr>,
            alias: schema.field(k).name().clone(),
        });
        plan = Arc::new(ProjectionExec::try_new(exprs, plan)?);
    }
    Ok(Some(plan))
}

/// The column index of `col = 1`, `col <= 1` or `col < 2` (either side, casts allowed).
fn first_only(predicate: &Arc<dyn PhysicalExpr>) -> Option<usize> {
    let binary = predicate.downcast_ref::<BinaryExpr>()?;
    let column = |e: &Arc<dyn PhysicalExpr>| {
        let e = match e.downcast_ref::<CastExpr>() {
            Some(cast) => cast.expr(),
            None => e,
        };
        e.downcast_ref::<Column>().map(Column::index)
    };
    let int = |e: &Arc<dyn PhysicalExpr>| {
        let value = e.downcast_ref::<Literal>()?.value();
        if !value.data_type().is_integer() {
            return None;
        }
        match value.cast_to(&DataType::Int64).ok()? {
            ScalarValue::Int64(Some(v)) => Some(v),
            _ => None,
        }
    };
    let (l, r) = (binary.left(), binary.right());
    match (binary.op(), column(l), int(r), int(l), column(r)) {
        (Operator::Eq | Operator::LtEq, Some(c), Some(1), _, _) => Some(c),
        (Operator::Lt, Some(c), Some(2), _, _) => Some(c),
        (Operator::Eq | Operator::GtEq, _, _, Some(1), Some(c)) => Some(c),
        (Operator::Gt, _, _, Some(2), Some(c)) => Some(c),
        _ => None,
    }
}

/// The first row of each run of equal `keys` in input sorted by them, with the window's
/// `rn` column (always 1) appended.
#[derive(Debug)]
pub struct FirstRowPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl FirstRowPerKeyExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        schema: SchemaRef,
    ) -> Self {
        // A subsequence of the input: same partitioning, same order. The input's sort
        // expressions refer to its columns, which keep their positions here.
        let orderings = input.output_ordering().cloned().into_iter();
        let properties = PlanProperties::new(
            EquivalenceProperties::new_with_orderings(schema.clone(), orderings),
            input.output_partitioning().clone(),
            input.pipeline_behavior(),
            input.boundedness(),
        );
        FirstRowPerKeyExec {
            input,
            keys,
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl FirstRowPerKeyExec {
    pub fn keys(&self) -> &[Arc<dyn PhysicalExpr>] {
        &self.keys
    }
}

impl DisplayAs for FirstRowPerKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        write!(f, "FirstRowPerKeyExec: keys=[{}]", keys.join(", "))
    }
}

impl ExecutionPlan for FirstRowPerKeyExec {
    fn name(&self) -> &str {
        "FirstRowPerKeyExec"
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

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        super::key_runs::at_most_input(input_stats, &self.schema)
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for key in &self.keys {
            if f(key)? == TreeNodeRecursion::Stop {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.into_iter().next() else {
            return datafusion::common::internal_err!("FirstRowPerKeyExec needs one child");
        };
        Ok(Arc::new(FirstRowPerKeyExec::new(
            input,
            self.keys.clone(),
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let keys = self.keys.clone();
        let schema = self.schema.clone();
        let mut previous: Option<Vec<ArrayRef>> = None;
        let out_schema = schema.clone();
        let stream = input.filter_map(move |batch| {
            let out = batch
                .and_then(|b| super::key_runs::first_rows(&b, &keys, &mut previous, &out_schema));
            std::future::ready(out.transpose())
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}
