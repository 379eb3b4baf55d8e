//! Hash joins against a collected (broadcast) build side that hand the probe side's
//! columns on as they are, instead of copying them.
//!
//! DataFusion's `HashJoinExec` gathers every output column with `take`, the probe side's
//! too, even when each probe row comes out at most once and in order. A delivery looks
//! its events up in small tables (account migrations, accounts, the erasure list), so the
//! events' wide string columns were copied once per lookup: 10% of the CPU time of
//! benches/pipeline at 10M rows. [`LookupJoinExec`] runs such a join — `CollectLeft`,
//! inner, right outer, right semi or right anti, equality keys only — and when the build
//! side's keys are unique (known once it is built) passes the probe columns through
//! untouched where every row matches, filters them where some do not, and gathers only
//! the build side's columns. Duplicate build keys gather both sides, as DataFusion does.
//!
//! The join's plan node stays inside: schema, partitioning, equivalences, statistics and
//! input requirements are the `HashJoinExec`'s, so the rest of the plan sees no change.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::compute::{take, FilterBuilder};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::error::ArrowError;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    internal_err, DataFusionError, JoinType, NullEquality, Result, Statistics,
};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, InputDistributionRequirements, PlanProperties,
};
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, TryStreamExt};

mod few_values;
mod table;
use table::{key_columns, Table, NONE};

/// The name of DataFusion's rule this one must run before: the post-optimization filter
/// pushdown gives hash joins dynamic filters, which a lookup join does not fill in.
pub const BEFORE_RULE: &str = "FilterPushdown(Post)";

/// Replaces every hash join that [`LookupJoinExec`] can run.
#[derive(Debug, Default)]
pub struct LookupJoins;

impl PhysicalOptimizerRule for LookupJoins {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        if !super::options::SluiceOptions::lookup_joins(config) {
            return Ok(plan);
        }
        plan.transform_up(|node| {
            let Some(join) = node.downcast_ref::<HashJoinExec>() else {
                return Ok(Transformed::no(node));
            };
            if !LookupJoinExec::applies_to(join)? {
                return Ok(Transformed::no(node));
            }
            let lookup = LookupJoinExec::new(node.clone())?;
            Ok(Transformed::yes(Arc::new(lookup) as Arc<dyn ExecutionPlan>))
        })
        .data()
    }

    fn name(&self) -> &str {
        "sluice_lookup_joins"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// Key types whose equality is plain value equality, as in DataFusion's hash join (floats
/// are left out: a comparator's total order makes NaN equal to NaN).
fn comparable_key(t: &DataType) -> bool {
    t.is_integer()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Binary
                | DataType::LargeBinary
                | DataType::BinaryView
                | DataType::Boolean
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
                | DataType::Decimal128(_, _)
                | DataType::Decimal256(_, _)
        )
}

/// How probe rows come out, seen from the probe (right) side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emit {
    /// Matched rows, with their build rows (inner join).
    Matched,
    /// Every row, with its build rows or NULLs (right outer join).
    All,
    /// Matched rows once, probe columns only (right semi join).
    IfMatched,
    /// Unmatched rows, probe columns only (right anti join).
    IfUnmatched,
}

impl Emit {
    fn of(join_type: JoinType) -> Option<Emit> {
        match join_type {
            JoinType::Inner => Some(Emit::Matched),
            JoinType::Right => Some(Emit::All),
            JoinType::RightSemi => Some(Emit::IfMatched),
            JoinType::RightAnti => Some(Emit::IfUnmatched),
            _ => None,
        }
    }

    fn has_build_columns(self) -> bool {
        matches!(self, Emit::Matched | Emit::All)
    }
}

type SharedTable =
    Shared<BoxFuture<'static, std::result::Result<Arc<Table>, Arc<DataFusionError>>>>;

