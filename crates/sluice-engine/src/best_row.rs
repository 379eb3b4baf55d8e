//! `row_number() OVER (PARTITION BY k ORDER BY t) = 1` over input in any order, without
//! sorting it: [`BestRowPerKeyExec`] keeps, per key, the position of the row that sorts
//! first so far, and emits those rows at the end.
//!
//! Users' exports arrive in any key order. Planned by DataFusion, the dedup sorts the whole
//! input by key and time (6.2 s of a 10.8 s pipeline over 10.3M events in random order);
//! a hash lookup per row finds the same rows without the sort. Keys and ORDER BY values are
//! compared in arrow's row format, whose byte order is the sort order (with ASC/DESC and
//! NULLS FIRST/LAST), so one `memcmp` decides which row wins. Among rows that tie on the
//! ORDER BY the first in input order wins; DataFusion's own (unstable) sort may pick another
//! row of the tie, which is just as much "row number 1".
//!
//! Memory: the input batches that hold a current winner stay buffered; when they hold more
//! than twice as many rows as there are keys, the winners are copied into one batch and the
//! rest is freed. Everything is reserved in the session's memory pool; a key set that
//! outgrows it fails the query with DataFusion's "resources exhausted" error (this operator
//! does not spill; `datafusion.execution` settings or a larger `--memory-limit` help).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt64Array};
use datafusion::arrow::compute::interleave_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use hashbrown::hash_table::{Entry, HashTable};

/// Per key, the row that sorts first by `order` (the window's ORDER BY), with the window's
/// `rn` column (always 1) appended. Partitioned like its input (hash on the keys).
#[derive(Debug)]
pub struct BestRowPerKeyExec {
    input: Arc<dyn ExecutionPlan>,
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<PhysicalSortExpr>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl BestRowPerKeyExec {
    pub fn new(
        input: Arc<dyn ExecutionPlan>,
        keys: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<PhysicalSortExpr>,
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
            order,
            schema,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for BestRowPerKeyExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let keys: Vec<String> = self.keys.iter().map(|k| k.to_string()).collect();
        let order: Vec<String> = self.order.iter().map(|o| o.to_string()).collect();
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

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        for e in self.keys.iter().chain(self.order.iter().map(|o| &o.expr)) {
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
            self.order.clone(),
            self.schema.clone(),
        )))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context.clone())?;
        let key_fields = self
            .keys
            .iter()
            .map(|k| Ok(SortField::new(k.data_type(&self.input.schema())?)))
            .collect::<Result<Vec<_>>>()?;
        let order_fields = self
            .order
            .iter()
            .map(|o| {
                Ok(SortField::new_with_options(
                    o.expr.data_type(&self.input.schema())?,
                    o.options,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        let reservation = MemoryConsumer::new(format!("BestRowPerKeyExec[{partition}]"))
            .register(context.memory_pool());
        let mut best = Best {
            keys: self.keys.clone(),
            order: self.order.iter().map(|o| o.expr.clone()).collect(),
            key_rows: RowConverter::new(key_fields)?,
            order_rows: RowConverter::new(order_fields)?,
            table: HashTable::new(),
            entries: Vec::new(),
            arena: Vec::new(),
            batches: Vec::new(),
            buffered_rows: 0,
            reservation,
            hasher: hashbrown::DefaultHashBuilder::default(),
        };
        let schema = self.schema.clone();
        let batch_size = context.session_config().batch_size();
        let out = futures::stream::once(async move {
            let mut input = input;
            while let Some(batch) = input.next().await {
                best.push(batch?)?;
            }
            best.finish(&schema, batch_size)
        })
        .map_ok(|batches| futures::stream::iter(batches.into_iter().map(Ok)))
        .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            out,
        )))
    }
}

/// The current winner of one key: where its key and ORDER BY bytes are in the arena, and
/// where its row is among the buffered batches.
#[derive(Clone, Copy)]
struct Winner {
    key: (usize, usize),
    order: (usize, usize),
    batch: usize,
    row: usize,
}

