//! The per-key tables of the best rows so far: plain integers for one integer key ordered
//! by one integer or time column, arrow's row format for anything else.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, PrimitiveArray, RecordBatch};
use datafusion::arrow::compute::{cast, SortOptions};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{internal_err, Result};
use datafusion::physical_expr::PhysicalExpr;
use hashbrown::hash_table::{Entry, HashTable};

/// Where each key's current winner is, by one of two representations.
pub(super) enum Table {
    Ints(IntTable),
    Rows(RowTable),
    /// After the winners were read out.
    Empty,
}

impl Table {
    pub(super) fn new(
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

    pub(super) fn push(&mut self, batch: &RecordBatch, batch_index: usize) -> Result<()> {
        match self {
            Table::Ints(t) => t.push(batch, batch_index),
            Table::Rows(t) => t.push(batch, batch_index),
            Table::Empty => internal_err!("BestRowPerKeyExec: rows after the output began"),
        }
    }

    /// The number of keys (each has one winner).
    pub(super) fn len(&self) -> usize {
        match self {
            Table::Ints(t) => t.table.len() + usize::from(t.null_key.is_some()),
            Table::Rows(t) => t.entries.len(),
            Table::Empty => 0,
        }
    }

    pub(super) fn memory_size(&self) -> usize {
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
    pub(super) fn for_each_position(&mut self, mut f: impl FnMut(&mut (usize, usize))) {
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
pub(super) fn as_int(t: &DataType) -> bool {
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

pub(super) fn int64s(
    e: &Arc<dyn PhysicalExpr>,
    batch: &RecordBatch,
) -> Result<PrimitiveArray<Int64Type>> {
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
pub(super) const RANK_SHIFT: u32 = 62;
pub(super) const RANK_MASK: u64 = 0b11 << RANK_SHIFT;

pub(super) fn pack((batch, row): (usize, usize)) -> u64 {
    ((batch as u64) << 32) | row as u64
}

pub(super) fn unpack(packed: u64) -> (usize, usize) {
    (
        ((packed & !RANK_MASK) >> 32) as usize,
        (packed & 0xffff_ffff) as usize,
    )
}

#[derive(Clone, Copy)]
pub(super) struct IntWinner {
    key: i64,
    /// The ORDER BY value mapped so that unsigned order is the sort's order.
    order: u64,
    position: u64,
}

impl IntWinner {
    /// No winner: no place has every bit set (the rank is at most 2).
    pub(super) const EMPTY: IntWinner = IntWinner {
        key: 0,
        order: 0,
        position: u64::MAX,
    };

    pub(super) fn is_empty(&self) -> bool {
        self.position == u64::MAX
    }

    /// (NULL rank, ORDER BY value, place): a tie on the ORDER BY goes to the row earlier
    /// in input order, whose place is lower (later rows and batches get higher numbers).
    fn sort_key(&self) -> (u64, u64, u64) {
        (
            self.position >> RANK_SHIFT,
            self.order,
            self.position & !RANK_MASK,
        )
    }

    pub(super) fn beats(&self, incumbent: &IntWinner) -> bool {
        self.sort_key() < incumbent.sort_key()
    }

    pub(super) fn key(&self) -> i64 {
        self.key
    }

    /// The packed (batch, row), without the rank.
    pub(super) fn place(&self) -> u64 {
        self.position & !RANK_MASK
    }
}

/// One integer key, one integer ORDER BY value: 24 bytes per key.
pub(super) struct IntTable {
    key: Arc<dyn PhysicalExpr>,
    order: Arc<dyn PhysicalExpr>,
    options: SortOptions,
    table: HashTable<IntWinner>,
    /// NULL keys are one window partition of their own.
    null_key: Option<IntWinner>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl IntTable {
    pub(super) fn push(&mut self, batch: &RecordBatch, batch_index: usize) -> Result<()> {
        if batch_index as u64 >= 1 << (RANK_SHIFT - 32) || batch.num_rows() as u64 > u32::MAX as u64
        {
            return internal_err!("BestRowPerKeyExec: more batches than it can number");
        }
        let keys = int64s(&self.key, batch)?;
        let order = int64s(&self.order, batch)?;
        let ranks = OrderRanks::new(self.options);
        for row in 0..batch.num_rows() {
            let candidate = ranks.candidate(&order, row, pack((batch_index, row)));
            if keys.is_null(row) {
                offer_null(&mut self.null_key, candidate);
                continue;
            }
            let key = keys.value(row);
            let hash = std::hash::BuildHasher::hash_one(&self.hasher, key);
            let hasher = &self.hasher;
            let hash_of = |k: i64| std::hash::BuildHasher::hash_one(hasher, k);
            offer(&mut self.table, hash_of, hash, key, candidate);
        }
        Ok(())
    }
}

/// How an ORDER BY value becomes a winner's (rank, order).
#[derive(Clone, Copy)]
pub(super) struct OrderRanks {
    descending: bool,
    null_rank: u64,
}

impl OrderRanks {
    pub(super) fn new(options: SortOptions) -> Self {
        OrderRanks {
            descending: options.descending,
            null_rank: if options.nulls_first { 0 } else { 2 },
        }
    }

    /// Row `row`'s candidate at `place` (a packed position without rank); its key is
    /// filled in by [`offer`].
    pub(super) fn candidate(
        &self,
        order: &PrimitiveArray<Int64Type>,
        row: usize,
        place: u64,
    ) -> IntWinner {
        let (value, rank) = if order.is_null(row) {
            (0, self.null_rank)
        } else {
            let v = (order.value(row) as u64) ^ (1 << 63);
            (if self.descending { !v } else { v }, 1)
        };
        IntWinner {
            key: 0,
            order: value,
            position: (rank << RANK_SHIFT) | place,
        }
    }
}

/// Put `candidate` in for `key` when it beats the current winner (or there is none).
pub(super) fn offer(
    table: &mut HashTable<IntWinner>,
    hash_of: impl Fn(i64) -> u64,
    hash: u64,
    key: i64,
    candidate: IntWinner,
) {
    match table.entry(hash, |w| w.key == key, |w| hash_of(w.key)) {
        Entry::Occupied(mut slot) => {
            let w = slot.get_mut();
            if candidate.beats(w) {
                w.order = candidate.order;
                w.position = candidate.position;
            }
        }
        Entry::Vacant(slot) => {
            slot.insert(IntWinner { key, ..candidate });
        }
    }
}

pub(super) fn with_key(candidate: IntWinner, key: i64) -> IntWinner {
    IntWinner { key, ..candidate }
}

/// NULL keys are one window partition of their own.
pub(super) fn offer_null(winner: &mut Option<IntWinner>, candidate: IntWinner) {
    if winner.as_ref().is_none_or(|w| candidate.beats(w)) {
        *winner = Some(candidate);
    }
}

/// The current winner of one key: where its key and ORDER BY bytes are in the arena, and
/// where its row is among the buffered batches.
#[derive(Clone, Copy)]
pub(super) struct RowWinner {
    key: (usize, usize),
    order: (usize, usize),
    position: (usize, usize),
}

/// Any keys and orders, compared in arrow's row format.
pub(super) struct RowTable {
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
    pub(super) fn push(&mut self, batch: &RecordBatch, batch_index: usize) -> Result<()> {
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
