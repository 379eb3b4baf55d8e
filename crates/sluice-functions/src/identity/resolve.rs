//! Connected groups of identifiers in bounded memory.
//!
//! 1. Every endpoint of every edge goes, as (edge number, text), to one of `BUCKETS` logs
//!    chosen by the hash of its text; the previous mapping's rows go to the same buckets by
//!    id. Logs stay in memory while the pool allows and spill to disk when it does not.
//! 2. One bucket at a time, its distinct ids are interned exactly and numbered in sorted
//!    order after the ids of earlier buckets; an edge's first endpoint leaves its number in
//!    a per-edge slot, the second joins the two in a union-find forest (4 bytes per id and
//!    per edge: the only memory that grows with the whole graph). The bucket's ids, sorted,
//!    with their previous shared ids, go to a second set of logs.
//! 3. The forest becomes a group number per id, then per group a size and a 16-byte slot:
//!    the sticky previous shared id (the smallest of its members'), or the new group's
//!    UUID, derived from its smallest member when a merge of the sorted buckets reaches it
//!    (see `mapping.rs`).

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::common::DataFusionError;
use datafusion::error::Result;
use datafusion::execution::disk_manager::DiskManager;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::metrics::Count;
use datafusion::prelude::SessionContext;
use hashbrown::{DefaultHashBuilder, HashTable};
use uuid::Uuid;

use super::store::{Cursor, Finished, Logs};
use super::{two_columns, IdentitySpec, Source};

/// Buckets the ids are partitioned into; one is in memory at a time in step 2.
pub(super) const BUCKETS: usize = 64;
pub(super) const NONE: u32 = u32::MAX;

/// Per group, what its shared id is.
pub(super) const TAG_UNSET: u8 = 0;
/// `slot` holds a UUID: a previous shared id in canonical form, or the new group's.
pub(super) const TAG_UUID: u8 = 1;
/// `slot` holds the offset (8 bytes) and length (4 bytes) of a previous shared id in `arena`.
pub(super) const TAG_TEXT: u8 = 2;

/// Counters the plan shows (EXPLAIN ANALYZE) and the shell's progress line reads.
#[derive(Clone)]
pub(super) struct Metrics {
    pub edges: Count,
    pub ids: Count,
    pub groups: Count,
    pub spilled_bytes: Count,
    pub spill_count: Count,
}

/// Everything `mapping.rs` needs to write the output.
pub(super) struct Resolved {
    /// Per bucket: its ids, sorted, each with its previous shared id.
    pub ids: Vec<Finished>,
    /// Per bucket: the number of its first id.
    pub bases: Vec<u32>,
    /// Per id: its group.
    pub group: Vec<u32>,
    /// Per group: members, how its shared id is kept, and the shared id.
    pub size: Vec<u32>,
    pub tag: Vec<u8>,
    pub slot: Vec<[u8; 16]>,
    pub arena: Vec<u8>,
    pub reservations: Vec<MemoryReservation>,
}

pub(super) struct Inputs<'a> {
    pub ctx: &'a SessionContext,
    pub spec: &'a IdentitySpec,
    pub pool: &'a Arc<dyn MemoryPool>,
    pub disk: Arc<DiskManager>,
    pub metrics: &'a Metrics,
}

fn exhausted(what: &str, bytes: usize) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "resolve_identities: {what} need {} MiB of memory even when spilling, more than the memory limit leaves; raise --memory-limit",
        bytes.div_ceil(1 << 20)
    ))
}

/// Logs finished but not yet read, which can still be moved to disk to make room.
struct Parked {
    logs: Vec<Finished>,
    reservation: MemoryReservation,
}

impl Parked {
    fn from(logs: Logs) -> Result<Self> {
        let (logs, reservation) = logs.finish()?;
        Ok(Parked { logs, reservation })
    }

    fn spill(&mut self, inputs: &Inputs) -> Result<bool> {
        let mut freed = false;
        for log in self.logs.iter_mut() {
            if log.is_in_memory() && log.len() > 0 {
                log.spill(&inputs.disk, &inputs.metrics.spilled_bytes)?;
                freed = true;
            }
        }
        if freed {
            inputs.metrics.spill_count.add(1);
            self.reservation.free();
        }
        Ok(freed)
    }

