//! The dedup over input that is not split by key: one table of winners, in shards under
//! their own locks, filled by every input partition at once.
//!
//! Split by key first, every row was hashed, copied into the batch of its partition and
//! sent through a channel before the dedup saw it (RepartitionExec: 6% of the CPU of
//! benches/pipeline on one Parquet file, and a second copy of the input in memory while
//! it is read). Here each input partition is read by a task of its own, which hashes a
//! batch's keys once, groups its rows by shard and offers them to each shard's table in
//! turn (a shard busy with another task is visited last). The batches stay as the scan
//! made them. When every input is read, the output partitions mark the winners of the
//! shards in their batches' bits, and output partition `p` emits the winners of every
//! `partitions`-th batch from the `p`-th on, filtered out of the batch (nine rows in ten
//! win on benches/pipeline, so the filter copies runs of rows); a batch is freed once
//! emitted. Which partition emits a row thus follows the input's batches: two runs whose
//! input partitions bring the same batches (a file scan's byte ranges do) split the rows
//! alike, so a consumer that asks for a partition again and takes the next one from the
//! second run still sees every key once. Keyed by shard instead, every row was gathered
//! one at a time (arrow's interleave), 4% of the CPU of benches/pipeline.
//!
//! Ties on the ORDER BY go to the row of the lowest input partition, and within it to the
//! earlier row: a place numbers the input partition, its batch and the row, in that order,
//! so the winner does not depend on which task came first. Which byte range or file a
//! partition reads is DataFusion's choice (it varies between runs), so among the rows of a
//! tie any may win, as with DataFusion's own sort.
//!
//! When the memory pool refuses, the tables stop: the winners so far and the rest of every
//! input go through one sort (which spills) in output partition 0, as
//! [`Fallback`](super::Fallback) does for one partition.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::buffer::{BooleanBuffer, Buffer};
use datafusion::arrow::compute::{filter_record_batch, SortOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{internal_datafusion_err, DataFusionError, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, RecordOutput};
use datafusion::physical_plan::statistics::{StatisticsArgs, StatisticsContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, ExecutionPlanProperties};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};

use super::table::{int64s, offer_null, IntWinner, OrderRanks};
use super::winners::WinnerTable;
use super::{BatchStream, Fallback};

/// Shards of the table: enough that two tasks seldom want the same one at once.
const SHARDS: usize = 64;
/// Bits of a place's batch number that count the batches of one input partition; the
/// input partition is above them (8 bits, see [`MAX_INPUTS`]).
const LOCAL_BATCH_BITS: u32 = 22;
/// Input partitions a place can number.
pub(super) const MAX_INPUTS: usize = 1 << (30 - LOCAL_BATCH_BITS);

/// One execution of the operator, shared by its output partitions; the input tasks stop
/// when the last output partition is dropped.
pub(super) struct SharedRun {
    inner: Arc<Inner>,
    _tasks: Vec<SpawnedTask<()>>,
    /// The output partitions not handed out yet.
    unclaimed: Mutex<Vec<bool>>,
}

/// Which run each output partition of the operator reads: a partition asked for again
/// starts a new run. The run is held here until every output partition is handed out, so
/// that a consumer asking for partition 1 after it dropped partition 0 does not read the
/// input a second time.
#[derive(Default)]
pub(super) struct Runs {
    current: Mutex<Option<Arc<SharedRun>>>,
}

impl std::fmt::Debug for Runs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Runs")
    }
}

/// What the operator tells a run.
pub(super) struct Plan<'a> {
    pub input: &'a Arc<dyn ExecutionPlan>,
    pub key: &'a Arc<dyn PhysicalExpr>,
    pub order: &'a Arc<dyn PhysicalExpr>,
    pub options: SortOptions,
    pub fallback: Fallback,
    pub metrics: &'a ExecutionPlanMetricsSet,
    pub schema: SchemaRef,
}

