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

use datafusion::arrow::array::{make_comparator, DynComparator};
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::{concat_batches, take, FilterBuilder};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::tree_node::{Transformed, TransformedResult, TreeNode, TreeNodeRecursion};
use datafusion::common::{
    internal_err, DataFusionError, JoinType, NullEquality, Result, Statistics,
};
use datafusion::execution::memory_pool::MemoryConsumer;
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
        let context = context.clone();
        let build_rows = MetricBuilder::new(&self.metrics).counter("build_input_rows", 0);
        let future = async move {
            let table = Table::build(build, &keys, context).await?;
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

/// The build side: its rows in one batch, and the rows of each key.
///
/// The key index is an open-addressing table of `u64` slots, each the upper half of a
/// key's hash and its first build row (plus one; zero is an empty slot), probed linearly.
/// Probing is the join's cost: the accounts of benches/pipeline (500K keys) took 116 ns
/// per event, nearly all of it waiting for memory. So a batch is probed in passes — hashes,
/// then slots, then key comparisons — and each pass prefetches the memory of the row
/// `PREFETCH_AHEAD` rows on, so that many rows' cache misses overlap.
struct Table {
    batch: RecordBatch,
    keys: Vec<ArrayRef>,
    slots: Vec<u64>,
    mask: usize,
    /// The next build row with the same key as this one; `NONE` ends the chain.
    next: Vec<u32>,
    unique: bool,
    _reservation: datafusion::execution::memory_pool::MemoryReservation,
}

const NONE: u32 = u32::MAX;

/// One seed for build and probe keys, so that equal keys hash alike.
const KEY_HASH: RandomState = RandomState::with_seed(0x51_1ce);

/// How many rows ahead each pass prefetches.
const PREFETCH_AHEAD: usize = 16;

fn slot_of(hash: u64, row: u32) -> u64 {
    (hash & 0xffff_ffff_0000_0000) | (row as u64 + 1)
}

fn slot_row(slot: u64) -> u32 {
    ((slot & 0xffff_ffff) - 1) as u32
}

fn same_tag(slot: u64, hash: u64) -> bool {
    (slot ^ hash) >> 32 == 0
}

impl Table {
    async fn build(
        build: Arc<dyn ExecutionPlan>,
        keys: &[Arc<dyn PhysicalExpr>],
        context: Arc<TaskContext>,
    ) -> Result<Table> {
        let reservation =
            MemoryConsumer::new("LookupJoinExec build side").register(context.memory_pool());
        let schema = build.schema();
        let mut batches = Vec::new();
        for partition in 0..build.properties().partitioning.partition_count() {
            let mut stream = build.execute(partition, context.clone())?;
            while let Some(batch) = stream.next().await.transpose()? {
                reservation.try_grow(batch.get_array_memory_size())?;
                batches.push(batch);
            }
        }
        let batch = concat_batches(&schema, &batches)?;
        drop(batches);
        reservation.resize(batch.get_array_memory_size());
        let n = batch.num_rows();
        if n >= (NONE - 1) as usize {
            return internal_err!("LookupJoinExec: build side of {n} rows");
        }
        let keys = key_columns(keys, &batch)?;
        let mut hashes = vec![0u64; n];
        create_hashes(&keys, &KEY_HASH, &mut hashes)?;
        let nulls = key_nulls(&keys);
        let same = comparators(&keys, &keys)?;
        // At most half full, so that a probe for a missing key ends soon.
        let capacity = (n * 2).next_power_of_two().max(16);
        reservation.try_grow(capacity * 8 + n * 4)?;
        let mask = capacity - 1;
        let mut slots = vec![0u64; capacity];
        let mut next = vec![NONE; n];
        let mut unique = true;
        for (row, &hash) in hashes.iter().enumerate() {
            if nulls.as_ref().is_some_and(|m| m.is_null(row)) {
                continue;
            }
            let mut at = hash as usize & mask;
            loop {
                let slot = slots[at];
                if slot == 0 {
                    slots[at] = slot_of(hash, row as u32);
                    break;
                }
                let head = slot_row(slot);
                if same_tag(slot, hash) && all_equal(&same, head as usize, row) {
                    // The newest row heads the chain.
                    next[row] = head;
                    slots[at] = slot_of(hash, row as u32);
                    unique = false;
                    break;
                }
                at = (at + 1) & mask;
            }
        }
        Ok(Table {
            batch,
            keys,
            slots,
            mask,
            next,
            unique,
            _reservation: reservation,
        })
    }

    /// For each probe row, the first build row with its key (`NONE`: none).
    fn heads(&self, probe_keys: &[ArrayRef]) -> Result<Vec<u32>> {
        let n = probe_keys.first().map_or(0, |k| k.len());
        let mut hashes = vec![0u64; n];
        create_hashes(probe_keys, &KEY_HASH, &mut hashes)?;
        let nulls = key_nulls(probe_keys);
        // Pass 1: the first slot whose tag matches, per row.
        let mut heads = Vec::with_capacity(n);
        for (i, &hash) in hashes.iter().enumerate() {
            if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                prefetch(&self.slots[ahead as usize & self.mask]);
            }
            heads.push(self.first_tagged(hash, hash as usize & self.mask).0);
        }
        // Pass 2: compare keys; a tag shared by another key probes on.
        let same = comparators(&self.keys, probe_keys)?;
        let prefetcher = KeyPrefetch::of(&self.keys);
        for i in 0..n {
            if let Some(&ahead) = heads.get(i + 2 * PREFETCH_AHEAD) {
                if ahead != NONE {
                    prefetcher.locate(ahead);
                }
            }
            if let Some(&ahead) = heads.get(i + PREFETCH_AHEAD) {
                if ahead != NONE {
                    prefetcher.fetch(ahead);
                }
            }
            if nulls.as_ref().is_some_and(|m| m.is_null(i)) {
                heads[i] = NONE;
                continue;
            }
            if heads[i] == NONE || all_equal(&same, heads[i] as usize, i) {
                continue;
            }
            let hash = hashes[i];
            let mut at = hash as usize & self.mask;
            heads[i] = loop {
                let (row, found_at) = self.first_tagged(hash, at);
                if row == NONE || all_equal(&same, row as usize, i) {
                    break row;
                }
                at = (found_at + 1) & self.mask;
            };
        }
        Ok(heads)
    }

    /// The row of the first slot from `at` on whose tag is `hash`'s, and where it is.
    fn first_tagged(&self, hash: u64, mut at: usize) -> (u32, usize) {
        loop {
            let slot = self.slots[at];
            if slot == 0 {
                return (NONE, at);
            }
            if same_tag(slot, hash) {
                return (slot_row(slot), at);
            }
            at = (at + 1) & self.mask;
        }
    }
}

