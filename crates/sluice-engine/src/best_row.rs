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
//! run is kept (the losers so far cannot win any more, so they are dropped first).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, PrimitiveArray, RecordBatch, UInt64Array,
};
use datafusion::arrow::buffer::BooleanBuffer;
use datafusion::arrow::compute::{cast, filter_record_batch, interleave_record_batch, SortOptions};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, DataFusionError, Result, Statistics};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, RecordOutput,
};
use datafusion::physical_plan::sorts::sort::SortExec;
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{Stream, StreamExt};

use super::one_shot::OneShot;
use hashbrown::hash_table::{Entry, HashTable};

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
}

impl BestRowPerKeyExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        ordering: LexOrdering,
        schema: SchemaRef,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            input.output_partitioning().clone(),
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
        }
    }

    /// The ORDER BY part of the ordering: what follows the partition keys.
    fn order(&self) -> Vec<(Arc<dyn PhysicalExpr>, SortOptions)> {
        self.ordering
            .iter()
            .filter(|o| !self.keys.iter().any(|k| k.as_ref() == o.expr.as_ref()))
            .map(|o| (o.expr.clone(), o.options))
            .collect()
    }
}

impl DisplayAs for BestRowPerKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        let order: Vec<String> = self
            .ordering
            .iter()
            .filter(|o| !self.keys.iter().any(|k| k.as_ref() == o.expr.as_ref()))
            .map(|o| o.to_string())
            .collect();
        write!(
            f,
            "BestRowPerKeyExec: keys=[{}], order=[{}]",
            keys.join(", "),
            order.join(", ")
        )
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
        at_most_input(input_stats, &self.schema)
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
        Ok(Arc::new(BestRowPerKeyExec::new(
            input,
            self.keys.clone(),
            self.ordering.clone(),
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let input_schema = self.input.schema();
        let table = Table::new(&self.keys, &self.order(), &input_schema)?;
        let reservation = MemoryConsumer::new(format!("BestRowPerKeyExec[{partition}]"))
            .register(context.memory_pool());
        let best = Best {
            table,
            batches: Vec::new(),
            buffered_rows: 0,
            reservation,
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let fallback = Fallback {
            keys: self.keys.clone(),
            ordering: self.ordering.clone(),
            input_schema,
            context: context.clone(),
            fallbacks: MetricBuilder::new(&self.metrics).counter("fallback_sorts", partition),
            spill_count: MetricBuilder::new(&self.metrics).spill_count(partition),
            spilled_bytes: MetricBuilder::new(&self.metrics).spilled_bytes(partition),
        };
        let schema = self.schema.clone();
        let batch_size = context.session_config().batch_size();
        let out = futures::stream::once(run(best, input, fallback, schema.clone(), batch_size))
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
) -> Result<BatchStream> {
    while let Some(batch) = input.next().await {
        match best.push(batch?, batch_size) {
            Ok(()) => {}
            Err(e) if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) => {
                let winners = best.into_winner_batches()?;
                return fallback.sorted(winners, input, schema);
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

    /// The winners so far, batch by batch in input order (for the fallback).
    fn into_winner_batches(mut self) -> Result<Vec<RecordBatch>> {
        let masks = self.masks();
        let mut out = Vec::with_capacity(masks.len());
        for (batch, mask) in std::mem::take(&mut self.batches).into_iter().zip(masks) {
            let kept = filter_record_batch(&batch, &BooleanArray::new(mask, None))?;
            if kept.num_rows() > 0 {
                out.push(kept);
            }
        }
        self.reservation.free();
        Ok(out)
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
                .and_then(|kept| {
                    let rows = kept.num_rows();
                    let mut columns = kept.columns().to_vec();
                    columns.push(Arc::new(UInt64Array::from_value(1, rows)) as ArrayRef);
                    RecordBatch::try_new(schema.clone(), columns)
                })
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

/// Where each key's current winner is, by one of two representations.
enum Table {
    Ints(IntTable),
    Rows(RowTable),
    /// After the winners were read out.
    Empty,
}

impl Table {
    fn new(
        keys: &[Arc<dyn PhysicalExpr>],
        order: &[(Arc<dyn PhysicalExpr>, SortOptions)],
        schema: &SchemaRef,
    ) -> Result<Table> {
        if let ([key], [(by, options)]) = (keys, order) {
            if as_int(&key.data_type(schema)?) && as_int(&by.data_type(schema)?) {
                return Ok(Table::Ints(IntTable {
                    key: key.clone(),
                    order: by.clone(),
                    options: *options,
                    table: HashTable::new(),
                    null_key: None,
                    hasher: hashbrown::DefaultHashBuilder::default(),
                }));
            }
        }
        let key_fields = keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(schema)?)))
            .collect::<Result<Vec<_>>>()?;
        let order_fields = order
            .iter()
            .map(|(e, options)| Ok(SortField::new_with_options(e.data_type(schema)?, *options)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Table::Rows(RowTable {
            keys: keys.to_vec(),
            order: order.iter().map(|(e, _)| e.clone()).collect(),
            key_rows: RowConverter::new(key_fields)?,
            order_rows: RowConverter::new(order_fields)?,
            table: HashTable::new(),
            entries: Vec::new(),
            arena: Vec::new(),
            hasher: hashbrown::DefaultHashBuilder::default(),
        }))
    }

    fn push(&mut self, batch: &RecordBatch, batch_index: usize) -> Result<()> {
        match self {
            Table::Ints(t) => t.push(batch, batch_index),
            Table::Rows(t) => t.push(batch, batch_index),
            Table::Empty => internal_err!("BestRowPerKeyExec: rows after the output began"),
        }
    }

    /// The number of keys (each has one winner).
    fn len(&self) -> usize {
        match self {
            Table::Ints(t) => t.table.len() + usize::from(t.null_key.is_some()),
            Table::Rows(t) => t.entries.len(),
            Table::Empty => 0,
        }
    }

    fn memory_size(&self) -> usize {
        match self {
            Table::Ints(t) => t.table.capacity() * std::mem::size_of::<IntWinner>(),
            Table::Rows(t) => {
                t.arena.capacity()
                    + t.entries.capacity() * std::mem::size_of::<RowWinner>()
                    + t.table.capacity() * std::mem::size_of::<usize>()
            }
            Table::Empty => 0,
        }
    }

    /// Visit each winner's (batch, row), which the visitor may move.
    fn for_each_position(&mut self, mut f: impl FnMut(&mut (usize, usize))) {
        match self {
            Table::Ints(t) => {
                let mut visit = |packed: &mut u64| {
                    let mut p = unpack(*packed);
                    f(&mut p);
                    *packed = (*packed & RANK_MASK) | pack(p);
                };
                t.table.iter_mut().for_each(|w| visit(&mut w.position));
                if let Some(w) = t.null_key.as_mut() {
                    visit(&mut w.position);
                }
            }
            Table::Rows(t) => t.entries.iter_mut().for_each(|w| f(&mut w.position)),
            Table::Empty => {}
        }
    }
}

/// Integer-like types whose values cast to Int64 without loss, order kept.
fn as_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::Date32
            | DataType::Date64
            | DataType::Timestamp(_, _)
    )
}

fn int64s(e: &Arc<dyn PhysicalExpr>, batch: &RecordBatch) -> Result<PrimitiveArray<Int64Type>> {
    let values = e.evaluate(batch)?.into_array(batch.num_rows())?;
    let values = match values.data_type() {
        DataType::Int64 => values,
        DataType::Date32 => cast(&cast(&values, &DataType::Int32)?, &DataType::Int64)?,
        _ => cast(&values, &DataType::Int64)?,
    };
    Ok(values.as_primitive::<Int64Type>().clone())
}

/// A winner's place, (batch << 32 | row), with the ORDER BY value's NULL rank in the top
/// two bits so that (rank, value) compares as the sort would.
const RANK_SHIFT: u32 = 62;
const RANK_MASK: u64 = 0b11 << RANK_SHIFT;

fn pack((batch, row): (usize, usize)) -> u64 {
    ((batch as u64) << 32) | row as u64
}

fn unpack(packed: u64) -> (usize, usize) {
    (
        ((packed & !RANK_MASK) >> 32) as usize,
        (packed & 0xffff_ffff) as usize,
    )
}

#[derive(Clone, Copy)]
struct IntWinner {
    key: i64,
    /// The ORDER BY value mapped so that unsigned order is the sort's order.
    order: u64,
    position: u64,
}

impl IntWinner {
    fn beaten_by(&self, order: u64, rank: u64) -> bool {
        (rank, order) < (self.position >> RANK_SHIFT, self.order)
    }
}

/// One integer key, one integer ORDER BY value: 24 bytes per key.
struct IntTable {
    key: Arc<dyn PhysicalExpr>,
    order: Arc<dyn PhysicalExpr>,
    options: SortOptions,
    table: HashTable<IntWinner>,
    /// NULL keys are one window partition of their own.
    null_key: Option<IntWinner>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl IntTable {
    fn push(&mut self, batch: &RecordBatch, batch_index: usize) -> Result<()> {
        if batch_index as u64 >= 1 << (RANK_SHIFT - 32) || batch.num_rows() as u64 > u32::MAX as u64
        {
            return internal_err!("BestRowPerKeyExec: more batches than it can number");
        }
        let keys = int64s(&self.key, batch)?;
        let order = int64s(&self.order, batch)?;
        let (descending, nulls_first) = (self.options.descending, self.options.nulls_first);
        let (null_rank, value_rank) = if nulls_first { (0u64, 1u64) } else { (2, 1) };
        for row in 0..batch.num_rows() {
            let (value, rank) = if order.is_null(row) {
                (0, null_rank)
            } else {
                let v = (order.value(row) as u64) ^ (1 << 63);
                (if descending { !v } else { v }, value_rank)
            };
            let position = (rank << RANK_SHIFT) | pack((batch_index, row));
            let candidate = IntWinner {
                key: 0,
                order: value,
                position,
            };
            if keys.is_null(row) {
                if self
                    .null_key
                    .as_ref()
                    .is_none_or(|w| w.beaten_by(value, rank))
                {
                    self.null_key = Some(candidate);
                }
                continue;
            }
            let key = keys.value(row);
            let hash = std::hash::BuildHasher::hash_one(&self.hasher, key);
            let hasher = &self.hasher;
            match self.table.entry(
                hash,
                |w| w.key == key,
                |w| std::hash::BuildHasher::hash_one(hasher, w.key),
            ) {
                // Strictly better: among ties the first row in input order stays.
                Entry::Occupied(mut slot) => {
                    let w = slot.get_mut();
                    if w.beaten_by(value, rank) {
                        w.order = value;
                        w.position = position;
                    }
                }
                Entry::Vacant(slot) => {
                    slot.insert(IntWinner { key, ..candidate });
                }
            }
        }
        Ok(())
    }
}

/// The current winner of one key: where its key and ORDER BY bytes are in the arena, and
/// where its row is among the buffered batches.
#[derive(Clone, Copy)]
struct RowWinner {
    key: (usize, usize),
    order: (usize, usize),
    position: (usize, usize),
}

/// Any keys and orders, compared in arrow's row format.
struct RowTable {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<Arc<dyn PhysicalExpr>>,
    key_rows: RowConverter,
    order_rows: RowConverter,
    /// Indexes into `entries`, hashed by key bytes.
    table: HashTable<usize>,
    entries: Vec<RowWinner>,
    arena: Vec<u8>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl RowTable {
    fn push(&mut self, batch: &RecordBatch, batch_index: usize) -> Result<()> {
        let n = batch.num_rows();
        let evaluate = |exprs: &[Arc<dyn PhysicalExpr>]| {
            exprs
                .iter()
                .map(|e| e.evaluate(batch)?.into_array(n))
                .collect::<Result<Vec<_>>>()
        };
        let keys = self.key_rows.convert_columns(&evaluate(&self.keys)?)?;
        // Without an ORDER BY every row of a key ties: the first in input order stays.
        let order = match self.order.is_empty() {
            true => None,
            false => Some(self.order_rows.convert_columns(&evaluate(&self.order)?)?),
        };
        for row in 0..n {
            let key = keys.row(row);
            let key = key.as_ref();
            let value = order.as_ref().map(|o| o.row(row));
            let value: &[u8] = value.as_ref().map_or(<&[u8]>::default(), |v| v.as_ref());
            let hash = std::hash::BuildHasher::hash_one(&self.hasher, key);
            let (arena, entries, hasher) = (&mut self.arena, &mut self.entries, &self.hasher);
            let found = self.table.entry(
                hash,
                |&e| &arena[entries[e].key.0..entries[e].key.1] == key,
                |&e| {
                    std::hash::BuildHasher::hash_one(
                        hasher,
                        &arena[entries[e].key.0..entries[e].key.1],
                    )
                },
            );
            match found {
                Entry::Occupied(slot) => {
                    let winner = &mut entries[*slot.get()];
                    // Strictly less: among ties the first row in input order stays.
                    if value < &arena[winner.order.0..winner.order.1] {
                        let len = winner.order.1 - winner.order.0;
                        if value.len() <= len {
                            arena[winner.order.0..winner.order.0 + value.len()]
                                .copy_from_slice(value);
                            winner.order.1 = winner.order.0 + value.len();
                        } else {
                            let start = arena.len();
                            arena.extend_from_slice(value);
                            winner.order = (start, arena.len());
                        }
                        winner.position = (batch_index, row);
                    }
                }
                Entry::Vacant(slot) => {
                    let key_start = arena.len();
                    arena.extend_from_slice(key);
                    let order_start = arena.len();
                    arena.extend_from_slice(value);
                    entries.push(RowWinner {
                        key: (key_start, order_start),
                        order: (order_start, arena.len()),
                        position: (batch_index, row),
                    });
                    slot.insert(entries.len() - 1);
                }
            }
        }
        Ok(())
    }
}

/// What DataFusion planned, for when the table does not fit: sort (spilling) by the keys
/// and the ORDER BY, then keep the first row of each key run.
struct Fallback {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    ordering: LexOrdering,
    input_schema: SchemaRef,
    context: Arc<TaskContext>,
    fallbacks: Count,
    spill_count: Count,
    spilled_bytes: Count,
}

impl Fallback {
    fn sorted(
        self,
        winners: Vec<RecordBatch>,
        rest: SendableRecordBatchStream,
        schema: SchemaRef,
    ) -> Result<BatchStream> {
        let replay = futures::stream::iter(winners.into_iter().map(Ok)).chain(rest);
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
        self.fallbacks.add(1);
        let sort = Arc::new(SortExec::new(self.ordering, Arc::new(scan)));
        let sorted = sort.execute(0, self.context)?;
        let keys = self.keys;
        let mut previous = None;
        let first = sorted.filter_map(move |batch| {
            let out =
                batch.and_then(|b| super::first_row::first_rows(&b, &keys, &mut previous, &schema));
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

/// A dedup keeps at most its input's rows: the input's row count and size as upper bounds,
/// so that join selection can still tell a deduplicated fact table from a small dimension.
pub(crate) fn at_most_input(
    input: &[Arc<Statistics>],
    schema: &SchemaRef,
) -> Result<Arc<Statistics>> {
    let mut stats = Statistics::new_unknown(schema);
    if let Some(input) = input.first() {
        stats.num_rows = input.num_rows.to_inexact();
        stats.total_byte_size = input.total_byte_size.to_inexact();
    }
    Ok(Arc::new(stats))
}