impl Runs {
    pub(super) fn execute(
        &self,
        plan: Plan<'_>,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let run = {
            let mut current = self
                .current
                .lock()
                .map_err(|_| internal_datafusion_err!("BestRowPerKeyExec: a run panicked"))?;
            let live = current
                .take()
                .filter(|run| run.claim(partition).unwrap_or(false));
            let run = match live {
                Some(run) => run,
                None => {
                    let run = Arc::new(SharedRun::start(&plan, context.clone())?);
                    run.claim(partition)?;
                    run
                }
            };
            if !run.all_claimed() {
                *current = Some(run.clone());
            }
            run
        };
        let schema = plan.schema.clone();
        let fallback = plan.fallback;
        let out = futures::stream::once(async move {
            match run.output(partition, fallback).await {
                Ok(stream) => stream,
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, out)))
    }
}

#[derive(Clone)]
enum Status {
    Reading,
    Done,
    /// The pool refused: output partition 0 sorts everything.
    Sorting,
    Failed(Arc<DataFusionError>),
}

struct Shard {
    table: WinnerTable,
    null_key: Option<IntWinner>,
}

struct Inner {
    shards: Vec<Mutex<Shard>>,
    key: Arc<dyn PhysicalExpr>,
    order: Arc<dyn PhysicalExpr>,
    ranks: OrderRanks,
    /// Per input partition, its batches in order.
    batches: Vec<Mutex<Vec<RecordBatch>>>,
    /// Taken by the writer to go over to the sort.
    sorting: RwLock<bool>,
    reservation: Mutex<MemoryReservation>,
    status: watch::Sender<Status>,
    inputs_left: AtomicUsize,
    /// The rest of the input once sorting, for output partition 0.
    rest: Mutex<Option<mpsc::UnboundedReceiver<Result<RecordBatch>>>>,
    /// The batches of all inputs in order, once read.
    kept: std::sync::OnceLock<Kept>,
    /// The next shard to mark winners from, and how many are marked: the output partitions
    /// share the marking (see [`Inner::marks`]).
    next_shard: AtomicUsize,
    shards_marked: AtomicUsize,
    outputs: usize,
    baselines: Vec<BaselineMetrics>,
    input_schema: SchemaRef,
    out_schema: SchemaRef,
}

struct Kept {
    slots: Vec<Slot>,
    /// Where each input partition's batches start among the slots.
    first_slot: Vec<usize>,
}

/// A kept batch, taken by the output partition that emits its winners, and which of its
/// rows won: one bit a row, set by whichever output partition marks the row's shard.
struct Slot {
    batch: Mutex<Option<RecordBatch>>,
    won: Vec<AtomicU64>,
}

