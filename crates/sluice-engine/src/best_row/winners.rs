//! The shared dedup's table of winners: open addressing with the winner in the slot.
//!
//! hashbrown keeps a slot's control byte apart from its value, so on a table far larger
//! than the caches (9M keys of benches/pipeline: 400 MB) an offer waited for two cache
//! misses, one after the other, and the probe loop was a tenth of the run's CPU. Here a
//! slot is the winner itself (an empty one has no place), probed linearly from its hash,
//! and a shard's rows are offered with the slot of the row `PREFETCH_AHEAD` on already
//! requested from memory, so that the rows' misses overlap.

use super::table::IntWinner;
use crate::prefetch::prefetch;

/// How many rows ahead the offers prefetch their slot.
const PREFETCH_AHEAD: usize = 16;

/// Most keys per slot: linear probing stays short below this.
const MAX_LOAD: (usize, usize) = (7, 10);

pub(super) struct WinnerTable {
    slots: Vec<IntWinner>,
    mask: usize,
    len: usize,
    hash_of: fn(i64) -> u64,
}

impl WinnerTable {
    pub(super) fn new(hash_of: fn(i64) -> u64) -> Self {
        WinnerTable {
            slots: Vec::new(),
            mask: 0,
            len: 0,
            hash_of,
        }
    }

    pub(super) fn bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<IntWinner>()
    }

    /// Make room for `additional` more keys, so that offering them does not grow it.
    pub(super) fn reserve(&mut self, additional: usize) {
        let needed = self.len + additional;
        if needed * MAX_LOAD.1 <= self.slots.len() * MAX_LOAD.0 {
            return;
        }
        let slots = (needed * MAX_LOAD.1 / MAX_LOAD.0 + 1)
            .next_power_of_two()
            .max(16);
        let old = std::mem::replace(&mut self.slots, vec![IntWinner::EMPTY; slots]);
        self.mask = slots - 1;
        for winner in old.into_iter().filter(|w| !w.is_empty()) {
            let at = self.probe((self.hash_of)(winner.key()), winner.key());
            self.slots[at] = winner;
        }
    }

    /// Each `(hash of its key, candidate)` replaces its key's winner when it beats it.
    pub(super) fn offer_all(&mut self, rows: &[(u64, IntWinner)]) {
        self.reserve(rows.len());
        for (i, &(hash, candidate)) in rows.iter().enumerate() {
            if let Some((ahead, _)) = rows.get(i + PREFETCH_AHEAD) {
                prefetch(&self.slots[*ahead as usize & self.mask]);
            }
            let at = self.probe(hash, candidate.key());
            let slot = &mut self.slots[at];
            if slot.is_empty() {
                *slot = candidate;
                self.len += 1;
            } else if candidate.beats(slot) {
                *slot = candidate;
            }
        }
    }

    /// The slot of `key`: its winner's, or the empty one where it goes.
    fn probe(&self, hash: u64, key: i64) -> usize {
        let mut at = hash as usize & self.mask;
        loop {
            let slot = &self.slots[at];
            if slot.is_empty() || slot.key() == key {
                return at;
            }
            at = (at + 1) & self.mask;
        }
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &IntWinner> {
        self.slots.iter().filter(|w| !w.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::best_row::table::OrderRanks;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::compute::SortOptions;

    fn hash(key: i64) -> u64 {
        // Few distinct hashes, so that keys collide and probe past each other.
        (key as u64 % 7).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn colliding_keys_keep_their_own_best_rows_through_growth() {
        let order = Int64Array::from_iter_values((0..5000).map(|i| (i * 7919) % 1000));
        let ranks = OrderRanks::new(SortOptions::default());
        let mut table = WinnerTable::new(hash);
        let mut best = std::collections::BTreeMap::new();
        for chunk in (0..5000usize).collect::<Vec<_>>().chunks(37) {
            let rows: Vec<(u64, IntWinner)> = chunk
                .iter()
                .map(|&row| {
                    let key = (row % 300) as i64;
                    let candidate = ranks.candidate(&order, row, row as u64);
                    (hash(key), crate::best_row::table::with_key(candidate, key))
                })
                .collect();
            table.offer_all(&rows);
            for &row in chunk {
                let entry = best.entry(row % 300).or_insert(row);
                if (order.value(row), row) < (order.value(*entry), *entry) {
                    *entry = row;
                }
            }
        }
        let got: std::collections::BTreeMap<usize, usize> = table
            .iter()
            .map(|w| (w.key() as usize, w.place() as usize))
            .collect();
        assert_eq!(got, best);
        assert_eq!(table.len, 300);
    }
}