/// Hints the CPU to fetch `value`'s cache line.
#[inline(always)]
fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it reads nothing and cannot fault.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(value as *const T as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

/// Where a build row's key lives, for the key types worth prefetching (one string or
/// integer column); nothing for others. A string's offset is fetched two strides ahead
/// and its bytes one stride ahead, when the offset has arrived.
enum KeyPrefetch<'a> {
    Strings(&'a [i32], &'a [u8]),
    LargeStrings(&'a [i64], &'a [u8]),
    Int64s(&'a [i64]),
    Int32s(&'a [i32]),
    Nothing,
}

impl<'a> KeyPrefetch<'a> {
    fn of(keys: &'a [ArrayRef]) -> Self {
        use datafusion::arrow::array::AsArray;
        use datafusion::arrow::datatypes::{Int32Type, Int64Type};
        let [key] = keys else {
            return KeyPrefetch::Nothing;
        };
        match key.data_type() {
            DataType::Utf8 => {
                let a = key.as_string::<i32>();
                KeyPrefetch::Strings(a.value_offsets(), a.values().as_slice())
            }
            DataType::LargeUtf8 => {
                let a = key.as_string::<i64>();
                KeyPrefetch::LargeStrings(a.value_offsets(), a.values().as_slice())
            }
            DataType::Int64 => KeyPrefetch::Int64s(key.as_primitive::<Int64Type>().values()),
            DataType::Int32 => KeyPrefetch::Int32s(key.as_primitive::<Int32Type>().values()),
            _ => KeyPrefetch::Nothing,
        }
    }

    /// The first stride: where the key is (strings), or the key itself.
    fn locate(&self, row: u32) {
        let row = row as usize;
        match self {
            KeyPrefetch::Strings(offsets, _) => offsets.get(row).map_or((), prefetch),
            KeyPrefetch::LargeStrings(offsets, _) => offsets.get(row).map_or((), prefetch),
            KeyPrefetch::Int64s(values) => values.get(row).map_or((), prefetch),
            KeyPrefetch::Int32s(values) => values.get(row).map_or((), prefetch),
            KeyPrefetch::Nothing => {}
        }
    }

    /// The second stride: a string's bytes.
    fn fetch(&self, row: u32) {
        let row = row as usize;
        match self {
            KeyPrefetch::Strings(offsets, values) => {
                if let Some(byte) = offsets.get(row).and_then(|&o| values.get(o as usize)) {
                    prefetch(byte);
                }
            }
            KeyPrefetch::LargeStrings(offsets, values) => {
                if let Some(byte) = offsets.get(row).and_then(|&o| values.get(o as usize)) {
                    prefetch(byte);
                }
            }
            _ => {}
        }
    }
}

/// Comparators of build key columns (left) with other key columns (right).
fn comparators(build: &[ArrayRef], other: &[ArrayRef]) -> Result<Vec<DynComparator>> {
    build
        .iter()
        .zip(other)
        .map(|(b, o)| {
            Ok(make_comparator(
                b.as_ref(),
                o.as_ref(),
                SortOptions::default(),
            )?)
        })
        .collect()
}

fn all_equal(comparators: &[DynComparator], build_row: usize, other_row: usize) -> bool {
    comparators
        .iter()
        .all(|c| c(build_row, other_row) == std::cmp::Ordering::Equal)
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
                    vec![self.assemble(table, batch.columns(), &indices)?]
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
        let probe: Vec<ArrayRef> = if kept == batch.num_rows() {
            batch.columns().to_vec()
        } else {
            let filter = FilterBuilder::new(mask).optimize().build();
            // Columns the output does not use stay as they are: nothing reads them.
            (0..batch.num_columns())
                .map(|j| {
                    if self.projection.contains(&(self.build_width + j)) {
                        filter.filter(batch.column(j))
                    } else {
                        Ok(batch.column(j).clone())
                    }
                })
                .collect::<std::result::Result<_, _>>()?
        };
        Ok(vec![match build {
            Some((table, indices)) => self.assemble(table, &probe, indices)?,
            None => self.assemble_probe_only(&probe)?,
        }])
    }

    /// Probe columns as given, build columns gathered by `indices` (NULL: no build row).
    fn assemble(
        &self,
        table: &Table,
        probe: &[ArrayRef],
        indices: &UInt32Array,
    ) -> Result<RecordBatch> {
        let columns = self
            .projection
            .iter()
            .map(|&i| {
                if i < self.build_width {
                    Ok(take(table.batch.column(i), indices, None)?)
                } else {
                    Ok(probe[i - self.build_width].clone())
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn assemble_probe_only(&self, probe: &[ArrayRef]) -> Result<RecordBatch> {
        let columns = self
            .projection
            .iter()
            .map(|&i| probe[i - self.build_width].clone())
            .collect();
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
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
        let columns = self
            .projection
            .iter()
            .map(|&i| {
                if i < self.build_width {
                    Ok(take(table.batch.column(i), &build_indices, None)?)
                } else {
                    Ok(take(
                        batch.column(i - self.build_width),
                        &probe_indices,
                        None,
                    )?)
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

fn key_columns(keys: &[Arc<dyn PhysicalExpr>], batch: &RecordBatch) -> Result<Vec<ArrayRef>> {
    keys.iter()
        .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

/// Rows with a NULL in any key column: they match nothing.
fn key_nulls(columns: &[ArrayRef]) -> Option<NullBuffer> {
    columns.iter().fold(None, |acc, c| {
        NullBuffer::union(acc.as_ref(), c.logical_nulls().as_ref())
    })
}