impl SharedRun {
    fn start(plan: &Plan<'_>, context: Arc<TaskContext>) -> Result<SharedRun> {
        let inputs = plan.input.output_partitioning().partition_count();
        if inputs > MAX_INPUTS {
            return Err(internal_datafusion_err!(
                "BestRowPerKeyExec: {inputs} input partitions, at most {MAX_INPUTS}"
            ));
        }
        let outputs = inputs.max(1);
        let reservation = MemoryConsumer::new("BestRowPerKeyExec").register(context.memory_pool());
        let (status, _) = watch::channel(Status::Reading);
        let (to_sort, rest) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        table: WinnerTable::new(key_hash),
                        null_key: None,
                    })
                })
                .collect(),
            key: plan.key.clone(),
            order: plan.order.clone(),
            ranks: OrderRanks::new(plan.options),
            batches: (0..inputs).map(|_| Mutex::new(Vec::new())).collect(),
            sorting: RwLock::new(false),
            reservation: Mutex::new(reservation),
            status,
            inputs_left: AtomicUsize::new(inputs),
            rest: Mutex::new(Some(rest)),
            kept: std::sync::OnceLock::new(),
            next_shard: AtomicUsize::new(0),
            shards_marked: AtomicUsize::new(0),
            outputs,
            baselines: (0..outputs)
                .map(|p| BaselineMetrics::new(plan.metrics, p))
                .collect(),
            input_schema: plan.input.schema(),
            out_schema: plan.schema.clone(),
        });
        if inputs == 0 {
            inner.status.send_replace(Status::Done);
        }
        inner.presize(plan.input)?;
        let mut tasks = Vec::with_capacity(inputs);
        for p in 0..inputs {
            let stream = plan.input.execute(p, context.clone())?;
            let feed = Feed {
                inner: inner.clone(),
                input: p,
                to_sort: to_sort.clone(),
                finished: false,
            };
            tasks.push(SpawnedTask::spawn(feed.run(stream)));
        }
        Ok(SharedRun {
            inner,
            _tasks: tasks,
            unclaimed: Mutex::new(vec![true; outputs]),
        })
    }

    fn all_claimed(&self) -> bool {
        self.unclaimed
            .lock()
            .map(|unclaimed| unclaimed.iter().all(|free| !free))
            .unwrap_or(true)
    }

    /// Hand out output partition `p`; false when it was handed out already.
    fn claim(&self, p: usize) -> Result<bool> {
        let mut unclaimed = self
            .unclaimed
            .lock()
            .map_err(|_| internal_datafusion_err!("BestRowPerKeyExec: a run panicked"))?;
        match unclaimed.get_mut(p) {
            Some(free) => Ok(std::mem::replace(free, false)),
            None => Err(internal_datafusion_err!(
                "BestRowPerKeyExec: no output partition {p}"
            )),
        }
    }

    async fn output(self: Arc<Self>, p: usize, fallback: Fallback) -> Result<BatchStream> {
        let mut status = self.inner.status.subscribe();
        let settled = status
            .wait_for(|s| !matches!(s, Status::Reading))
            .await
            .map_err(|_| internal_datafusion_err!("BestRowPerKeyExec: the run ended"))?
            .clone();
        match settled {
            Status::Reading => Err(internal_datafusion_err!("BestRowPerKeyExec: still reading")),
            Status::Failed(e) => Err(DataFusionError::Shared(e)),
            Status::Sorting if p == 0 => {
                // The input tasks feed the sort: the run (which owns them, and aborts them
                // when dropped) must last as long as the sort reads. Without this, the rest
                // of the input was lost whenever the tasks had not finished reading when the
                // last output partition started (wrong rows under a small memory limit).
                let sorted = self.inner.sort_everything(fallback)?;
                let run = self;
                Ok(sorted
                    .map(move |batch| {
                        let _owner = &run;
                        batch
                    })
                    .boxed())
            }
            Status::Sorting => Ok(futures::stream::empty().boxed()),
            Status::Done => {
                self.inner.marks()?;
                let emit = Emit {
                    run: self,
                    partition: p,
                    slot: p,
                };
                Ok(futures::stream::iter(emit).boxed())
            }
        }
    }
}

/// The task that reads one input partition into the table.
struct Feed {
    inner: Arc<Inner>,
    input: usize,
    to_sort: mpsc::UnboundedSender<Result<RecordBatch>>,
    finished: bool,
}

impl Feed {
    async fn run(mut self, mut stream: SendableRecordBatchStream) {
        let mut grouped = Grouped::default();
        let mut local = 0usize;
        while let Some(batch) = stream.next().await {
            let result = batch.and_then(|batch| {
                if batch.num_rows() == 0 {
                    return Ok(());
                }
                let elapsed = self.inner.baselines[self.input].elapsed_compute().clone();
                let _timer = elapsed.timer();
                match self
                    .inner
                    .offer(self.input, local, shrunk(batch)?, &mut grouped)?
                {
                    None => local += 1,
                    // Sorting: the batch goes to the sort (which may have ended on an error).
                    Some(batch) => {
                        let _ = self.to_sort.send(Ok(batch));
                    }
                }
                Ok(())
            });
            if let Err(e) = result {
                let e = Arc::new(e);
                let _ = self.to_sort.send(Err(DataFusionError::Shared(e.clone())));
                self.inner.fail(e);
                self.finished = true;
                return;
            }
        }
        self.finished = true;
        self.inner.input_read();
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        // A task that ended without finishing (it panicked) must not leave outputs waiting.
        if !self.finished {
            self.inner.fail(Arc::new(internal_datafusion_err!(
                "BestRowPerKeyExec: reading input partition {} stopped",
                self.input
            )));
        }
    }
}

/// A batch's rows grouped by shard; kept between batches for its allocations.
#[derive(Default)]
struct Grouped {
    rows: Vec<Vec<(u64, IntWinner)>>,
    nulls: Vec<IntWinner>,
}