    /// Log `k`, to be read; the pool keeps counting its memory until `release`.
    fn take(&mut self, k: usize) -> Finished {
        std::mem::replace(&mut self.logs[k], Finished::Memory(Vec::new()))
    }

    /// A taken log is read: its memory goes back to the pool.
    fn release(&mut self, log: &Finished) {
        if log.is_in_memory() {
            let len = log.len() as usize;
            self.reservation.shrink(len.min(self.reservation.size()));
        }
    }
}

/// Grows `reservation` by `bytes`, moving parked logs to disk first if the pool is full.
fn reserve(
    reservation: &MemoryReservation,
    bytes: usize,
    parked: &mut [&mut Parked],
    inputs: &Inputs,
    what: &str,
) -> Result<()> {
    if reservation.try_grow(bytes).is_ok() {
        return Ok(());
    }
    for p in parked.iter_mut() {
        if p.spill(inputs)? && reservation.try_grow(bytes).is_ok() {
            return Ok(());
        }
    }
    Err(exhausted(what, bytes))
}

/// Room in `v` for `extra` more items, the growth reserved first.
fn grow_vec<T>(
    v: &mut Vec<T>,
    extra: usize,
    reservation: &MemoryReservation,
    parked: &mut [&mut Parked],
    inputs: &Inputs,
    what: &str,
) -> Result<()> {
    let need = v.len() + extra;
    if need <= v.capacity() {
        return Ok(());
    }
    let new_cap = need.max(v.capacity() * 2).max(1024);
    let bytes = (new_cap - v.capacity()) * std::mem::size_of::<T>();
    reserve(reservation, bytes, parked, inputs, what)?;
    v.reserve_exact(new_cap - v.len());
    Ok(())
}

pub(super) fn find(parent: &mut [u32], mut x: u32) -> u32 {
    while parent[x as usize] != x {
        let p = parent[x as usize];
        parent[x as usize] = parent[p as usize];
        x = p;
    }
    x
}

