//! The distributed first step of `resolve_identities` on a cluster: each partition of the
//! edges, on whichever executor runs it, is contracted to a spanning forest of its own
//! edges (every id of a local group points at the group's first id; an id seen only with
//! a NULL partner stays as a single-ended edge). The forests together connect exactly what
//! the edges connect, with no duplicate edge and no cycle, so the one operator that must
//! see the whole graph (`IdentityExec`) reads at most as many rows as there were edges and
//! none of the parsing, casting and interning that the executors already did.
//!
//! Memory is bounded by the pool: when a partition's forest no longer fits, what it holds
//! is emitted and the rest of the partition passes through as it came.

use std::hash::BuildHasher;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{internal_err, Result};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::{StreamExt, TryStreamExt};
use hashbrown::{DefaultHashBuilder, HashTable};

use super::resolve::{find, union};

/// Two nullable text columns, (id, id it is linked to): what `IdentityExec` reads.
fn edge_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("left_id", DataType::Utf8, true),
        Field::new("right_id", DataType::Utf8, true),
    ]))
}

/// Both columns of an edges batch as UTF-8 (the inputs are cast to VARCHAR, which may
/// arrive as a string view).
pub(super) fn utf8_pair(batch: &RecordBatch) -> Result<RecordBatch> {
    let cast = |i: usize| datafusion::arrow::compute::cast(batch.column(i), &DataType::Utf8);
    Ok(RecordBatch::try_new(
        edge_schema(),
        vec![cast(0)?, cast(1)?],
    )?)
}

#[derive(Debug)]
pub struct IdentityForestExec {
    input: Arc<dyn ExecutionPlan>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl IdentityForestExec {
    pub fn new(input: Arc<dyn ExecutionPlan>) -> Self {
        let partitioning = input.output_partitioning().clone();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(edge_schema()),
            partitioning,
            EmissionType::Final,
            Boundedness::Bounded,
        );
        IdentityForestExec {
            input,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for IdentityForestExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "IdentityForestExec")
    }
}

impl ExecutionPlan for IdentityForestExec {
    fn name(&self) -> &str {
        "IdentityForestExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([input]) => Ok(Arc::new(IdentityForestExec::new(input))),
            Err(_) => internal_err!("IdentityForestExec has one input"),
        }
    }

    fn execute(
        &self,
        partition: usize,
        task: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let mut input = self.input.execute(partition, task.clone())?;
        let batch_size = task.session_config().batch_size().max(1);
        let reservation = MemoryConsumer::new(format!("IdentityForestExec[{partition}]"))
            .register(task.memory_pool());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let metrics = ForestMetrics {
            edges: MetricBuilder::new(&self.metrics).counter("edges", partition),
            ids: MetricBuilder::new(&self.metrics).counter("ids", partition),
            passed_through: MetricBuilder::new(&self.metrics).counter("passed_through", partition),
        };
        let passed = metrics.passed_through.clone();
        let output = baseline.clone();
        let contracted = futures::stream::once(async move {
            let mut forest = Forest::new(reservation);
            let mut full = false;
            while !full {
                let Some(batch) = input.next().await else {
                    break;
                };
                let batch = utf8_pair(&batch?)?;
                metrics.edges.add(batch.num_rows());
                let timer = baseline.elapsed_compute().timer();
                full = !forest.add(&batch);
                timer.done();
            }
            metrics.ids.add(forest.parent.len());
            let out = forest.edges(batch_size)?;
            // What no longer fitted goes on unchanged: the forest's edges plus the rest
            // still connect exactly what the partition's edges connect.
            let rest = input.map(move |b| {
                let b = utf8_pair(&b?)?;
                passed.add(b.num_rows());
                Ok(b)
            });
            Ok::<_, datafusion::error::DataFusionError>(
                futures::stream::iter(out.into_iter().map(Ok)).chain(rest),
            )
        })
        .try_flatten()
        .inspect_ok(move |b| output.record_output(b.num_rows()));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            edge_schema(),
            contracted,
        )))
    }
}

struct ForestMetrics {
    edges: Count,
    ids: Count,
    passed_through: Count,
}

/// One partition's ids, interned, and a union-find forest over them.
struct Forest {
    arena: Vec<u8>,
    spans: Vec<(u32, u32)>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
    parent: Vec<u32>,
    reservation: MemoryReservation,
}

impl Forest {
    fn new(reservation: MemoryReservation) -> Self {
        Forest {
            arena: Vec::new(),
            spans: Vec::new(),
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            parent: Vec::new(),
            reservation,
        }
    }

    fn text(&self, id: u32) -> &[u8] {
        let (off, len) = self.spans[id as usize];
        &self.arena[off as usize..(off + len) as usize]
    }

    fn intern(&mut self, text: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(text);
        let Forest {
            arena,
            spans,
            table,
            hasher,
            parent,
            ..
        } = self;
        let at = |i: u32| {
            let (o, l) = spans[i as usize];
            &arena[o as usize..(o + l) as usize]
        };
        if let Some(&i) = table.find(hash, |&i| at(i) == text) {
            return i;
        }
        let i = spans.len() as u32;
        table.insert_unique(hash, i, |&j| {
            let (o, l) = spans[j as usize];
            hasher.hash_one(&arena[o as usize..(o + l) as usize])
        });
        spans.push((arena.len() as u32, text.len() as u32));
        arena.extend_from_slice(text);
        parent.push(i);
        i
    }