impl Inner {
    /// Offer a batch's rows to the table; the batch comes back when the table stopped.
    fn offer(
        &self,
        input: usize,
        local: usize,
        batch: RecordBatch,
        grouped: &mut Grouped,
    ) -> Result<Option<RecordBatch>> {
        if local >= 1 << LOCAL_BATCH_BITS || batch.num_rows() as u64 > u32::MAX as u64 {
            return Err(internal_datafusion_err!(
                "BestRowPerKeyExec: more batches than it can number"
            ));
        }
        let sorting = self.sorting.read().map_err(poisoned)?;
        if *sorting {
            return Ok(Some(batch));
        }
        let keys = int64s(&self.key, &batch)?;
        let order = int64s(&self.order, &batch)?;
        let batch_number = ((input as u64) << LOCAL_BATCH_BITS) | local as u64;
        grouped.rows.resize_with(SHARDS, Vec::new);
        for row in 0..batch.num_rows() {
            let candidate = self
                .ranks
                .candidate(&order, row, (batch_number << 32) | row as u64);
            if keys.is_null(row) {
                grouped.nulls.push(candidate);
                continue;
            }
            let hash = key_hash(keys.value(row));
            let candidate = super::table::with_key(candidate, keys.value(row));
            grouped.rows[shard_of(hash)].push((hash, candidate));
        }
        // Shards another task holds are visited after the others.
        let mut grown = 0usize;
        let mut busy = Vec::new();
        for s in 0..SHARDS {
            if grouped.rows[s].is_empty() && (s != 0 || grouped.nulls.is_empty()) {
                continue;
            }
            match self.shards[s].try_lock() {
                Ok(mut shard) => grown += self.fill(s, &mut shard, grouped),
                Err(std::sync::TryLockError::WouldBlock) => busy.push(s),
                Err(std::sync::TryLockError::Poisoned(_)) => {
                    return Err(internal_datafusion_err!(
                        "BestRowPerKeyExec: a task panicked"
                    ))
                }
            }
        }
        for s in busy {
            let mut shard = self.shards[s].lock().map_err(poisoned)?;
            grown += self.fill(s, &mut shard, grouped);
        }
        let bytes = batch.get_array_memory_size() + grown;
        self.batches[input].lock().map_err(poisoned)?.push(batch);
        let refused = self.reservation.lock().map_err(poisoned)?.try_grow(bytes);
        drop(sorting);
        match refused {
            Ok(()) => Ok(None),
            Err(e) if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) => {
                self.start_sorting()?;
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Size the shards for the rows the input's statistics promise (Parquet's row counts),
    /// so that they do not grow (and rehash) as they fill; when the pool allows it.
    fn presize(&self, input: &Arc<dyn ExecutionPlan>) -> Result<()> {
        let stats = StatisticsContext::new().compute(input.as_ref(), &StatisticsArgs::new())?;
        let Some(&rows) = stats.num_rows.get_value() else {
            return Ok(());
        };
        let per_shard = rows / SHARDS;
        let mut bytes = 0usize;
        let mut shards = Vec::with_capacity(SHARDS);
        for shard in &self.shards {
            let mut shard = shard.lock().map_err(poisoned)?;
            shard.table.reserve(per_shard);
            bytes += shard.table.bytes();
            shards.push(shard);
        }
        let reservation = self.reservation.lock().map_err(poisoned)?;
        if reservation.try_grow(bytes).is_err() {
            for mut shard in shards {
                shard.table = WinnerTable::new(key_hash);
            }
        }
        Ok(())
    }

    /// Offer shard `s`'s rows of a batch; the bytes the table grew by.
    fn fill(&self, s: usize, shard: &mut Shard, grouped: &mut Grouped) -> usize {
        let before = shard.table.bytes();
        shard.table.offer_all(&grouped.rows[s]);
        grouped.rows[s].clear();
        if s == 0 {
            for candidate in grouped.nulls.drain(..) {
                offer_null(&mut shard.null_key, candidate);
            }
        }
        shard.table.bytes().saturating_sub(before)
    }

    /// Stop the table: every input task sends what it reads next to the sort.
    fn start_sorting(&self) -> Result<()> {
        let mut sorting = self.sorting.write().map_err(poisoned)?;
        *sorting = true;
        drop(sorting);
        self.status.send_if_modified(|s: &mut Status| match s {
            Status::Reading => {
                *s = Status::Sorting;
                true
            }
            _ => false,
        });
        Ok(())
    }

    fn input_read(&self) {
        if self.inputs_left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.status.send_if_modified(|s: &mut Status| match s {
                Status::Reading => {
                    *s = Status::Done;
                    true
                }
                _ => false,
            });
        }
    }