/// A `CollectLeft` hash join run as a lookup; see the module documentation.
pub struct LookupJoinExec {
    /// The `HashJoinExec` this runs: plan properties, statistics and requirements are its.
    join: Arc<dyn ExecutionPlan>,
    build: Arc<dyn ExecutionPlan>,
    probe: Arc<dyn ExecutionPlan>,
    on: Vec<(Arc<dyn PhysicalExpr>, Arc<dyn PhysicalExpr>)>,
    join_type: JoinType,
    has_projection: bool,
    emit: Emit,
    /// The join's output columns, as positions in its unprojected schema: build columns
    /// first (inner and outer joins), then probe columns.
    projection: Vec<usize>,
    build_width: usize,
    /// Built by the first partition that runs, shared by all.
    table: Mutex<Option<SharedTable>>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for LookupJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupJoinExec")
            .field("join", &self.join)
            .finish()
    }
}

impl LookupJoinExec {
    /// Whether `join` is one this operator runs exactly as DataFusion would.
    pub fn applies_to(join: &HashJoinExec) -> Result<bool> {
        let plain = join.partition_mode() == &PartitionMode::CollectLeft
            && join.filter().is_none()
            && !join.null_aware
            && join.null_equality() == NullEquality::NullEqualsNothing
            && join.fetch().is_none()
            && join.dynamic_expressions_produced().is_empty()
            && Emit::of(*join.join_type()).is_some();
        if !plain || join.on().is_empty() {
            return Ok(false);
        }
        let (build, probe) = (join.left().schema(), join.right().schema());
        for (b, p) in join.on() {
            let t = b.data_type(&build)?;
            if t != p.data_type(&probe)? || !comparable_key(&t) {
                return Ok(false);
            }
        }
        let build_width = join.join_schema().fields().len() - probe.fields().len();
        let expected = if Emit::of(*join.join_type()).is_some_and(Emit::has_build_columns) {
            build.fields().len()
        } else {
            0
        };
        Ok(build_width == expected)
    }