/// The smaller number stays the root, so every id's parent is never above it.
pub(super) fn union(parent: &mut [u32], a: u32, b: u32) {
    let (ra, rb) = (find(parent, a), find(parent, b));
    if ra != rb {
        let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
        parent[hi as usize] = lo;
    }
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn len32(s: &[u8]) -> Result<[u8; 4]> {
    u32::try_from(s.len())
        .map(u32::to_le_bytes)
        .map_err(|_| DataFusionError::Execution("resolve_identities: an id is over 4 GiB".into()))
}

/// `edges`: the edges as the operator's child streams them, when it has one.
pub(super) async fn resolve(
    inputs: Inputs<'_>,
    edges: Option<SendableRecordBatchStream>,
) -> Result<Resolved> {
    let edge_source = match edges {
        Some(stream) => Source::Stream(stream),
        None => match inputs.spec.plans.as_ref() {
            Some(p) => Source::Plan(&p.edges),
            None => Source::Table,
        },
    };
    let spec = inputs.spec;
    let m = inputs.metrics;
    let counts = (m.spilled_bytes.clone(), m.spill_count.clone());
    // One spillable consumer for every log, so the pool's fair share is not split among them.
    let logs_memory = MemoryConsumer::new("resolve_identities logs")
        .with_can_spill(true)
        .register(inputs.pool);
    let fixed = MemoryConsumer::new("resolve_identities").register(inputs.pool);
    let bucket_hasher = DefaultHashBuilder::default();
    let bucket_of = |s: &[u8]| (bucket_hasher.hash_one(s) >> 32) as usize % BUCKETS;
    let new_logs = |what| {
        Logs::new(
            BUCKETS,
            logs_memory.new_empty(),
            inputs.disk.clone(),
            what,
            counts.clone(),
        )
    };
    let plans = spec.plans.as_ref();

    // Step 1: partition the endpoints, remembering one slot per edge.
    let mut edge_logs = new_logs("edges");
    let mut edge_end: Vec<u32> = Vec::new();
    let edges = (spec.edges.as_str(), spec.left.as_str(), spec.right.as_str());
    two_columns(inputs.ctx, edges, edge_source, |l, r| {
        let (l, r) = (non_empty(l), non_empty(r));
        if l.is_none() && r.is_none() {
            return Ok(());
        }
        let e = u32::try_from(edge_end.len())
            .ok()
            .filter(|&e| e != NONE)
            .ok_or_else(|| {
                DataFusionError::Execution("resolve_identities: more than 4 billion edges".into())
            })?;
        grow_vec(&mut edge_end, 1, &fixed, &mut [], &inputs, "the edges")?;
        edge_end.push(NONE);
        let e = e.to_le_bytes();
        for s in [l, r].into_iter().flatten() {
            let s = s.as_bytes();
            edge_logs.append(bucket_of(s), &[&e, &len32(s)?, s])?;
        }
        m.edges.add(1);
        Ok(())
    })
    .await?;
    let mut edge_logs = Parked::from(edge_logs)?;

    let mut prev_logs = Parked {
        logs: (0..BUCKETS).map(|_| Finished::Memory(Vec::new())).collect(),
        reservation: logs_memory.new_empty(),
    };
    if let Some(prev) = &spec.previous {
        let mut logs = new_logs("previous mapping");
        let source = match plans.and_then(|p| p.previous.as_ref()) {
            Some(plan) => Source::Plan(plan),
            None => Source::Table,
        };
        two_columns(inputs.ctx, (prev, "id", "shared_id"), source, |id, sid| {
            if let (Some(id), Some(sid)) = (non_empty(id), sid) {
                let (id, sid) = (id.as_bytes(), sid.as_bytes());
                logs.append(bucket_of(id), &[&len32(id)?, id, &len32(sid)?, sid])?;
            }
            Ok(())
        })
        .await?;
        prev_logs = Parked::from(logs)?;
    }

    // Step 2: per bucket, intern, number in sorted order, and union.
    let mut id_logs = new_logs("ids");
    let mut parent: Vec<u32> = Vec::new();
    let mut bases = Vec::with_capacity(BUCKETS);
    let (mut file_buf, mut prev_buf) = (Vec::new(), Vec::new());
    for k in 0..BUCKETS {
        let base = u32::try_from(parent.len())
            .ok()
            .filter(|&b| b < NONE - 1)
            .ok_or_else(|| {
                DataFusionError::Execution("resolve_identities: more than 4 billion ids".into())
            })?;
        bases.push(base);
        let work = MemoryConsumer::new("resolve_identities bucket").register(inputs.pool);
        let (edge_log, prev_log) = (edge_logs.take(k), prev_logs.take(k));
        let in_files = [&edge_log, &prev_log]
            .iter()
            .filter(|l| !l.is_in_memory())
            .map(|l| l.len() as usize)
            .sum();
        let parked = &mut [&mut prev_logs, &mut edge_logs];
        reserve(&work, in_files, parked, &inputs, "a bucket of ids")?;
        let bytes = edge_log.bytes(&mut file_buf)?;
        let records = count_records(bytes)?;
        reserve(&work, records * 44, parked, &inputs, "a bucket of ids")?;
        let bucket = Bucket::intern(bytes, records)?;
        let n = bucket.distinct.len();
        grow_vec(&mut parent, n, &fixed, parked, &inputs, "the ids' groups")?;
        parent.extend(base..base + n as u32);
        for &(e, local) in &bucket.records {
            let gid = base + bucket.pos_of[local as usize];
            match edge_end[e as usize] {
                NONE => edge_end[e as usize] = gid,
                other => union(&mut parent, other, gid),
            }
        }
        let prev_bytes = prev_log.bytes(&mut prev_buf)?;
        let previous = bucket.previous(prev_bytes)?;
        for (p, &local) in bucket.order.iter().enumerate() {
            let id = bucket.text(local);
            match previous.get(p).copied().flatten() {
                Some((off, len)) => {
                    let sid = &prev_bytes[off..off + len];
                    id_logs.append(k, &[&len32(id)?, id, &len32(sid)?, sid])?
                }
                None => id_logs.append(k, &[&len32(id)?, id, &NONE.to_le_bytes()])?,
            }
        }
        drop((previous, bucket));
        edge_logs.release(&edge_log);
        prev_logs.release(&prev_log);
        m.ids.add(n);
    }
    let edge_bytes = edge_end.capacity() * 4;
    drop(edge_end);
    fixed.shrink(edge_bytes.min(fixed.size()));
    drop((file_buf, prev_buf, edge_logs, prev_logs));
    let mut id_logs = Parked::from(id_logs)?;

    // Step 3: groups. A parent is never above its child, so one ascending pass numbers
    // the groups: a root opens the next group, any other id takes its parent's.
    let mut groups = 0u32;
    for i in 0..parent.len() {
        let p = parent[i] as usize;
        parent[i] = if p == i {
            groups += 1;
            groups - 1
        } else {
            parent[p]
        };
    }
    let g = groups as usize;
    m.groups.add(g);
    reserve(
        &fixed,
        g * (4 + 1 + 16),
        &mut [&mut id_logs],
        &inputs,
        "the groups",
    )?;
    let mut size = vec![0u32; g];
    for &grp in &parent {
        size[grp as usize] += 1;
    }
    let mut resolved = Resolved {
        ids: Vec::new(),
        bases,
        group: parent,
        size,
        tag: vec![TAG_UNSET; g],
        slot: vec![[0u8; 16]; g],
        arena: Vec::new(),
        reservations: Vec::new(),
    };
    if spec.previous.is_some() {
        sticky_ids(&mut resolved, &mut id_logs, &fixed, &inputs)?;
    }
    resolved.ids = std::mem::take(&mut id_logs.logs);
    resolved.reservations = vec![fixed, id_logs.reservation];
    Ok(resolved)
}

/// Records in a log of (edge, text) pairs, checking that it parses.
fn count_records(bytes: &[u8]) -> Result<usize> {
    let mut c = Cursor::new(bytes);
    let mut n = 0;
    while !c.done() {
        c.u32()?;
        c.text()?;
        n += 1;
    }
    Ok(n)
}

/// One bucket's ids interned: each record's edge and local id, the distinct texts, and
/// their sorted order.
struct Bucket<'a> {
    bytes: &'a [u8],
    records: Vec<(u32, u32)>,
    distinct: Vec<(usize, u32)>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// Local ids in sorted order, and each local id's place in it.
    order: Vec<u32>,
    pos_of: Vec<u32>,
}