    fn fail(&self, e: Arc<DataFusionError>) {
        self.status.send_if_modified(|s: &mut Status| match s {
            Status::Failed(_) => false,
            _ => {
                *s = Status::Failed(e);
                true
            }
        });
    }

    /// All batches of all inputs in order, taken from the inputs the first time.
    fn kept(&self) -> &Kept {
        self.kept.get_or_init(|| {
            let mut slots = Vec::new();
            let mut first_slot = Vec::with_capacity(self.batches.len());
            for batches in &self.batches {
                first_slot.push(slots.len());
                // A poisoned list still holds whole batches: a task panics before it pushes.
                let mut batches = batches.lock().unwrap_or_else(|e| e.into_inner());
                slots.extend(std::mem::take(&mut *batches).into_iter().map(|batch| {
                    Slot {
                        won: (0..batch.num_rows().div_ceil(64))
                            .map(|_| AtomicU64::new(0))
                            .collect(),
                        batch: Mutex::new(Some(batch)),
                    }
                }));
            }
            Kept { slots, first_slot }
        })
    }

    /// Mark every winner in its slot's bits, and free the tables. The output partitions
    /// share the work a shard at a time, and each returns once every shard is marked: one
    /// still marking is running through a table without waiting on anything, so this
    /// ends, and a consumer that reads its partitions one after another finds the first
    /// one marking them all.
    fn marks(&self) -> Result<&Kept> {
        let kept = self.kept();
        let Kept { slots, first_slot } = kept;
        let mark = |w: &IntWinner| -> Result<()> {
            let place = w.place();
            let batch_number = (place >> 32) as usize;
            let input = batch_number >> LOCAL_BATCH_BITS;
            let local = batch_number & ((1 << LOCAL_BATCH_BITS) - 1);
            let row = (place & 0xffff_ffff) as usize;
            first_slot
                .get(input)
                .and_then(|first| slots.get(first + local))
                .and_then(|slot| slot.won.get(row / 64))
                .map(|word| word.fetch_or(1 << (row % 64), Ordering::Relaxed))
                .map(|_| ())
                .ok_or_else(|| internal_datafusion_err!("BestRowPerKeyExec: a lost winner"))
        };
        loop {
            let s = self.next_shard.fetch_add(1, Ordering::AcqRel);
            if s >= SHARDS {
                break;
            }
            let Ok(mut shard) = self.shards[s].lock() else {
                // Counted all the same, so that no partition waits for it.
                self.shards_marked.fetch_add(1, Ordering::AcqRel);
                return Err(poisoned(()));
            };
            let marked = shard
                .table
                .iter()
                .chain(shard.null_key.as_ref())
                .try_for_each(mark);
            let freed = shard.table.bytes();
            shard.table = WinnerTable::new(key_hash);
            shard.null_key = None;
            drop(shard);
            self.shrink(freed);
            self.shards_marked.fetch_add(1, Ordering::AcqRel);
            marked?;
        }
        while self.shards_marked.load(Ordering::Acquire) < SHARDS {
            std::thread::yield_now();
        }
        Ok(kept)
    }

    fn shrink(&self, bytes: usize) {
        if let Ok(reservation) = self.reservation.lock() {
            let size = reservation.size();
            reservation.shrink(bytes.min(size));
        }
    }

    /// The pool refused: the winners so far (every other row read so far has lost) and
    /// the rest of every input, sorted by key and ORDER BY in one partition.
    fn sort_everything(&self, fallback: Fallback) -> Result<BatchStream> {
        let mut winners = Vec::new();
        for slot in &self.marks()?.slots {
            let Some(batch) = slot.batch.lock().ok().and_then(|b| b.clone()) else {
                continue;
            };
            if let Some(won) = slot.winners(&batch)? {
                winners.push(won);
            }
        }
        // Only the winners stay: the sort takes them (and reserves them) one by one.
        for slot in &self.kept().slots {
            if let Ok(mut batch) = slot.batch.lock() {
                batch.take();
            }
        }
        let held: usize = winners.iter().map(RecordBatch::get_array_memory_size).sum();
        let reservation = {
            let mut reservation = self.reservation.lock().map_err(poisoned)?;
            let size = reservation.size();
            reservation.shrink(size.saturating_sub(held));
            reservation.take()
        };
        let rest = self
            .rest
            .lock()
            .map_err(poisoned)?
            .take()
            .ok_or_else(|| internal_datafusion_err!("BestRowPerKeyExec: sorted twice"))?;
        let rest = futures::stream::unfold(rest, |mut rx| async move {
            rx.recv().await.map(|batch| (batch, rx))
        });
        let rest = Box::pin(RecordBatchStreamAdapter::new(
            self.input_schema.clone(),
            rest,
        ));
        fallback.fallbacks.add(1);
        fallback.sorted(winners, reservation, rest, self.out_schema.clone())
    }
}