struct Best {
    keys: Vec<Arc<dyn PhysicalExpr>>,
    order: Vec<Arc<dyn PhysicalExpr>>,
    key_rows: RowConverter,
    order_rows: RowConverter,
    /// Indexes into `entries`, hashed by key bytes.
    table: HashTable<usize>,
    /// Winners in the order their keys first appeared.
    entries: Vec<Winner>,
    arena: Vec<u8>,
    batches: Vec<RecordBatch>,
    buffered_rows: usize,
    reservation: MemoryReservation,
    hasher: hashbrown::DefaultHashBuilder,
}

impl Best {
    fn push(&mut self, batch: RecordBatch) -> Result<()> {
        let n = batch.num_rows();
        if n == 0 {
            return Ok(());
        }
        let evaluate = |exprs: &[Arc<dyn PhysicalExpr>]| {
            exprs
                .iter()
                .map(|e| e.evaluate(&batch)?.into_array(n))
                .collect::<Result<Vec<_>>>()
        };
        let keys = self.key_rows.convert_columns(&evaluate(&self.keys)?)?;
        let order = self.order_rows.convert_columns(&evaluate(&self.order)?)?;
        let batch_index = self.batches.len();
        for row in 0..n {
            let key = keys.row(row);
            let key = key.as_ref();
            let value = order.row(row);
            let value = value.as_ref();
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
                        winner.batch = batch_index;
                        winner.row = row;
                    }
                }
                Entry::Vacant(slot) => {
                    let key_start = arena.len();
                    arena.extend_from_slice(key);
                    let order_start = arena.len();
                    arena.extend_from_slice(value);
                    entries.push(Winner {
                        key: (key_start, order_start),
                        order: (order_start, arena.len()),
                        batch: batch_index,
                        row,
                    });
                    slot.insert(entries.len() - 1);
                }
            }
        }
        self.batches.push(batch);
        self.buffered_rows += n;
        if self.buffered_rows > 2 * self.entries.len() + (1 << 20) {
            self.compact()?;
        }
        self.reserve()
    }

    /// Copy the winners into one batch and drop the batches they no longer need.
    fn compact(&mut self) -> Result<()> {
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let indices: Vec<(usize, usize)> = self.entries.iter().map(|w| (w.batch, w.row)).collect();
        let compacted = interleave_record_batch(&refs, &indices)?;
        for (k, winner) in self.entries.iter_mut().enumerate() {
            winner.batch = 0;
            winner.row = k;
        }
        self.buffered_rows = compacted.num_rows();
        self.batches = vec![compacted];
        Ok(())
    }

    fn reserve(&mut self) -> Result<()> {
        let batches: usize = self
            .batches
            .iter()
            .map(RecordBatch::get_array_memory_size)
            .sum();
        let bytes = batches
            + self.arena.capacity()
            + self.entries.capacity() * std::mem::size_of::<Winner>()
            + self.table.capacity() * std::mem::size_of::<usize>();
        self.reservation.try_resize(bytes)
    }

    /// The winners, in the order their keys first appeared, with `rn` = 1 appended.
    fn finish(mut self, schema: &SchemaRef, batch_size: usize) -> Result<Vec<RecordBatch>> {
        let refs: Vec<&RecordBatch> = self.batches.iter().collect();
        let mut out = Vec::new();
        for chunk in self.entries.chunks(batch_size.max(1)) {
            let indices: Vec<(usize, usize)> = chunk.iter().map(|w| (w.batch, w.row)).collect();
            let rows = interleave_record_batch(&refs, &indices)?;
            let mut columns = rows.columns().to_vec();
            columns.push(Arc::new(UInt64Array::from_value(1, rows.num_rows())));
            out.push(RecordBatch::try_new(schema.clone(), columns)?);
        }
        drop(refs);
        self.batches.clear();
        self.reservation.free();
        Ok(out)
    }
}