impl<'a> Bucket<'a> {
    fn text(&self, local: u32) -> &'a [u8] {
        let (off, len) = self.distinct[local as usize];
        &self.bytes[off..off + len as usize]
    }

    fn intern(bytes: &'a [u8], records: usize) -> Result<Self> {
        let mut b = Bucket {
            bytes,
            records: Vec::with_capacity(records),
            distinct: Vec::new(),
            table: HashTable::with_capacity(records / 2),
            hasher: DefaultHashBuilder::default(),
            order: Vec::new(),
            pos_of: Vec::new(),
        };
        let mut c = Cursor::new(bytes);
        while !c.done() {
            let e = c.u32()?;
            let (off, len) = c.text()?;
            let text = &bytes[off..off + len];
            let hash = b.hasher.hash_one(text);
            let Bucket {
                distinct,
                table,
                hasher,
                ..
            } = &mut b;
            let at = |i: u32| {
                let (o, l) = distinct[i as usize];
                &bytes[o..o + l as usize]
            };
            let local = match table.find(hash, |&i| at(i) == text) {
                Some(&i) => i,
                None => {
                    let i = distinct.len() as u32;
                    table.insert_unique(hash, i, |&j| hasher.hash_one(at(j)));
                    distinct.push((off, len as u32));
                    i
                }
            };
            b.records.push((e, local));
        }
        let mut order: Vec<u32> = (0..b.distinct.len() as u32).collect();
        order.sort_unstable_by(|&x, &y| b.text(x).cmp(b.text(y)));
        let mut pos_of = vec![0u32; order.len()];
        for (p, &local) in order.iter().enumerate() {
            pos_of[local as usize] = p as u32;
        }
        b.order = order;
        b.pos_of = pos_of;
        Ok(b)
    }

    /// Per sorted position, the previous shared id (offset, length in `prev`) the previous
    /// mapping gave that id; a later row for the same id wins.
    fn previous(&self, prev: &[u8]) -> Result<Vec<Option<(usize, usize)>>> {
        if prev.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = vec![None; self.order.len()];
        let mut c = Cursor::new(prev);
        while !c.done() {
            let (off, len) = c.text()?;
            let sid = c.text()?;
            let id = &prev[off..off + len];
            let hash = self.hasher.hash_one(id);
            if let Some(&local) = self.table.find(hash, |&i| self.text(i) == id) {
                out[self.pos_of[local as usize] as usize] = Some(sid);
            }
        }
        Ok(out)
    }
}