    fn new(node: Arc<dyn ExecutionPlan>) -> Result<Self> {
        let Some(join) = node.downcast_ref::<HashJoinExec>() else {
            return internal_err!("LookupJoinExec runs hash joins only");
        };
        let Some(emit) = Emit::of(*join.join_type()) else {
            return internal_err!("LookupJoinExec cannot run a {} join", join.join_type());
        };
        let width = join.join_schema().fields().len();
        let projection = match &join.projection {
            Some(p) => p.to_vec(),
            None => (0..width).collect(),
        };
        let build_width = width - join.right().schema().fields().len();
        Ok(LookupJoinExec {
            build: join.left().clone(),
            probe: join.right().clone(),
            on: join.on().to_vec(),
            join_type: *join.join_type(),
            has_projection: join.projection.is_some(),
            join: node,
            emit,
            projection,
            build_width,
            table: Mutex::new(None),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// The build side's table, started by the first caller.
    fn table(&self, context: &Arc<TaskContext>) -> Result<SharedTable> {
        let mut slot = self
            .table
            .lock()
            .map_err(|_| DataFusionError::Internal("LookupJoinExec table lock poisoned".into()))?;
        if let Some(table) = slot.as_ref() {
            return Ok(table.clone());
        }
        let build = self.build.clone();
        let keys: Vec<_> = self.on.iter().map(|(b, _)| b.clone()).collect();
        // The build columns the output gathers: only those are worth a dictionary.
        let gathered: Vec<usize> = self
            .projection
            .iter()
            .copied()
            .filter(|&i| i < self.build_width)
            .collect();
        let context = context.clone();
        let build_rows = MetricBuilder::new(&self.metrics).counter("build_input_rows", 0);
        let future = async move {
            let table = Table::build(build, &keys, &gathered, context).await?;
            build_rows.add(table.batch.num_rows());
            Ok(Arc::new(table))
        }
        .map(|r: Result<Arc<Table>>| r.map_err(Arc::new))
        .boxed()
        .shared();
        *slot = Some(future.clone());
        Ok(future)
    }
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let on: Vec<String> = self.on.iter().map(|(b, p)| format!("({b}, {p})")).collect();
        write!(
            f,
            "LookupJoinExec: mode=CollectLeft, join_type={}, on=[{}]",
            self.join_type,
            on.join(", ")
        )?;
        if self.has_projection {
            write!(f, ", projection={:?}", self.projection)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for LookupJoinExec {
    fn name(&self) -> &str {
        "LookupJoinExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.join.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.build, &self.probe]
    }

    fn input_distribution_requirements(&self) -> InputDistributionRequirements {
        self.join.input_distribution_requirements()
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        // Probe rows come out in their order (duplicates of one row next to each other).
        vec![false, true]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        self.join.child_stats_requests(partition)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        self.join.statistics_from_inputs(input_stats, args)
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.join.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let join = datafusion::physical_plan::execution_plan::replace_children_if_necessary(
            self.join.clone(),
            children,
        )?;
        Ok(Arc::new(LookupJoinExec::new(join)?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let table = self.table(&context)?;
        let probe = self.probe.execute(partition, context.clone())?;
        let lookup = Arc::new(Lookup {
            keys: self.on.iter().map(|(_, p)| p.clone()).collect(),
            emit: self.emit,
            projection: self.projection.clone(),
            build_width: self.build_width,
            schema: self.schema(),
            batch_rows: context.session_config().batch_size().max(1),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        });
        let schema = self.schema();
        // The probe stream is taken by the one item `once` yields.
        let mut probe = Some(probe);
        let batches = futures::stream::once(table)
            .map(move |table| {
                let table = table.map_err(DataFusionError::Shared)?;
                let Some(probe) = probe.take() else {
                    return internal_err!("LookupJoinExec probe stream used twice");
                };
                let lookup = lookup.clone();
                Ok(probe
                    .map(move |batch| lookup.probe(&table, &batch?))
                    .map_ok(|out| futures::stream::iter(out.into_iter().map(Ok)))
                    .try_flatten())
            })
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, batches)))
    }
}

/// What one partition's probe stream needs.
struct Lookup {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    emit: Emit,
    projection: Vec<usize>,
    build_width: usize,
    schema: SchemaRef,
    batch_rows: usize,
    baseline: BaselineMetrics,
}

impl Lookup {
    fn probe(&self, table: &Table, batch: &RecordBatch) -> Result<Vec<RecordBatch>> {
        let _timer = self.baseline.elapsed_compute().timer();
        let n = batch.num_rows();
        if n == 0 {
            return Ok(vec![]);
        }
        let heads = table.heads(&key_columns(&self.keys, batch)?)?;
        let out = match self.emit {
            Emit::IfMatched | Emit::IfUnmatched => {
                let keep = self.emit == Emit::IfMatched;
                let mask: BooleanArray = heads.iter().map(|&h| Some((h != NONE) == keep)).collect();
                self.filtered(batch, &mask, None)?
            }
            Emit::Matched | Emit::All if table.unique => {
                let matched = heads.iter().filter(|&&h| h != NONE).count();
                if self.emit == Emit::All || matched == n {
                    let indices: UInt32Array =
                        heads.iter().map(|&h| (h != NONE).then_some(h)).collect();
                    vec![self.assemble(batch.columns(), Some((table, &indices)), n)?]
                } else {
                    let mask: BooleanArray = heads.iter().map(|&h| Some(h != NONE)).collect();
                    let indices: UInt32Array = heads
                        .iter()
                        .filter(|&&h| h != NONE)
                        .map(|&h| Some(h))
                        .collect();
                    self.filtered(batch, &mask, Some((table, &indices)))?
                }
            }
            Emit::Matched | Emit::All => self.gathered(table, batch, &heads)?,
        };
        let out: Vec<RecordBatch> = out.into_iter().filter(|b| b.num_rows() > 0).collect();
        for b in &out {
            self.baseline.record_output(b.num_rows());
        }
        Ok(out)
    }

    /// The rows of `batch` that `mask` keeps, with the build rows `build` gives them.
    fn filtered(
        &self,
        batch: &RecordBatch,
        mask: &BooleanArray,
        build: Option<(&Table, &UInt32Array)>,
    ) -> Result<Vec<RecordBatch>> {
        let kept = mask.true_count();
        if kept == 0 {
            return Ok(vec![]);
        }
        let probe = if kept == batch.num_rows() {
            batch.columns().to_vec()
        } else {
            let filter = FilterBuilder::new(mask).optimize().build();
            self.projected_probe(batch, |c| filter.filter(c))?
        };
        Ok(vec![self.assemble(&probe, build, kept)?])
    }

    /// The probe columns, those the output uses passed through `kernel`; the others stay
    /// as they are: nothing reads them.
    fn projected_probe(
        &self,
        batch: &RecordBatch,
        kernel: impl Fn(&ArrayRef) -> std::result::Result<ArrayRef, ArrowError>,
    ) -> Result<Vec<ArrayRef>> {
        (0..batch.num_columns())
            .map(|j| {
                if self.projection.contains(&(self.build_width + j)) {
                    Ok(kernel(batch.column(j))?)
                } else {
                    Ok(batch.column(j).clone())
                }
            })
            .collect()
    }

    /// The output batch: probe columns as given, build columns gathered by `build`'s
    /// indices (NULL: no build row). The row count is explicit because a join whose output
    /// no column reads (`count(*)` over it) has no columns.
    fn assemble(
        &self,
        probe: &[ArrayRef],
        build: Option<(&Table, &UInt32Array)>,
        rows: usize,
    ) -> Result<RecordBatch> {
        let columns = self
            .projection
            .iter()
            .map(|&i| match (i.checked_sub(self.build_width), build) {
                (Some(j), _) => Ok(probe[j].clone()),
                (None, Some((table, indices))) => table.gather(i, indices),
                (None, None) => internal_err!("LookupJoinExec: build column without build rows"),
            })
            .collect::<Result<Vec<_>>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(rows));
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &options,
        )?)
    }

    /// Every (probe row, build row) pair, gathered from both sides, in batches of at most
    /// the session's batch size: duplicate build keys can multiply the rows.
    fn gathered(
        &self,
        table: &Table,
        batch: &RecordBatch,
        heads: &[u32],
    ) -> Result<Vec<RecordBatch>> {
        let mut out = Vec::new();
        let mut probe_rows: Vec<u32> = Vec::with_capacity(heads.len());
        let mut build_rows: Vec<Option<u32>> = Vec::with_capacity(heads.len());
        for (i, &head) in heads.iter().enumerate() {
            if head == NONE {
                if self.emit == Emit::All {
                    probe_rows.push(i as u32);
                    build_rows.push(None);
                }
            } else {
                let mut row = head;
                while row != NONE {
                    probe_rows.push(i as u32);
                    build_rows.push(Some(row));
                    row = table.next[row as usize];
                }
            }
            if probe_rows.len() >= self.batch_rows {
                out.push(self.gather(table, batch, &probe_rows, &build_rows)?);
                probe_rows.clear();
                build_rows.clear();
            }
        }
        if !probe_rows.is_empty() {
            out.push(self.gather(table, batch, &probe_rows, &build_rows)?);
        }
        Ok(out)
    }

    fn gather(
        &self,
        table: &Table,
        batch: &RecordBatch,
        probe_rows: &[u32],
        build_rows: &[Option<u32>],
    ) -> Result<RecordBatch> {
        let probe_indices = UInt32Array::from(probe_rows.to_vec());
        let build_indices = UInt32Array::from(build_rows.to_vec());
        let probe = self.projected_probe(batch, |c| take(c, &probe_indices, None))?;
        self.assemble(&probe, Some((table, &build_indices)), probe_rows.len())
    }
}
