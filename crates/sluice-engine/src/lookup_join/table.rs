//! The build side of a lookup join and its key index: see [`Table`].

use std::sync::Arc;

use datafusion::arrow::array::{
    make_comparator, Array, ArrayRef, DynComparator, RecordBatch, UInt32Array,
};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{concat_batches, take, SortOptions};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::hash_utils::{create_hashes, RandomState};
use datafusion::common::{internal_err, Result};
use datafusion::execution::memory_pool::MemoryConsumer;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;

use super::few_values::FewValues;
use crate::prefetch::prefetch;

/// The build side: its rows in one batch, and the rows of each key.
///
/// The key index is an open-addressing table of `u64` slots, each the upper half of a
/// key's hash and its first build row (plus one; zero is an empty slot), probed linearly.
/// Probing is the join's cost: the accounts of benches/pipeline (500K keys) took 116 ns
/// per event, nearly all of it waiting for memory. So a batch is probed in passes — hashes,
/// then slots, then key comparisons — and each pass prefetches the memory of the row
/// `PREFETCH_AHEAD` rows on, so that many rows' cache misses overlap.
/// When the key is one column of integers or of strings of at most 15 bytes (ids, codes),
/// the keys are also packed into an array beside the slots: a probe then finds and
/// compares a key at two addresses known from its hash alone, both prefetched in one pass.
pub(super) struct Table {
    pub(super) batch: RecordBatch,
    keys: Vec<ArrayRef>,
    slots: Vec<u64>,
    /// The key of each slot's rows, packed (see [`packed_keys`]).
    packed: Option<Vec<u128>>,
    mask: usize,
    /// The next build row with the same key as this one; `NONE` ends the chain.
    pub(super) next: Vec<u32>,
    pub(super) unique: bool,
    /// Per build column, its dictionary when it holds a few short values.
    few_values: Vec<Option<FewValues>>,
    _reservation: datafusion::execution::memory_pool::MemoryReservation,
}

