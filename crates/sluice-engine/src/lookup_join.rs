//! Joins against a small table whose join keys are unique (a dimension: accounts by id,
//! migrations by legacy id, an erasure list by email) as lookups: [`LookupJoinExec`] finds
//! each probe row's one build row and leaves the probe columns as they are.
//!
//! DataFusion's hash join copies every probe column of every output row with `take` (and
//! compares keys by taking both sides' key columns first), because in general a probe row
//! may match many build rows. In benches/pipeline the three joins of 9.2M deduplicated
//! events against small tables were 2.1 s of CPU, most of it copying the events' strings
//! three times over. With unique build keys a probe row has at most one match, so:
//! - inner join: probe columns untouched when every row matched (else one filter), build
//!   columns gathered by the match positions;
//! - outer join preserving the probe side: probe columns untouched, build columns gathered
//!   with nulls where nothing matched;
//! - semi and anti join on the probe side: one filter of the probe rows.
//!
//! Uniqueness is checked when the build side is read. When a key repeats, the operator
//! runs the hash join it replaced instead, so results never depend on the data's shape.
//! [`LookupJoins`] rewrites only what it can answer exactly: CollectLeft hash joins
//! without a filter, with keys of integer, date, time, string or binary types (floats
//! compare differently by bits than by value), NULLs never equal. Inner and semi joins
//! whose probe side is a plain scan stay hash joins, as DataFusion gives those a dynamic
//! filter that prunes the scan.

use std::fmt;
use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray, RecordBatch,
    RecordBatchOptions, UInt32Array,
};
use datafusion::arrow::buffer::{BooleanBuffer, NullBuffer};
use datafusion::arrow::compute::{cast, concat_batches, take, FilterBuilder, FilterPredicate};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{internal_err, JoinType, NullEquality, Result, Statistics};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::joins::{HashJoinExec, PartitionMode};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect, DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
};
use futures::StreamExt;
use hashbrown::hash_table::HashTable;
use hashbrown::DefaultHashBuilder;
use tokio::sync::OnceCell;

/// DataFusion's rule this one runs before: it gives hash joins their dynamic filters, which
/// a join replaced by a lookup would never fill in.
pub const BEFORE_RULE: &str = "FilterPushdown(Post)";

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
            match LookupJoinExec::try_new(join)? {
                Some(lookup) => Ok(Transformed::yes(Arc::new(lookup) as Arc<dyn ExecutionPlan>)),
                None => Ok(Transformed::no(node)),
            }
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

/// What a probe row becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Kept with its match; dropped without one.
    Inner,
    /// Kept, with its match or with NULLs.
    ProbeOuter,
    /// Kept when it has a match (probe columns only).
    ProbeSemi,
    /// Kept when it has no match (probe columns only).
    ProbeAnti,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Build,
    Probe,
}

pub struct LookupJoinExec {
    /// The join this replaces: its inputs, keys and output; run as it is when keys repeat.
    join: Arc<HashJoinExec>,
    kind: Kind,
    /// Where each output column comes from.
    output: Vec<(Side, usize)>,
    /// The build side, read once for every output partition (reset for each run).
    table: Arc<OnceCell<Arc<Built>>>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for LookupJoinExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LookupJoinExec")
            .field("kind", &self.kind)
            .field("join", &self.join)
            .finish()
    }
}

/// Key types whose values are equal exactly when their bytes (or integers) are.
fn exact_key_type(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(_, _)
            | Utf8
            | LargeUtf8
            | Utf8View
            | Binary
            | LargeBinary
            | BinaryView
            | Boolean
    )
}

