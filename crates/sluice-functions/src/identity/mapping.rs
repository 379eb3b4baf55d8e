//! The mapping written out in id order: a merge of the buckets' sorted ids. The merge meets
//! every group's smallest member before the others, so a new group's shared id is derived
//! from that member when it is reached and kept in the group's slot for the rest.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::BufRead;
use std::sync::Arc;

use datafusion::arrow::array::{Int64Builder, RecordBatch, StringBuilder};
use datafusion::common::DataFusionError;
use datafusion::error::Result;
use uuid::Uuid;

use super::resolve::{slot_text, Resolved, BUCKETS, NONE, TAG_UNSET, TAG_UUID};
use super::store::{read_bytes, read_u32, truncated};
use super::{output_schema, IDENTITY_NAMESPACE};

/// One bucket's sorted ids being read: the id at the head waits in the heap, its number
/// and previous shared id here.
struct Source {
    reader: Box<dyn BufRead + Send>,
    gid: u32,
    prev: Vec<u8>,
    has_prev: bool,
}

impl Source {
    /// The next id into `id`, or false at the end.
    fn advance(&mut self, id: &mut Vec<u8>) -> Result<bool> {
        let Some(len) = read_u32(&mut self.reader)? else {
            return Ok(false);
        };
        read_bytes(&mut self.reader, len as usize, id)?;
        let prev_len = read_u32(&mut self.reader)?.ok_or_else(truncated)?;
        self.has_prev = prev_len != NONE;
        if self.has_prev {
            read_bytes(&mut self.reader, prev_len as usize, &mut self.prev)?;
        }
        Ok(true)
    }
}

pub(super) struct MappingBatches {
    resolved: Resolved,
    sources: Vec<Source>,
    heap: BinaryHeap<Reverse<(Vec<u8>, usize)>>,
    namespace: Uuid,
    batch_size: usize,
}

impl MappingBatches {
    pub(super) fn new(mut resolved: Resolved, batch_size: usize) -> Result<Self> {
        let mut sources = Vec::with_capacity(BUCKETS);
        let mut heap = BinaryHeap::with_capacity(BUCKETS);
        for (k, log) in std::mem::take(&mut resolved.ids).into_iter().enumerate() {
            let mut source = Source {
                reader: log.into_reader()?,
                gid: resolved.bases[k],
                prev: Vec::new(),
                has_prev: false,
            };
            let mut id = Vec::new();
            if source.advance(&mut id)? {
                heap.push(Reverse((id, k)));
            }
            sources.push(source);
        }
        Ok(MappingBatches {
            resolved,
            sources,
            heap,
            namespace: crate::shared_id::namespace(IDENTITY_NAMESPACE),
            batch_size,
        })
    }

    fn batch(&mut self) -> Result<Option<RecordBatch>> {
        if self.heap.is_empty() {
            return Ok(None);
        }
        let n = self.batch_size;
        let mut ids = StringBuilder::with_capacity(n, n * 16);
        let mut sids = StringBuilder::with_capacity(n, n * 36);
        let mut sizes = Int64Builder::with_capacity(n);
        let mut prevs = StringBuilder::with_capacity(n, 0);
        let mut buf = [0u8; 36];
        for _ in 0..n {
            let Some(Reverse((mut id, k))) = self.heap.pop() else {
                break;
            };
            let r = &mut self.resolved;
            let source = &mut self.sources[k];
            let g = r.group[source.gid as usize] as usize;
            if r.tag[g] == TAG_UNSET {
                // The first member reached is the group's smallest: it names the group.
                r.slot[g] = *Uuid::new_v5(&self.namespace, &id).as_bytes();
                r.tag[g] = TAG_UUID;
            }
            ids.append_value(utf8(&id)?);
            sids.append_value(utf8(slot_text(r, g, &mut buf))?);
            sizes.append_value(i64::from(r.size[g]));
            match source.has_prev {
                true => prevs.append_value(utf8(&source.prev)?),
                false => prevs.append_null(),
            }
            source.gid += 1;
            if source.advance(&mut id)? {
                self.heap.push(Reverse((id, k)));
            }
        }
        let batch = RecordBatch::try_new(
            output_schema(),
            vec![
                Arc::new(ids.finish()),
                Arc::new(sids.finish()),
                Arc::new(sizes.finish()),
                Arc::new(prevs.finish()),
            ],
        )?;
        Ok(Some(batch))
    }
}

/// Ids and shared ids came in as UTF-8 columns, so their bytes are UTF-8.
fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes)
        .map_err(|e| DataFusionError::Internal(format!("resolve_identities: {e}")))
}

impl Iterator for MappingBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        self.batch().transpose()
    }
}