pub(super) const NONE: u32 = u32::MAX;

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
    pub(super) async fn build(
        build: Arc<dyn ExecutionPlan>,
        keys: &[Arc<dyn PhysicalExpr>],
        gathered: &[usize],
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
        // Packed when every non-NULL build key fits.
        let build_packed = packed_keys(&keys).filter(|p| {
            p.iter()
                .enumerate()
                .all(|(row, &k)| k != TOO_LONG || nulls.as_ref().is_some_and(|m| m.is_null(row)))
        });
        let mut packed = match &build_packed {
            Some(_) => {
                reservation.try_grow(capacity * 16)?;
                Some(vec![0u128; capacity])
            }
            None => None,
        };
        for (row, &hash) in hashes.iter().enumerate() {
            if nulls.as_ref().is_some_and(|m| m.is_null(row)) {
                continue;
            }
            let mut at = hash as usize & mask;
            loop {
                let slot = slots[at];
                if slot == 0 {
                    slots[at] = slot_of(hash, row as u32);
                    if let (Some(packed), Some(keys)) = (packed.as_mut(), build_packed.as_ref()) {
                        packed[at] = keys[row];
                    }
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
        let few_values: Vec<_> = (0..batch.num_columns())
            .map(|i| {
                gathered
                    .contains(&i)
                    .then(|| FewValues::of(batch.column(i)))
                    .flatten()
            })
            .collect();
        reservation.try_grow(few_values.iter().flatten().count() * n)?;
        Ok(Table {
            batch,
            keys,
            slots,
            packed,
            mask,
            next,
            unique,
            few_values,
            _reservation: reservation,
        })
    }

    /// Build column `column` at `indices` (NULL: no build row), as `take` gives it.
    pub(super) fn gather(&self, column: usize, indices: &UInt32Array) -> Result<ArrayRef> {
        match self.few_values.get(column) {
            Some(Some(few)) => few.gather(indices),
            _ => Ok(take(self.batch.column(column), indices, None)?),
        }
    }

    /// For each probe row, the first build row with its key (`NONE`: none).
    pub(super) fn heads(&self, probe_keys: &[ArrayRef]) -> Result<Vec<u32>> {
        let n = probe_keys.first().map_or(0, |k| k.len());
        let mut hashes = vec![0u64; n];
        create_hashes(probe_keys, &KEY_HASH, &mut hashes)?;
        let nulls = key_nulls(probe_keys);
        if let Some(packed) = &self.packed {
            if let Some(probe_packed) = packed_keys(probe_keys) {
                return Ok(self.heads_packed(packed, &probe_packed, &hashes, nulls.as_ref()));
            }
        }
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

    /// [`Self::heads`] with packed keys: one pass, equal packed keys are equal keys.
    fn heads_packed(
        &self,
        packed: &[u128],
        probe: &[u128],
        hashes: &[u64],
        nulls: Option<&NullBuffer>,
    ) -> Vec<u32> {
        let mut heads = Vec::with_capacity(hashes.len());
        for (i, &hash) in hashes.iter().enumerate() {
            if let Some(&ahead) = hashes.get(i + PREFETCH_AHEAD) {
                let at = ahead as usize & self.mask;
                prefetch(&self.slots[at]);
                prefetch(&packed[at]);
            }
            let key = probe[i];
            if key == TOO_LONG || nulls.is_some_and(|m| m.is_null(i)) {
                heads.push(NONE);
                continue;
            }
            let mut at = hash as usize & self.mask;
            heads.push(loop {
                let slot = self.slots[at];
                if slot == 0 {
                    break NONE;
                }
                if same_tag(slot, hash) && packed[at] == key {
                    break slot_row(slot);
                }
                at = (at + 1) & self.mask;
            });
        }
        heads
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

/// A packed key that no build key equals: a string longer than 15 bytes (a packed
/// string's last byte is its length, at most 15).
const TOO_LONG: u128 = u128::MAX;

/// One key column's values packed into 128 bits each, so that equal packed values are equal
/// keys: integers as they are, strings of up to 15 bytes with their length in the last
/// byte, longer strings [`TOO_LONG`]. NULL rows hold an arbitrary value. None for other
/// types and for keys of several columns.
fn packed_keys(keys: &[ArrayRef]) -> Option<Vec<u128>> {
    use datafusion::arrow::array::{ArrayAccessor, AsArray};
    use datafusion::arrow::datatypes::{
        ArrowPrimitiveType, Int32Type, Int64Type, UInt32Type, UInt64Type,
    };
    fn strings<'a>(a: impl ArrayAccessor<Item = &'a str>) -> Vec<u128> {
        (0..a.len())
            .map(|i| string(a.value(i).as_bytes()))
            .collect()
    }
    fn string(bytes: &[u8]) -> u128 {
        if bytes.len() > 15 {
            return TOO_LONG;
        }
        let mut word = [0u8; 16];
        word[..bytes.len()].copy_from_slice(bytes);
        word[15] = bytes.len() as u8;
        u128::from_le_bytes(word)
    }
    fn integers<T: ArrowPrimitiveType>(key: &ArrayRef, bits: fn(T::Native) -> u128) -> Vec<u128> {
        key.as_primitive::<T>()
            .values()
            .iter()
            .map(|&v| bits(v))
            .collect()
    }
    let [key] = keys else {
        return None;
    };
    Some(match key.data_type() {
        DataType::Utf8 => strings(key.as_string::<i32>()),
        DataType::LargeUtf8 => strings(key.as_string::<i64>()),
        DataType::Utf8View => strings(key.as_string_view()),
        DataType::Int64 => integers::<Int64Type>(key, |v| v as u64 as u128),
        DataType::Int32 => integers::<Int32Type>(key, |v| v as u32 as u128),
        DataType::UInt64 => integers::<UInt64Type>(key, |v| v as u128),
        DataType::UInt32 => integers::<UInt32Type>(key, |v| v as u128),
        _ => return None,
    })
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

pub(super) fn key_columns(
    keys: &[Arc<dyn PhysicalExpr>],
    batch: &RecordBatch,
) -> Result<Vec<ArrayRef>> {
    keys.iter()
        .map(|k| k.evaluate(batch)?.into_array(batch.num_rows()))
        .collect()
}

/// Rows with a NULL in any key column: they match nothing.
pub(super) fn key_nulls(columns: &[ArrayRef]) -> Option<NullBuffer> {
    columns.iter().fold(None, |acc, c| {
        NullBuffer::union(acc.as_ref(), c.logical_nulls().as_ref())
    })
}
