//! `row_number() OVER (PARTITION BY k ORDER BY t) = 1` over input in any order, without
//! sorting it: [`BestRowPerKeyExec`] keeps, per key, the position of the row that sorts
//! first so far, and emits those rows at the end.
//!
//! Users' exports arrive in any key order. Planned by DataFusion, the dedup sorts the whole
//! input by key and time (6.2 s of a 10.8 s pipeline over 10.3M events in random order);
//! a hash lookup per row finds the same rows without the sort. One integer key ordered by
//! one integer or time column (an event id and its timestamp, the common case) is kept in
//! a table of plain integers; any other keys and orders are compared in arrow's row
//! format, whose byte order is the sort order (with ASC/DESC and NULLS FIRST/LAST), so one
//! `memcmp` decides which row wins. Among rows that tie on the ORDER BY the first in input
//! order wins; DataFusion's own (unstable) sort may pick another row of the tie, which is
//! just as much "row number 1".
//!
//! Output: the winners in input order, each buffered batch filtered by a mask of its
//! winners and freed as soon as it is emitted (the table is freed before the first).
//!
//! Memory: the input batches that hold a current winner stay buffered; when they hold more
//! than twice as many rows as there are keys, the winners are copied out and the rest is
//! freed. Everything is reserved in the session's memory pool. When the pool refuses, the
//! operator falls back to what DataFusion would have done: the winners so far and the rest
//! of the input go through DataFusion's sort, which spills, and the first row of each key
//! run is kept (the losers so far cannot win any more, so they are dropped first). An
//! input whose files are more than twice the pool goes to the sort from the start.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{BooleanArray, RecordBatch};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{filter_record_batch, interleave_record_batch, SortOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, DataFusionError, Result, Statistics};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryLimit, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{
    EquivalenceProperties, LexOrdering, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::{Stream, StreamExt};

use super::one_shot::OneShot;

/// How much larger a Parquet file's rows are in memory than on disk (compressed and
/// dictionary-encoded columns): about 3.5x for benches/pipeline's events.
const PARQUET_EXPANSION: u64 = 3;

mod shared;
mod table;
mod winners;
use table::Table;

/// Per key, the row that sorts first by `order` (the window's ORDER BY), with the window's
/// `rn` column (always 1) appended. Partitioned like its input (hash on the keys).
#[derive(Debug)]
pub struct BestRowPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    /// The sort DataFusion planned under the window: the keys, then the ORDER BY. Its
    /// ORDER BY part decides the winner; all of it orders the spilling fallback.
    ordering: LexOrdering,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    /// Set when `input` is not split by key (the table is shared, see [`shared`]): the
    /// input split by key as DataFusion planned it, for an input sorted from the start.
    by_key: Option<Arc<dyn ExecutionPlan>>,
    runs: shared::Runs,
}

impl BestRowPerKeyExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        ordering: LexOrdering,
        schema: SchemaRef,
    ) -> Self {
        let partitioning = input.output_partitioning().clone();
        Self::with_input(input, None, partitioning, keys, ordering, schema)
    }

    /// Over the input of `by_key`, DataFusion's hash repartition on the keys, when one
    /// table can be shared by its partitions: one integer key, one integer or time ORDER
    /// BY, as many partitions in as out. None otherwise.
    pub fn shared(
        by_key: &Arc<dyn ExecutionPlan>,
        keys: &[Arc<dyn PhysicalExpr>],
        ordering: &LexOrdering,
        schema: SchemaRef,
    ) -> Result<Option<Self>> {
        let Some(repartition) = by_key.downcast_ref::<RepartitionExec>() else {
            return Ok(None);
        };
        let input = repartition.input().clone();
        let partitions = input.output_partitioning().partition_count();
        let split_on_keys = match repartition.partitioning() {
            Partitioning::Hash(exprs, n) => {
                *n == partitions
                    && exprs.len() == keys.len()
                    && exprs
                        .iter()
                        .zip(keys)
                        .all(|(e, k)| e.as_ref() == k.as_ref())
            }
            _ => false,
        };
        let input_schema = input.schema();
        let order: Vec<_> = order_part(keys, ordering).collect();
        let ints = match (keys, order.as_slice()) {
            ([key], [by]) => {
                table::as_int(&key.data_type(&input_schema)?)
                    && table::as_int(&by.expr.data_type(&input_schema)?)
            }
            _ => false,
        };
        if !split_on_keys || !ints || partitions == 0 || partitions > shared::MAX_INPUTS {
            return Ok(None);
        }
        Ok(Some(Self::with_input(
            input,
            Some(by_key.clone()),
            Partitioning::UnknownPartitioning(partitions),
            keys.to_vec(),
            ordering.clone(),
            schema,
        )))
    }

    fn with_input(
        input: Arc<dyn ExecutionPlan>,
        by_key: Option<Arc<dyn ExecutionPlan>>,
        partitioning: Partitioning,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        ordering: LexOrdering,
        schema: SchemaRef,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            partitioning,
            EmissionType::Final,
            Boundedness::Bounded,
        );
        BestRowPerKeyExec {
            input,
            keys,
            ordering,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
            by_key,
            runs: shared::Runs::default(),
        }
    }

    /// The bytes the input reads, all partitions together, as they will be in memory:
    /// text files and sources held in memory at their size, Parquet's compressed columns
    /// times [`PARQUET_EXPANSION`]. None when a leaf's size is unknown.
    fn input_bytes(&self) -> Option<u64> {
        let in_memory = |scan: &FileScanConfig| match scan.file_source().file_type() {
            "parquet" => PARQUET_EXPANSION,
            _ => 1,
        };
        super::leaf_bytes::leaf_bytes(&self.input, in_memory)
            .ok()
            .flatten()
    }

    /// The ORDER BY part of the ordering: what follows the partition keys.
    fn order(&self) -> Vec<(Arc<dyn PhysicalExpr>, SortOptions)> {
        order_part(&self.keys, &self.ordering)
            .map(|o| (o.expr.clone(), o.options))
            .collect()
    }
}