/// Whether `plan` passes filters down to a file scan, so a dynamic filter from a join above
/// could prune what is read.
fn reaches_scan(plan: &Arc<dyn ExecutionPlan>) -> bool {
    if plan.downcast_ref::<DataSourceExec>().is_some() {
        return true;
    }
    let transparent = plan.downcast_ref::<FilterExec>().is_some()
        || plan.downcast_ref::<ProjectionExec>().is_some()
        || plan.downcast_ref::<RepartitionExec>().is_some()
        || plan.name() == "CooperativeExec";
    transparent && plan.children().first().is_some_and(|c| reaches_scan(c))
}

impl LookupJoinExec {
    /// The lookup form of `join`, or None when the join is not one it answers exactly.
    pub fn try_new(join: &HashJoinExec) -> Result<Option<LookupJoinExec>> {
        let kind = match join.join_type() {
            JoinType::Inner => Kind::Inner,
            JoinType::Right => Kind::ProbeOuter,
            JoinType::RightSemi => Kind::ProbeSemi,
            JoinType::RightAnti => Kind::ProbeAnti,
            _ => return Ok(None),
        };
        if *join.partition_mode() != PartitionMode::CollectLeft
            || join.filter().is_some()
            || join.null_equality() != NullEquality::NullEqualsNothing
            || join.null_aware
            || join.fetch().is_some()
            || !join.dynamic_expressions_produced().is_empty()
            || join.on().is_empty()
        {
            return Ok(None);
        }
        if matches!(kind, Kind::Inner | Kind::ProbeSemi) && reaches_scan(join.right()) {
            return Ok(None);
        }
        let (build_schema, probe_schema) = (join.left().schema(), join.right().schema());
        for (b, p) in join.on() {
            let (bt, pt) = (b.data_type(&build_schema)?, p.data_type(&probe_schema)?);
            if bt != pt || !exact_key_type(&bt) {
                return Ok(None);
            }
        }
        // The join's columns before its projection: build then probe, or the probe's alone.
        let unprojected: Vec<(Side, usize)> = match kind {
            Kind::Inner | Kind::ProbeOuter => (0..build_schema.fields().len())
                .map(|i| (Side::Build, i))
                .chain((0..probe_schema.fields().len()).map(|i| (Side::Probe, i)))
                .collect(),
            Kind::ProbeSemi | Kind::ProbeAnti => (0..probe_schema.fields().len())
                .map(|i| (Side::Probe, i))
                .collect(),
        };
        let output = match &join.projection {
            Some(projection) => {
                let mut picked = Vec::with_capacity(projection.len());
                for &i in projection.iter() {
                    match unprojected.get(i) {
                        Some(c) => picked.push(*c),
                        None => return Ok(None),
                    }
                }
                picked
            }
            None => unprojected,
        };
        if output.len() != join.schema().fields().len() {
            return Ok(None);
        }
        Ok(Some(LookupJoinExec {
            join: Arc::new(join.builder().reset_state().build()?),
            kind,
            output,
            table: Arc::new(OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn with_join(&self, join: Arc<HashJoinExec>) -> LookupJoinExec {
        LookupJoinExec {
            join,
            kind: self.kind,
            output: self.output.clone(),
            table: Arc::new(OnceCell::new()),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for LookupJoinExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let on: Vec<String> = self
            .join
            .on()
            .iter()
            .map(|(b, p)| format!("({b}, {p})"))
            .collect();
        write!(
            f,
            "LookupJoinExec: join_type={:?}, on=[{}]",
            self.join.join_type(),
            on.join(", ")
        )
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
        vec![self.join.left(), self.join.right()]
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![
            Distribution::SinglePartition,
            Distribution::UnspecifiedDistribution,
        ]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
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
        let join = self
            .join
            .builder()
            .with_new_children(children)?
            .reset_state()
            .build()?;
        Ok(Arc::new(self.with_join(Arc::new(join))))
    }

    fn reset_state(self: Arc<Self>) -> Result<Arc<dyn ExecutionPlan>> {
        let join = self.join.builder().reset_state().build()?;
        Ok(Arc::new(self.with_join(Arc::new(join))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let schema = self.schema();
        let probe = self.join.right().execute(partition, Arc::clone(&context))?;
        let build_time = MetricBuilder::new(&self.metrics).subset_time("build_time", partition);
        let repeated = MetricBuilder::new(&self.metrics).counter("repeated_keys", partition);
        let job = Job {
            join: Arc::clone(&self.join),
            kind: self.kind,
            output: self.output.clone(),
            schema: Arc::clone(&schema),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let table = Arc::clone(&self.table);
        let out = futures::stream::once(async move {
            let built = {
                let _timer = build_time.timer();
                table
                    .get_or_try_init(|| build(Arc::clone(&job.join), Arc::clone(&context)))
                    .await?
                    .clone()
            };
            match &built.table {
                Some(_) => Ok(job.stream(built, probe)),
                None => {
                    // A key repeats: the hash join answers, as planned.
                    repeated.add(1);
                    drop(probe);
                    job.join.execute(partition, context)
                }
            }
        })
        .map(|stream: Result<SendableRecordBatchStream>| match stream {
            Ok(stream) => stream,
            Err(e) => Box::pin(RecordBatchStreamAdapter::new(
                Arc::new(datafusion::arrow::datatypes::Schema::empty()),
                futures::stream::once(async move { Err(e) }),
            )),
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
    }
}

/// The build side in memory: its rows, its keys, and the position of each key.
struct Built {
    batch: RecordBatch,
    keys: Keys,
    /// None when a key repeats (the hash join runs instead).
    table: Option<HashTable<u32>>,
    hasher: DefaultHashBuilder,
    _reservation: MemoryReservation,
}

/// Join key values of a batch in a form that compares and hashes exactly.
enum Keys {
    Ints(PrimitiveArray<Int64Type>),
    /// One string or binary column, read as bytes.
    Bytes(ArrayRef),
    /// Several columns in arrow's row format (equal rows have equal bytes).
    Rows(Rows),
}

#[derive(PartialEq, Eq, Hash, Clone, Copy)]
enum Key<'a> {
    Int(i64),
    Bytes(&'a [u8]),
}

impl Keys {
    fn new(columns: Vec<ArrayRef>, converter: Option<&RowConverter>) -> Result<Keys> {
        if let Some(converter) = converter {
            return Ok(Keys::Rows(converter.convert_columns(&columns)?));
        }
        let Some(column) = columns.into_iter().next() else {
            return internal_err!("LookupJoinExec: a join without keys");
        };
        Ok(match column.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView => Keys::Bytes(column),
            _ => Keys::Ints(cast(&column, &DataType::Int64)?.as_primitive().clone()),
        })
    }

    /// The key of row `i`; None for NULL, which matches nothing. (Rows keep NULLs inside
    /// their bytes, so multi-column keys with a NULL are ruled out by `nulls` instead.)
    #[inline]
    fn get(&self, i: usize) -> Option<Key<'_>> {
        match self {
            Keys::Ints(a) => a.is_valid(i).then(|| Key::Int(a.value(i))),
            Keys::Bytes(a) => a.is_valid(i).then(|| Key::Bytes(bytes_at(a, i))),
            Keys::Rows(rows) => Some(Key::Bytes(rows.row(i).data())),
        }
    }
}

#[inline]
fn bytes_at(a: &ArrayRef, i: usize) -> &[u8] {
    match a.data_type() {
        DataType::Utf8 => a.as_string::<i32>().value(i).as_bytes(),
        DataType::LargeUtf8 => a.as_string::<i64>().value(i).as_bytes(),
        DataType::Utf8View => a.as_string_view().value(i).as_bytes(),
        DataType::Binary => a.as_binary::<i32>().value(i),
        DataType::LargeBinary => a.as_binary::<i64>().value(i),
        _ => a.as_binary_view().value(i),
    }
}

/// Rows where any key column is NULL (they match nothing), for multi-column keys.
fn null_keys(columns: &[ArrayRef]) -> Option<NullBuffer> {
    let nulls: Vec<Option<NullBuffer>> = columns.iter().map(|c| c.logical_nulls()).collect();
    NullBuffer::union_many(nulls.iter().map(Option::as_ref))
}

/// The hash of row `r`'s key (NULL keys are never stored, so any value does for them).
fn hash_at(hasher: &DefaultHashBuilder, keys: &Keys, r: usize) -> u64 {
    keys.get(r).map(|k| hasher.hash_one(k)).unwrap_or(0)
}

fn evaluate(exprs: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    exprs
        .iter()
        .map(|e| e.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

fn converter(exprs: &[Arc<dyn PhysicalExpr>], schema: &SchemaRef) -> Result<Option<RowConverter>> {
    if exprs.len() < 2 {
        return Ok(None);
    }
    let fields = exprs
        .iter()
        .map(|e| Ok(SortField::new(e.data_type(schema)?)))
        .collect::<Result<Vec<_>>>()?;
    Ok(Some(RowConverter::new(fields)?))
}

async fn build(join: Arc<HashJoinExec>, context: Arc<TaskContext>) -> Result<Arc<Built>> {
    let build_plan = Arc::clone(join.left());
    let schema = build_plan.schema();
    let batches = collect(build_plan, Arc::clone(&context)).await?;
    let batch = concat_batches(&schema, &batches)?;
    drop(batches);
    let build_keys: Vec<Arc<dyn PhysicalExpr>> =
        join.on().iter().map(|(b, _)| Arc::clone(b)).collect();
    let columns = evaluate(&build_keys, &batch)?;
    let nulls = null_keys(&columns);
    let converter = converter(&build_keys, &schema)?;
    let keys = Keys::new(columns, converter.as_ref())?;
    let reservation = MemoryConsumer::new("LookupJoinExec[build]").register(context.memory_pool());
    let rows = batch.num_rows();
    reservation.try_grow(batch.get_array_memory_size() + rows * 12)?;
    let hasher = DefaultHashBuilder::default();
    let mut table: HashTable<u32> = HashTable::with_capacity(rows);
    let mut unique = true;
    for row in 0..rows {
        if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
            continue;
        }
        let Some(key) = keys.get(row) else { continue };
        let hash = hasher.hash_one(key);
        let eq = |&other: &u32| keys.get(other as usize) == Some(key);
        if table.find(hash, eq).is_some() {
            unique = false;
            break;
        }
        table.insert_unique(hash, row as u32, |&r| hash_at(&hasher, &keys, r as usize));
    }
    Ok(Arc::new(Built {
        batch,
        keys,
        table: unique.then_some(table),
        hasher,
        _reservation: reservation,
    }))
}

/// One output partition's work: its probe batches joined against the build side.
struct Job {
    join: Arc<HashJoinExec>,
    kind: Kind,
    output: Vec<(Side, usize)>,
    schema: SchemaRef,
    baseline: BaselineMetrics,
}

impl Job {
    fn stream(
        self,
        built: Arc<Built>,
        probe: SendableRecordBatchStream,
    ) -> SendableRecordBatchStream {
        let schema = Arc::clone(&self.schema);
        let probe_keys: Vec<Arc<dyn PhysicalExpr>> =
            self.join.on().iter().map(|(_, p)| Arc::clone(p)).collect();
        let probe_schema = self.join.right().schema();
        let converter = match converter(&probe_keys, &probe_schema) {
            Ok(c) => c,
            Err(e) => {
                return Box::pin(RecordBatchStreamAdapter::new(
                    schema,
                    futures::stream::once(async move { Err(e) }),
                ))
            }
        };
        let out = probe.map(move |batch| {
            let batch = batch?;
            let elapsed = self.baseline.elapsed_compute().clone();
            let _timer = elapsed.timer();
            let joined = self.join_batch(&built, &probe_keys, converter.as_ref(), &batch)?;
            self.baseline.record_output(joined.num_rows());
            Ok(joined)
        });
        Box::pin(RecordBatchStreamAdapter::new(schema, out))
    }

    fn join_batch(
        &self,
        built: &Built,
        probe_keys: &[Arc<dyn PhysicalExpr>],
        converter: Option<&RowConverter>,
        batch: &RecordBatch,
    ) -> Result<RecordBatch> {
        let Some(table) = built.table.as_ref() else {
            return internal_err!("LookupJoinExec: probing a build side with repeated keys");
        };
        let n = batch.num_rows();
        let columns = evaluate(probe_keys, batch)?;
        let nulls = if converter.is_some() {
            null_keys(&columns)
        } else {
            None
        };
        let keys = Keys::new(columns, converter)?;
        // Per probe row, the build row it matches (or u32::MAX for none).
        let mut positions: Vec<u32> = Vec::with_capacity(n);
        let mut matched = 0usize;
        for i in 0..n {
            let found = match keys.get(i) {
                Some(key) if !nulls.as_ref().is_some_and(|nb| nb.is_null(i)) => table
                    .find(built.hasher.hash_one(key), |&r| {
                        built.keys.get(r as usize) == Some(key)
                    })
                    .copied(),
                _ => None,
            };
            matched += found.is_some() as usize;
            positions.push(found.unwrap_or(u32::MAX));
        }
        let keep = |p: &u32| match self.kind {
            Kind::Inner | Kind::ProbeSemi => *p != u32::MAX,
            Kind::ProbeAnti => *p == u32::MAX,
            Kind::ProbeOuter => true,
        };
        let kept = match self.kind {
            Kind::Inner | Kind::ProbeSemi => matched,
            Kind::ProbeAnti => n - matched,
            Kind::ProbeOuter => n,
        };
        // The probe rows that stay, unless all do.
        let filter: Option<FilterPredicate> = (kept < n).then(|| {
            let mask = BooleanArray::new(
                BooleanBuffer::collect_bool(n, |i| keep(&positions[i])),
                None,
            );
            FilterBuilder::new(&mask).optimize().build()
        });
        let build_positions: Option<UInt32Array> = self
            .output
            .iter()
            .any(|(side, _)| *side == Side::Build)
            .then(|| {
                let kept_positions: Vec<u32> = match &filter {
                    Some(_) => positions.iter().copied().filter(|p| keep(p)).collect(),
                    None => positions,
                };
                let valid = BooleanBuffer::collect_bool(kept_positions.len(), |i| {
                    kept_positions[i] != u32::MAX
                });
                let nulls = NullBuffer::new(valid);
                let values: Vec<u32> = kept_positions
                    .iter()
                    .map(|&p| if p == u32::MAX { 0 } else { p })
                    .collect();
                UInt32Array::new(values.into(), (nulls.null_count() > 0).then_some(nulls))
            });
        let mut out: Vec<ArrayRef> = Vec::with_capacity(self.output.len());
        for &(side, i) in &self.output {
            out.push(match side {
                Side::Probe => match &filter {
                    Some(f) => f.filter(batch.column(i))?,
                    None => Arc::clone(batch.column(i)),
                },
                Side::Build => match &build_positions {
                    // Nothing to look up in an empty build side: every row gets NULLs.
                    Some(_) if built.batch.num_rows() == 0 => {
                        new_null_array(built.batch.schema().field(i).data_type(), kept)
                    }
                    Some(p) => take(built.batch.column(i), p, None)?,
                    None => return internal_err!("LookupJoinExec: build positions missing"),
                },
            });
        }
        Ok(RecordBatch::try_new_with_options(
            Arc::clone(&self.schema),
            out,
            &RecordBatchOptions::new().with_row_count(Some(kept)),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::datasource::MemTable;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    use super::*;

    fn session(lookups: bool) -> SessionContext {
        let config = SessionConfig::new()
            .with_target_partitions(3)
            .with_batch_size(1000);
        let state = datafusion::execution::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .build();
        let mut rules = state.physical_optimizers().to_vec();
        if lookups {
            let at = rules
                .iter()
                .position(|r| r.name() == BEFORE_RULE)
                .expect("DataFusion's rule");
            rules.insert(at, Arc::new(LookupJoins));
        }
        let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
            .with_physical_optimizer_rules(rules)
            .build();
        SessionContext::new_with_state(state)
    }

    /// A deterministic stream of numbers (no randomness crate in the engine).
    fn mix(i: u64) -> u64 {
        let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
        x ^= x >> 29;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^ (x >> 32)
    }

    /// Facts in three partitions; keys 0..1500 with NULLs, so some match nothing.
    fn facts(rows: u64) -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("fid", DataType::Int64, false),
            Field::new("k", DataType::Int64, true),
            Field::new("ks", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let partitions = (0..3u64)
            .map(|p| {
                let ids: Vec<u64> = (0..rows).filter(|i| i % 3 == p).collect();
                let k: Int64Array = ids
                    .iter()
                    .map(|&i| (mix(i) % 17 != 0).then(|| (mix(i) % 1500) as i64))
                    .collect();
                let ks: StringArray = k.iter().map(|v| v.map(|v| format!("key-{v}"))).collect();
                let at: TimestampMicrosecondArray = ids
                    .iter()
                    .map(|&i| Some((mix(i + 7) % 5) as i64 * 1_000_000))
                    .collect();
                let fid = Int64Array::from_iter_values(ids.iter().map(|&i| i as i64));
                vec![RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![Arc::new(fid), Arc::new(k), Arc::new(ks), Arc::new(at)],
                )
                .expect("facts")]
            })
            .collect();
        MemTable::try_new(schema, partitions).expect("facts table")
    }

    /// A dimension over keys 0..1000 (every third missing), unique unless `repeat`, with
    /// one NULL key; `rows = 0` for an empty one.
    fn dim(repeat: bool, rows: i64) -> MemTable {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ids", DataType::Utf8, true),
            Field::new("at", DataType::Timestamp(TimeUnit::Microsecond, None), true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let mut ids: Vec<Option<i64>> = (0..rows).filter(|i| i % 3 != 1).map(Some).collect();
        if rows > 0 {
            ids.push(None);
        }
        if repeat {
            ids.push(Some(42));
        }
        let id: Int64Array = ids.iter().copied().collect();
        let id_s: StringArray = ids.iter().map(|v| v.map(|v| format!("key-{v}"))).collect();
        let at: TimestampMicrosecondArray =
            ids.iter().map(|v| v.map(|v| (v % 5) * 1_000_000)).collect();
        let name: StringArray = ids
            .iter()
            .enumerate()
            .map(|(n, v)| v.map(|v| format!("name-{v}-{n}")))
            .collect();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![Arc::new(id), Arc::new(id_s), Arc::new(at), Arc::new(name)],
        )
        .expect("dim");
        MemTable::try_new(schema, vec![vec![batch]]).expect("dim table")
    }

    async fn run(lookups: bool, dim_table: MemTable, sql: &str) -> (String, String) {
        let ctx = session(lookups);
        ctx.register_table("facts", Arc::new(facts(30_000)))
            .expect("facts");
        ctx.register_table("more_facts", Arc::new(facts(3_000)))
            .expect("facts");
        ctx.register_table("dim", Arc::new(dim_table)).expect("dim");
        let df = ctx.sql(sql).await.expect("plans");
        let plan = df
            .clone()
            .create_physical_plan()
            .await
            .expect("physical plan");
        let shown = displayable(plan.as_ref()).indent(true).to_string();
        let batches = datafusion::physical_plan::collect(plan, ctx.task_ctx())
            .await
            .expect("runs");
        (
            shown,
            pretty_format_batches(&batches).expect("prints").to_string(),
        )
    }

    /// The probe side behind a UNION, which gives no dynamic filter a scan to prune.
    const PROBE: &str = "(SELECT * FROM facts UNION ALL SELECT * FROM more_facts)";

    #[tokio::test]
    async fn lookups_give_the_hash_joins_rows_for_every_join_kind_and_key_type() {
        let queries = [
            // Inner, integer key; the sort makes the row order comparable.
            format!("SELECT f.fid, f.k, d.name FROM {PROBE} f JOIN dim d ON d.id = f.k ORDER BY f.fid, f.k"),
            // Outer on the probe side: misses and NULL keys get NULLs.
            format!("SELECT f.fid, d.name, coalesce(d.id, -1) AS id FROM {PROBE} f LEFT JOIN dim d ON d.id = f.k ORDER BY f.fid, f.k NULLS FIRST"),
            "SELECT f.fid, d.name FROM facts f LEFT JOIN dim d ON d.ids = f.ks ORDER BY f.fid".to_string(),
            // Two keys (row format), one of them a timestamp.
            "SELECT f.fid, d.name FROM facts f LEFT JOIN dim d ON d.id = f.k AND d.at = f.at ORDER BY f.fid".to_string(),
            // Semi and anti joins on the probe side.
            format!("SELECT count(*), sum(f.fid) FROM {PROBE} f WHERE EXISTS (SELECT 1 FROM dim d WHERE d.ids = f.ks)"),
            "SELECT count(*), sum(f.fid) FROM facts f WHERE NOT EXISTS (SELECT 1 FROM dim d WHERE d.id = f.k)".to_string(),
            // Only probe columns out of an outer join.
            "SELECT count(*), sum(f.fid), count(f.k) FROM facts f LEFT JOIN dim d ON d.id = f.k".to_string(),
        ];
        for sql in &queries {
            let (plain_plan, expected) = run(false, dim(false, 1000), sql).await;
            let (plan, rows) = run(true, dim(false, 1000), sql).await;
            assert!(!plain_plan.contains("LookupJoinExec"), "{plain_plan}");
            assert!(plan.contains("LookupJoinExec"), "{sql}\n{plan}");
            assert_eq!(rows, expected, "{sql}");
            // The same against an empty dimension.
            let (_, expected) = run(false, dim(false, 0), sql).await;
            let (_, rows) = run(true, dim(false, 0), sql).await;
            assert_eq!(rows, expected, "{sql} (empty dimension)");
        }
    }

    #[tokio::test]
    async fn a_repeated_build_key_runs_the_hash_join_with_its_answer() {
        for sql in [
            format!("SELECT f.fid, d.name FROM {PROBE} f JOIN dim d ON d.id = f.k ORDER BY f.fid, d.name"),
            "SELECT f.fid, d.name FROM facts f LEFT JOIN dim d ON d.id = f.k ORDER BY f.fid, d.name".to_string(),
        ] {
            let (_, expected) = run(false, dim(true, 1000), &sql).await;
            let (plan, rows) = run(true, dim(true, 1000), &sql).await;
            assert!(plan.contains("LookupJoinExec"), "{plan}");
            assert_eq!(rows, expected, "{sql}");
            // Key 42 is there twice, so its facts come out twice.
            assert!(rows.contains("name-42-"), "{rows}");
        }
    }

    #[tokio::test]
    async fn inner_joins_over_a_plain_scan_stay_hash_joins_for_their_dynamic_filter() {
        let (plan, _) = run(
            true,
            dim(false, 1000),
            "SELECT f.fid, d.name FROM facts f JOIN dim d ON d.id = f.k",
        )
        .await;
        assert!(!plan.contains("LookupJoinExec"), "{plan}");
        assert!(plan.contains("HashJoinExec"), "{plan}");
    }
}