/// A lock another task held when it panicked.
fn poisoned<E>(_: E) -> DataFusionError {
    internal_datafusion_err!("BestRowPerKeyExec: a task panicked")
}

/// The batch without the spare capacity its reader left in its buffers (string values
/// grow by doubling): the batch is kept until the end, and on one Parquet file of
/// benches/pipeline the spare room raised the peak by 230 MB. Shrinking reallocates in
/// place; a buffer shared with another array stays as it is.
fn shrunk(batch: RecordBatch) -> Result<RecordBatch> {
    let (schema, mut columns, rows) = batch.into_parts();
    for column in &mut columns {
        if let Some(array) = Arc::get_mut(column) {
            array.shrink_to_fit();
        }
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows));
    Ok(RecordBatch::try_new_with_options(
        schema, columns, &options,
    )?)
}

/// A key's hash: the finalizer of MurmurHash3, whose every output bit depends on every
/// input bit (a shard's table probes from the low bits, the shard is taken from high ones),
/// and the same in every run.
fn key_hash(key: i64) -> u64 {
    let mut h = key as u64;
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The shard of a key's hash: bits above those a shard's table probes from (the low ones).
fn shard_of(hash: u64) -> usize {
    ((hash >> 40) as usize) % SHARDS
}

impl Slot {
    /// The batch's winning rows, or None when none won. With most rows winning, the rows
    /// are copied in runs (arrow's filter), which gathering them one by one was not.
    fn winners(&self, batch: &RecordBatch) -> Result<Option<RecordBatch>> {
        let words: Vec<u64> = self.won.iter().map(|w| w.load(Ordering::Relaxed)).collect();
        let mask = BooleanBuffer::new(Buffer::from_vec(words), 0, batch.num_rows());
        Ok(match mask.count_set_bits() {
            0 => None,
            n if n == batch.num_rows() => Some(batch.clone()),
            _ => Some(filter_record_batch(batch, &BooleanArray::new(mask, None))?),
        })
    }
}

/// Output partition `partition`'s winners: those of every `outputs`-th kept batch from
/// its own number on, in input order.
struct Emit {
    run: Arc<SharedRun>,
    partition: usize,
    /// The next slot this partition emits.
    slot: usize,
}

impl Emit {
    fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        let inner = &self.run.inner;
        let slots = &inner.kept().slots;
        let baseline = &inner.baselines[self.partition];
        let _timer = baseline.elapsed_compute().timer();
        while let Some(slot) = slots.get(self.slot) {
            self.slot += inner.outputs;
            let batch = slot.batch.lock().map_err(poisoned)?.take();
            let Some(batch) = batch else {
                return Err(internal_datafusion_err!("BestRowPerKeyExec: freed early"));
            };
            let won = slot.winners(&batch)?;
            inner.shrink(batch.get_array_memory_size());
            drop(batch);
            if let Some(won) = won {
                let out = super::super::key_runs::with_row_number_one(&won, &inner.out_schema)?;
                return Ok(Some(out.record_output(baseline)));
            }
        }
        Ok(None)
    }
}

impl Iterator for Emit {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        self.next_batch().transpose()
    }
}