    fn bytes(&self) -> usize {
        self.arena.capacity()
            + self.spans.capacity() * 8
            + self.parent.capacity() * 4
            + self.table.capacity() * 5
    }

    /// Adds a batch of edges; false when the forest no longer fits the pool (or the 4 GiB
    /// its offsets can address) and must be emitted.
    fn add(&mut self, batch: &RecordBatch) -> bool {
        let (l, r) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
        );
        for row in 0..batch.num_rows() {
            let a = id_at(l, row).map(|t| self.intern(t));
            let b = id_at(r, row).map(|t| self.intern(t));
            if let (Some(a), Some(b)) = (a, b) {
                union(&mut self.parent, a, b);
            }
        }
        self.arena.len() < (u32::MAX / 2) as usize
            && self.spans.len() < (u32::MAX / 2) as usize
            && self.reservation.try_resize(self.bytes()).is_ok()
    }

    /// Every id that is not its group's root, linked to the root; a root alone in its group
    /// with no partner, so that it is still an id.
    fn edges(mut self, batch_size: usize) -> Result<Vec<RecordBatch>> {
        let n = self.parent.len();
        let mut alone = vec![true; n];
        for i in 0..n as u32 {
            let root = find(&mut self.parent, i);
            self.parent[i as usize] = root;
            if root != i {
                alone[root as usize] = false;
                alone[i as usize] = false;
            }
        }
        let mut out = Vec::new();
        let mut start = 0;
        while start < n {
            let end = (start + batch_size).min(n);
            let mut left = StringBuilder::with_capacity(end - start, 0);
            let mut right = StringBuilder::with_capacity(end - start, 0);
            for i in start as u32..end as u32 {
                let root = self.parent[i as usize];
                if root != i {
                    left.append_value(utf8(self.text(i))?);
                    right.append_value(utf8(self.text(root))?);
                } else if alone[i as usize] {
                    left.append_value(utf8(self.text(i))?);
                    right.append_null();
                }
            }
            out.push(RecordBatch::try_new(
                edge_schema(),
                vec![Arc::new(left.finish()), Arc::new(right.finish())],
            )?);
            start = end;
        }
        self.reservation.free();
        Ok(out)
    }
}

/// An id, or None for NULL and '' (which are no id).
fn id_at(a: &StringArray, row: usize) -> Option<&[u8]> {
    let v = a.is_valid(row).then(|| a.value(row).as_bytes())?;
    (!v.is_empty()).then_some(v)
}

/// The ids came in as UTF-8 columns.
fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|e| {
        datafusion::error::DataFusionError::Internal(format!("resolve_identities: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::{GreedyMemoryPool, MemoryPool};

    fn batch(rows: &[(Option<&str>, Option<&str>)]) -> RecordBatch {
        let l: StringArray = rows.iter().map(|r| r.0).collect();
        let r: StringArray = rows.iter().map(|r| r.1).collect();
        RecordBatch::try_new(edge_schema(), vec![Arc::new(l), Arc::new(r)]).unwrap()
    }

    fn rows(batches: &[RecordBatch]) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        for b in batches {
            let (l, r) = (
                b.column(0).as_string::<i32>(),
                b.column(1).as_string::<i32>(),
            );
            for i in 0..b.num_rows() {
                out.push((
                    l.value(i).to_string(),
                    r.is_valid(i).then(|| r.value(i).to_string()),
                ));
            }
        }
        out
    }

    #[test]
    fn a_partition_becomes_stars_around_each_groups_first_id() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(1 << 20));
        let mut forest = Forest::new(MemoryConsumer::new("t").register(&pool));
        let input = batch(&[
            (Some("b"), Some("c")),
            (Some("c"), Some("b")), // duplicate, reversed
            (Some("a"), Some("c")),
            (Some("d"), None),      // alone, but an id
            (None, None),           // nothing
            (Some(""), Some("e")),  // empty is NULL: e alone
            (Some("f"), Some("f")), // self-loop: alone
            (Some("d"), Some("g")), // d is no longer alone
            (Some("a"), Some("b")), // a cycle
        ]);
        assert!(forest.add(&input));
        let out = rows(&forest.edges(2).unwrap());
        let s = |x: &str| x.to_string();
        assert_eq!(
            out,
            vec![
                (s("c"), Some(s("b"))),
                (s("a"), Some(s("b"))),
                (s("e"), None),
                (s("f"), None),
                (s("g"), Some(s("d"))),
            ]
        );
    }

    #[test]
    fn a_forest_that_outgrows_the_pool_says_so() {
        let pool: Arc<dyn MemoryPool> = Arc::new(GreedyMemoryPool::new(256));
        let mut forest = Forest::new(MemoryConsumer::new("t").register(&pool));
        let ids: Vec<String> = (0..100).map(|i| format!("id-{i}")).collect();
        let pairs: Vec<_> = ids
            .chunks(2)
            .map(|p| (Some(p[0].as_str()), Some(p[1].as_str())))
            .collect();
        assert!(!forest.add(&batch(&pairs)));
        // What it holds is still a correct forest.
        assert_eq!(rows(&forest.edges(1024).unwrap()).len(), 50);
    }
}