/// The ORDER BY part of the window's sort: what follows the partition keys.
fn order_part<'a>(
    keys: &'a [Arc<dyn PhysicalExpr>],
    ordering: &'a LexOrdering,
) -> impl Iterator<Item = &'a PhysicalSortExpr> {
    ordering
        .iter()
        .filter(|o| !keys.iter().any(|k| k.as_ref() == o.expr.as_ref()))
}

impl DisplayAs for BestRowPerKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        let order: Vec<String> = order_part(&self.keys, &self.ordering)
            .map(|o| o.to_string())
            .collect();
        write!(
            f,
            "BestRowPerKeyExec: keys=[{}], order=[{}]",
            keys.join(", "),
            order.join(", ")
        )?;
        if self.by_key.is_some() {
            write!(f, ", table=shared")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for BestRowPerKeyExec {
    fn name(&self) -> &str {
        "BestRowPerKeyExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![false]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
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
        for e in self
            .keys
            .iter()
            .chain(self.ordering.iter().map(|o| &o.expr))
        {
            if f(e)? == TreeNodeRecursion::Stop {
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
            return internal_err!("BestRowPerKeyExec needs one child");
        };
        let Some(by_key) = &self.by_key else {
            return Ok(Arc::new(BestRowPerKeyExec::new(
                input,
                self.keys.clone(),
                self.ordering.clone(),
                self.schema.clone(),
            )));
        };
        let by_key: Arc<dyn ExecutionPlan> = Arc::new(RepartitionExec::try_new(
            input,
            by_key.output_partitioning().clone(),
        )?);
        match Self::shared(&by_key, &self.keys, &self.ordering, self.schema.clone())? {
            Some(exec) => Ok(Arc::new(exec)),
            None => Ok(Arc::new(BestRowPerKeyExec::new(
                by_key,
                self.keys.clone(),
                self.ordering.clone(),
                self.schema.clone(),
            ))),
        }
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        // The table needs every input batch that holds a winner: an input several times the
        // memory pool would fill it, and then go through the sort anyway. 100M random-order
        // rows (9.4 GB of CSV) under --memory-limit 4G: 83.0 s sorting from the start
        // against 90.7 s filling the table first, peak RSS 2.5 GB against 3.9 GB.
        let sort_up_front = match (context.memory_pool().memory_limit(), self.input_bytes()) {
            (MemoryLimit::Finite(pool), Some(bytes)) => bytes > 2 * pool as u64,
            _ => false,
        };
        let input_schema = self.input.schema();
        let fallback = Fallback {
            keys: self.keys.clone(),
            ordering: self.ordering.clone(),
            input_schema: input_schema.clone(),
            context: context.clone(),
            fallbacks: MetricBuilder::new(&self.metrics).counter("fallback_sorts", partition),
            up_front: MetricBuilder::new(&self.metrics).counter("sorts_up_front", partition),
            spill_count: MetricBuilder::new(&self.metrics).spill_count(partition),
            spilled_bytes: MetricBuilder::new(&self.metrics).spilled_bytes(partition),
        };
        let input = match &self.by_key {
            Some(_) if !sort_up_front => {
                let order = self.order();
                let [(by, options)] = order.as_slice() else {
                    return internal_err!("BestRowPerKeyExec: a shared table needs one order");
                };
                let [key] = self.keys.as_slice() else {
                    return internal_err!("BestRowPerKeyExec: a shared table needs one key");
                };
                let plan = shared::Plan {
                    input: &self.input,
                    key,
                    order: by,
                    options: *options,
                    fallback,
                    metrics: &self.metrics,
                    schema: self.schema.clone(),
                };
                return self.runs.execute(plan, partition, context);
            }
            Some(by_key) => by_key.execute(partition, context.clone())?,
            None => self.input.execute(partition, context.clone())?,
        };
        let reservation = MemoryConsumer::new(format!("BestRowPerKeyExec[{partition}]"))
            .register(context.memory_pool());
        let best = Best {
            table: Table::new(&self.keys, &self.order(), &input_schema)?,
            batches: Vec::new(),
            buffered_rows: 0,
            reservation,
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let schema = self.schema.clone();
        let batch_size = context.session_config().batch_size();
        let start = run(
            best,
            input,
            fallback,
            schema.clone(),
            batch_size,
            sort_up_front,
        );
        let out = futures::stream::once(start)
            .map(|stream| match stream {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            })
            .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
    }
}

type BatchStream = futures::stream::BoxStream<'static, Result<RecordBatch>>;

/// Read the whole input into the table, then stream the winners; or, when the memory pool
/// refuses, hand what is left to the sorted fallback.
async fn run(
    mut best: Best,
    mut input: SendableRecordBatchStream,
    fallback: Fallback,
    schema: SchemaRef,
    batch_size: usize,
    sort_up_front: bool,
) -> Result<BatchStream> {
    if sort_up_front {
        fallback.up_front.add(1);
        let (nothing, held) = best.into_winner_batches()?;
        return fallback.sorted(nothing, held, input, schema);
    }
    while let Some(batch) = input.next().await {
        match best.push(batch?, batch_size) {
            Ok(()) => {}
            Err(e) if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) => {
                fallback.fallbacks.add(1);
                let (winners, held) = best.into_winner_batches()?;
                return fallback.sorted(winners, held, input, schema);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(best.into_output(schema).boxed())
}

struct Best {
    baseline: BaselineMetrics,
    table: Table,
    /// Every input batch that may hold a winner; None once emitted.
    batches: Vec<RecordBatch>,
    buffered_rows: usize,
    reservation: MemoryReservation,
}

impl Best {
    fn push(&mut self, batch: RecordBatch, batch_size: usize) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let elapsed = self.baseline.elapsed_compute().clone();
        let _timer = elapsed.timer();
        self.table.push(&batch, self.batches.len())?;
        self.batches.push(batch);
        self.buffered_rows += n;
        if self.buffered_rows > 2 * self.table.len() + (1 << 20) {
            self.compact(batch_size)?;
        }
        self.reserve()
    }

    /// Copy the winners into new batches (in chunks of `batch_size`) and drop the rest.
    fn compact(&mut self, batch_size: usize) -> Result<()> {
        let chunk = batch_size.max(1);
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let mut positions = Vec::with_capacity(self.table.len());
        self.table.for_each_position(|p| positions.push(*p));
        let mut compacted = Vec::with_capacity(positions.len().div_ceil(chunk));
        for part in positions.chunks(chunk) {
            compacted.push(interleave_record_batch(&refs, part)?);
        }
        drop(refs);
        let mut k = 0usize;
        self.table.for_each_position(|p| {
            *p = (k / chunk, k % chunk);
            k += 1;
        });
        self.buffered_rows = positions.len();
        self.batches = compacted;
        Ok(())
    }

    fn reserve(&mut self) -> Result<()> {
        let batches: usize = self
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        self.reservation
            .try_resize(batches + self.table.memory_size())
    }

    /// Per buffered batch, which of its rows win; frees the table.
    fn masks(&mut self) -> Vec<BooleanBuffer> {
        let mut masks: Vec<Vec<bool>> = self
            .batches
            .iter()
            .map(|b| vec![false; b.num_rows()])
            .collect();
        self.table
            .for_each_position(|&mut (batch, row)| masks[batch][row] = true);
        self.table = Table::Empty;
        masks.into_iter().map(BooleanBuffer::from).collect()
    }

    /// The winners so far, batch by batch in input order (for the fallback), and the
    /// reservation that still counts them: they stay in memory until the sort takes them,
    /// and freeing them from the pool early let the other partitions grow into memory that
    /// was still in use (100M rows under a 3,200 MB limit peaked at 4,556 MB).
    fn into_winner_batches(mut self) -> Result<(Vec<RecordBatch>, MemoryReservation)> {
        let masks = self.masks();
        let mut out = Vec::with_capacity(masks.len());
        for (batch, mask) in std::mem::take(&mut self.batches).into_iter().zip(masks) {
            let kept = filter_record_batch(&batch, &BooleanArray::new(mask, None))?;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
        }
        let held: usize = out.iter().map(RecordBatch::get_array_memory_size).sum();
        self.reservation
            .shrink(self.reservation.size().saturating_sub(held));
        Ok((out, self.reservation))
    }

    /// The winners in input order with `rn` = 1 appended, each batch freed once emitted.
    fn into_output(mut self, schema: SchemaRef) -> impl Stream<Item = Result<RecordBatch>> {
        let masks = self.masks();
        // Smaller than before (the table is gone), so the pool cannot refuse it.
        let _ = self.reserve();
        let batches = std::mem::take(&mut self.batches);
        let reservation = self.reservation;
        let baseline = self.baseline;
        let pending: Vec<(RecordBatch, BooleanBuffer)> = batches.into_iter().zip(masks).collect();
        futures::stream::iter(pending.into_iter().filter_map(move |(batch, mask)| {
            let freed = batch.get_array_memory_size();
            let timer = baseline.elapsed_compute().timer();
            let out = filter_record_batch(&batch, &BooleanArray::new(mask, None))
                .and_then(|kept| super::key_runs::with_row_number_one(&kept, &schema))
                .map_err(DataFusionError::from);
            drop(batch);
            timer.done();
            reservation.shrink(freed.min(reservation.size()));
            let out = out.map(|b| b.record_output(&baseline));
            match out {
                Ok(b) if b.num_rows() == 0 => None,
                other => Some(other),
            }
        }))
    }
}

/// What DataFusion planned, for when the table does not fit: sort (spilling) by the keys
/// and the ORDER BY, then keep the first row of each key run.
struct Fallback {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    ordering: LexOrdering,
    input_schema: SchemaRef,
    context: Arc<TaskContext>,
    /// The table was given up because the pool refused it.
    fallbacks: Count,
    /// The input was too large for the table from the start.
    up_front: Count,
    spill_count: Count,
    spilled_bytes: Count,
}

impl Fallback {
    fn sorted(
        self,
        winners: Vec<RecordBatch>,
        held: MemoryReservation,
        rest: SendableRecordBatchStream,
        schema: SchemaRef,
    ) -> Result<BatchStream> {
        // Each winner batch leaves `held` as the sort takes it (and reserves it itself).
        let replay = futures::stream::iter(winners.into_iter().map(move |batch| {
            held.shrink(batch.get_array_memory_size().min(held.size()));
            Ok(batch)
        }))
        .chain(rest);
        let source: Arc<dyn PartitionStream> = Arc::new(OneShot::new(Box::pin(
            RecordBatchStreamAdapter::new(self.input_schema.clone(), replay),
        )));
        let scan = StreamingTableExec::try_new(
            self.input_schema.clone(),
            vec![source],
            None,
            [],
            false,
            None,
        )?;
        let sort = Arc::new(SortExec::new(self.ordering, Arc::new(scan)));
        let sorted = sort.execute(0, self.context)?;
        let keys = self.keys;
        let mut previous = None;
        let first = sorted.filter_map(move |batch| {
            let out =
                batch.and_then(|b| super::key_runs::first_rows(&b, &keys, &mut previous, &schema));
            std::future::ready(out.transpose())
        });
        // The sort runs inside this operator: its spills are reported as this one's.
        let (spill_count, spilled_bytes) = (self.spill_count, self.spilled_bytes);
        let report = futures::stream::once(async move {
            if let Some(m) = sort.metrics() {
                spill_count.add(m.spill_count().unwrap_or(0));
                spilled_bytes.add(m.spilled_bytes().unwrap_or(0));
            }
            None
        })
        .filter_map(std::future::ready);
        Ok(first.chain(report).boxed())
    }
}