impl Drop for Emit {
    fn drop(&mut self) {
        // Dropped early (a LIMIT above): this partition's batches not emitted yet go now.
        let inner = &self.run.inner;
        let Some(kept) = inner.kept.get() else {
            return;
        };
        for slot in kept.slots.iter().skip(self.slot).step_by(inner.outputs) {
            if let Some(batch) = slot.batch.lock().ok().and_then(|mut b| b.take()) {
                inner.shrink(batch.get_array_memory_size());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use datafusion::arrow::array::{AsArray, Int64Array};
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};
    use datafusion::datasource::memory::MemorySourceConfig;
    use datafusion::physical_expr::expressions::Column;
    use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
    use datafusion::physical_plan::repartition::RepartitionExec;
    use datafusion::physical_plan::{collect, Partitioning};
    use datafusion::prelude::SessionContext;

    use super::super::BestRowPerKeyExec;
    use super::*;

    /// Two partitions of (id, ts, row) with repeated ids, and the exec sharing one table.
    fn exec() -> Arc<dyn ExecutionPlan> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("ts", DataType::Int64, true),
            Field::new("row", DataType::Int64, false),
        ]));
        let mut partitions = vec![Vec::new(), Vec::new()];
        for b in 0..40i64 {
            let rows: Vec<i64> = (b * 50..b * 50 + 50).collect();
            let ids = Int64Array::from_iter(rows.iter().map(|r| Some((r * 7919) % 900)));
            let ts = Int64Array::from_iter(rows.iter().map(|r| Some((r * 31) % 97)));
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(ids),
                    Arc::new(ts),
                    Arc::new(Int64Array::from(rows.clone())),
                ],
            )
            .expect("batch");
            partitions[(b % 2) as usize].push(batch);
        }
        let scan = MemorySourceConfig::try_new_exec(&partitions, schema.clone(), None)
            .expect("scan") as Arc<dyn ExecutionPlan>;
        let id: Arc<dyn PhysicalExpr> = Arc::new(Column::new("id", 0));
        let ts: Arc<dyn PhysicalExpr> = Arc::new(Column::new("ts", 1));
        let by_key: Arc<dyn ExecutionPlan> = Arc::new(
            RepartitionExec::try_new(scan, Partitioning::Hash(vec![id.clone()], 2))
                .expect("repartition"),
        );
        let ordering = LexOrdering::new([
            PhysicalSortExpr::new(id.clone(), SortOptions::default()),
            PhysicalSortExpr::new(ts, SortOptions::default()),
        ])
        .expect("ordering");
        let mut fields = schema.fields().to_vec();
        fields.push(Arc::new(Field::new("rn", DataType::UInt64, false)));
        let out = Arc::new(Schema::new(fields));
        let shared = BestRowPerKeyExec::shared(&by_key, &[id], &ordering, out)
            .expect("plan")
            .expect("a shared table applies");
        Arc::new(shared)
    }

    /// id -> (ts, row) of the rows some output partitions emitted; panics on a key twice.
    fn rows_by_id(batches: &[RecordBatch]) -> BTreeMap<i64, (i64, i64)> {
        let mut out = BTreeMap::new();
        for batch in batches {
            let column = |i: usize| batch.column(i).as_primitive::<Int64Type>().clone();
            let (ids, ts, rows) = (column(0), column(1), column(2));
            for r in 0..batch.num_rows() {
                let previous = out.insert(ids.value(r), (ts.value(r), rows.value(r)));
                assert!(previous.is_none(), "key {} emitted twice", ids.value(r));
            }
        }
        out
    }

    async fn partition(plan: &Arc<dyn ExecutionPlan>, p: usize) -> Vec<RecordBatch> {
        let context = SessionContext::new().task_ctx();
        let stream = plan.execute(p, context).expect("execute");
        datafusion::physical_plan::common::collect(stream)
            .await
            .expect("collect")
    }

    /// Output partitions of different runs split the keys the same way: partition 0 of
    /// one run and partition 1 of another together hold every key once, with the row that
    /// a run handing out both partitions emits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn output_partitions_of_different_runs_split_the_keys_alike() {
        let plan = exec();
        let whole = rows_by_id(
            &collect(plan.clone(), SessionContext::new().task_ctx())
                .await
                .expect("collect"),
        );
        assert_eq!(whole.len(), 900);
        for _ in 0..5 {
            let first = partition(&plan, 0).await;
            // Partition 0 asked for again: a new run, which then hands out partition 1.
            let _again = partition(&plan, 0).await;
            let second = partition(&plan, 1).await;
            let both: Vec<RecordBatch> = first.into_iter().chain(second).collect();
            assert_eq!(rows_by_id(&both), whole);
        }
    }
}