/// A previous shared id in the 16 bytes of a UUID when it is one in canonical form (as
/// `shared_id` writes them), so it takes no more room than a new group's.
fn canonical_uuid(text: &[u8]) -> Option<[u8; 16]> {
    let uuid = Uuid::try_parse_ascii(text).ok()?;
    let mut buf = [0u8; 36];
    (uuid.hyphenated().encode_lower(&mut buf).as_bytes() == text).then(|| *uuid.as_bytes())
}

/// The text a group's slot holds, into `buf` for a UUID.
pub(super) fn slot_text<'a>(r: &'a Resolved, g: usize, buf: &'a mut [u8; 36]) -> &'a [u8] {
    match r.tag[g] {
        TAG_TEXT => {
            let s = &r.slot[g];
            let off = u64::from_le_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]);
            let len = u32::from_le_bytes([s[8], s[9], s[10], s[11]]);
            &r.arena[off as usize..off as usize + len as usize]
        }
        _ => Uuid::from_bytes(r.slot[g])
            .hyphenated()
            .encode_lower(buf)
            .as_bytes(),
    }
}

/// Each group keeps the smallest previous shared id among its members.
fn sticky_ids(
    r: &mut Resolved,
    id_logs: &mut Parked,
    fixed: &MemoryReservation,
    inputs: &Inputs,
) -> Result<()> {
    let (mut id, mut sid, mut buf) = (Vec::new(), Vec::new(), [0u8; 36]);
    for k in 0..BUCKETS {
        let mut gid = r.bases[k];
        let mut reader = id_logs.logs[k].reader()?;
        while let Some(len) = super::store::read_u32(&mut reader)? {
            super::store::read_bytes(&mut reader, len as usize, &mut id)?;
            let sid_len =
                super::store::read_u32(&mut reader)?.ok_or_else(super::store::truncated)?;
            if sid_len != NONE {
                super::store::read_bytes(&mut reader, sid_len as usize, &mut sid)?;
                let g = r.group[gid as usize] as usize;
                let better = r.tag[g] == TAG_UNSET || sid.as_slice() < slot_text(r, g, &mut buf);
                if better {
                    match canonical_uuid(&sid) {
                        Some(bytes) => {
                            r.slot[g] = bytes;
                            r.tag[g] = TAG_UUID;
                        }
                        None => {
                            grow_vec(
                                &mut r.arena,
                                sid.len(),
                                fixed,
                                &mut [],
                                inputs,
                                "the previous shared ids",
                            )?;
                            let mut s = [0u8; 16];
                            s[..8].copy_from_slice(&(r.arena.len() as u64).to_le_bytes());
                            s[8..12].copy_from_slice(&(sid.len() as u32).to_le_bytes());
                            r.arena.extend_from_slice(&sid);
                            r.slot[g] = s;
                            r.tag[g] = TAG_TEXT;
                        }
                    }
                }
            }
            gid += 1;
        }
    }
    Ok(())
}
