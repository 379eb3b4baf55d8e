//! `resolve_identities(edges, left, right [, previous_mapping])`: connected groups of
//! identifiers (legacy account <-> migrated account <-> email hash ...) each get one shared
//! id. Union-find over interned ids; ids keep the shared id they had in the previous run.

use std::hash::BuildHasher;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, Int64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{plan_err, DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};
use hashbrown::{DefaultHashBuilder, HashTable};

use super::shared_id::{namespace, shared_id_of};
use super::{quote_ident, FunctionDoc};

pub const DOC: FunctionDoc = FunctionDoc {
    name: "resolve_identities",
    kind: "table",
    signature: "resolve_identities('edges_table', 'left_col', 'right_col' [, 'previous_mapping_table']) -> TABLE(id, shared_id, group_size, previous_shared_id)",
    description: "Every connected group of identifiers gets one shared id: shared_id('sluice.identity', smallest id) \
                  for a new group; ids keep their previous shared id (sticky), and when groups merge the smallest \
                  previous shared id wins. previous_shared_id shows what an id had before.",
    example: "SELECT * FROM resolve_identities('account_migrations', 'legacy_account_id', 'account_id')",
};

/// The namespace new groups' shared ids are derived in.
pub const IDENTITY_NAMESPACE: &str = "sluice.identity";

#[derive(Debug, Default)]
pub struct ResolveIdentities;

impl ResolveIdentities {
    pub fn new() -> Self {
        ResolveIdentities
    }
}

fn text_arg(exprs: &[Expr], i: usize, what: &str) -> Result<Option<String>> {
    match exprs.get(i) {
        None => Ok(None),
        Some(Expr::Literal(
            ScalarValue::Utf8(Some(s))
            | ScalarValue::Utf8View(Some(s))
            | ScalarValue::LargeUtf8(Some(s)),
            _,
        )) => Ok(Some(s.clone())),
        Some(other) => {
            plan_err!("resolve_identities: {what} must be a string literal, got {other}")
        }
    }
}

impl TableFunctionImpl for ResolveIdentities {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        if !(3..=4).contains(&exprs.len()) {
            return plan_err!(
                "resolve_identities takes 3 or 4 arguments: resolve_identities('edges_table', 'left_col', 'right_col' [, 'previous_mapping_table'])"
            );
        }
        Ok(identity_table(IdentitySpec {
            edges: text_arg(exprs, 0, "the edges table")?.unwrap_or_default(),
            left: text_arg(exprs, 1, "the left column")?.unwrap_or_default(),
            right: text_arg(exprs, 2, "the right column")?.unwrap_or_default(),
            previous: text_arg(exprs, 3, "the previous mapping table")?,
            plans: None,
        }))
    }
}

/// What a `resolve_identities(...)` table reads, for lineage: the edges table with its two
/// id columns, and the previous mapping table when one was given.
pub struct IdentityInputs {
    pub edges: String,
    pub left: String,
    pub right: String,
    pub previous: Option<String>,
}

/// The inputs of a provider made by `resolve_identities`, or None for any other table.
pub fn identity_inputs(table: &dyn TableProvider) -> Option<IdentityInputs> {
    let spec = &table.downcast_ref::<IdentityTable>()?.spec;
    Some(IdentityInputs {
        edges: spec.edges.clone(),
        left: spec.left.clone(),
        right: spec.right.clone(),
        previous: spec.previous.clone(),
    })
}

pub fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("shared_id", DataType::Utf8, false),
        Field::new("group_size", DataType::Int64, false),
        Field::new("previous_shared_id", DataType::Utf8, true),
    ]))
}

/// What a `resolve_identities(...)` call reads. Inputs are looked up by table name when
/// the plan runs, unless `plans` holds them already resolved: a cluster executor knows only
/// the project's sources, not the client's views and staged models, so the client
/// resolves the names into plans before the query leaves it (see `cluster::planner`).
#[derive(Debug, Clone)]
pub struct IdentitySpec {
    pub edges: String,
    pub left: String,
    pub right: String,
    pub previous: Option<String>,
    pub plans: Option<InputPlans>,
}

/// The inputs as plans of two VARCHAR columns each: (left, right) and (id, shared_id).
#[derive(Debug, Clone)]
pub struct InputPlans {
    pub edges: LogicalPlan,
    pub previous: Option<LogicalPlan>,
}

impl IdentitySpec {
    /// The queries reading the inputs: the edges, then the previous mapping if any.
    pub fn input_queries(&self) -> Vec<String> {
        let mut out = vec![two_columns_sql(&self.edges, &self.left, &self.right)];
        if let Some(previous) = &self.previous {
            out.push(two_columns_sql(previous, "id", "shared_id"));
        }
        out
    }
}

/// The spec of a provider made by `resolve_identities`, or None for any other table.
pub fn identity_spec(table: &dyn TableProvider) -> Option<&IdentitySpec> {
    Some(&table.downcast_ref::<IdentityTable>()?.spec)
}

/// A `resolve_identities` table reading `spec`'s inputs.
pub fn identity_table(spec: IdentitySpec) -> Arc<dyn TableProvider> {
    Arc::new(IdentityTable {
        spec,
        schema: output_schema(),
    })
}

#[derive(Debug)]
struct IdentityTable {
    spec: IdentitySpec,
    schema: SchemaRef,
}

#[async_trait]
impl TableProvider for IdentityTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let session_state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("resolve_identities needs a SessionState".into())
            })?;
        identity_exec(
            self.spec.clone(),
            session_state.clone(),
            projection.map(|p| p.to_vec()),
        )
    }
}

/// The operator resolving the graph when it runs and streaming the mapping out in batches.
/// One partition: union-find needs every edge in one place.
pub struct IdentityExec {
    spec: IdentitySpec,
    state: SessionState,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

pub fn identity_exec(
    spec: IdentitySpec,
    state: SessionState,
    projection: Option<Vec<usize>>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let full = output_schema();
    let schema = match &projection {
        Some(p) => Arc::new(full.project(p)?),
        None => full,
    };
    let properties = PlanProperties::new(
        EquivalenceProperties::new(schema.clone()),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Final,
        Boundedness::Bounded,
    );
    Ok(Arc::new(IdentityExec {
        spec,
        state,
        projection,
        schema,
        properties: Arc::new(properties),
    }))
}

impl IdentityExec {
    pub fn spec(&self) -> &IdentitySpec {
        &self.spec
    }

    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }
}

impl std::fmt::Debug for IdentityExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentityExec")
            .field("spec", &self.spec)
            .field("projection", &self.projection)
            .finish()
    }
}

impl DisplayAs for IdentityExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "IdentityExec: edges={}({}, {})",
            self.spec.edges, self.spec.left, self.spec.right
        )?;
        if let Some(previous) = &self.spec.previous {
            write!(f, ", previous={previous}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for IdentityExec {
    fn name(&self) -> &str {
        "IdentityExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
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
        if !children.is_empty() {
            return datafusion::common::internal_err!("IdentityExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        task: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return datafusion::common::internal_err!("IdentityExec has one partition");
        }
        let ctx = SessionContext::new_with_state(self.state.clone());
        let spec = self.spec.clone();
        let batch_size = task.session_config().batch_size().max(1);
        let projection = self.projection.clone();
        let reservation = MemoryConsumer::new("resolve_identities").register(task.memory_pool());
        let batches = futures::stream::once(async move {
            let resolved = resolve(&ctx, &spec, reservation).await?;
            Ok::<_, DataFusionError>(futures::stream::iter(MappingBatches {
                resolved,
                next: 0,
                batch_size,
            }))
        })
        .try_flatten()
        .map(move |batch| match (&projection, batch) {
            (Some(p), Ok(b)) => Ok(b.project(p)?),
            (_, other) => other,
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            batches,
        )))
    }
}

/// Identifiers interned once into one byte arena; a hash table of indexes finds them.
/// About `len + 20` bytes per distinct id instead of two heap strings.
struct Interner {
    bytes: Vec<u8>,
    ends: Vec<u64>,
    table: HashTable<u32>,
    hasher: DefaultHashBuilder,
}

impl Interner {
    fn new() -> Self {
        Interner {
            bytes: Vec::new(),
            ends: Vec::new(),
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
        }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: u32) -> &str {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        // Only whole `&str`s are ever appended, so every slice is valid UTF-8.
        std::str::from_utf8(&self.bytes[start..self.ends[i] as usize]).unwrap_or_default()
    }

    fn find(&self, id: &str) -> Option<u32> {
        let hash = self.hasher.hash_one(id);
        self.table.find(hash, |&i| self.get(i) == id).copied()
    }

    /// The index of `id`, and whether it was new.
    fn intern(&mut self, id: &str) -> (u32, bool) {
        let hash = self.hasher.hash_one(id);
        let Interner {
            bytes,
            ends,
            table,
            hasher,
        } = self;
        let text = |i: u32| {
            let i = i as usize;
            let start = if i == 0 { 0 } else { ends[i - 1] as usize };
            &bytes[start..ends[i] as usize]
        };
        if let Some(&i) = table.find(hash, |&i| text(i) == id.as_bytes()) {
            return (i, false);
        }
        let i = ends.len() as u32;
        table.insert_unique(hash, i, |&j| {
            let j = j as usize;
            let start = if j == 0 { 0 } else { ends[j - 1] as usize };
            hasher.hash_one(std::str::from_utf8(&bytes[start..ends[j] as usize]).unwrap_or(""))
        });
        bytes.extend_from_slice(id.as_bytes());
        ends.push(bytes.len() as u64);
        (i, true)
    }
}

/// Bytes one distinct id costs: its text, its end offset, its table slot, and the
/// per-id vectors (parent, group size, smallest member, previous id, output order).
fn id_cost(len: usize) -> usize {
    len + 8 + 9 + 5 * 4
}

/// Interned ids and a union-find forest over them.
struct Forest {
    ids: Interner,
    parent: Vec<u32>,
    reservation: MemoryReservation,
}

impl Forest {
    fn intern(&mut self, id: &str) -> Result<u32> {
        if let Some(i) = self.ids.find(id) {
            return Ok(i);
        }
        self.reservation.try_grow(id_cost(id.len())).map_err(|_| {
            DataFusionError::ResourcesExhausted(format!(
                "resolve_identities: {} distinct ids do not fit in the memory limit; raise --memory-limit",
                self.ids.len()
            ))
        })?;
        let (i, _) = self.ids.intern(id);
        self.parent.push(i);
        Ok(i)
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = p;
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra != rb {
            // Keep the smaller index as root: deterministic, and cheap.
            let (lo, hi) = if ra < rb { (ra, rb) } else { (rb, ra) };
            self.parent[hi as usize] = lo;
        }
    }
}

fn two_columns_sql(table: &str, a: &str, b: &str) -> String {
    format!(
        "SELECT CAST({} AS VARCHAR), CAST({} AS VARCHAR) FROM {}",
        quote_ident(a),
        quote_ident(b),
        quote_ident(table)
    )
}

/// Call `f` with every row of columns `a` and `b` of `table`, or of `plan` when the input
/// was resolved beforehand.
async fn two_columns(
    ctx: &SessionContext,
    (table, a, b): (&str, &str, &str),
    plan: Option<&LogicalPlan>,
    mut f: impl FnMut(Option<&str>, Option<&str>) -> Result<()>,
) -> Result<()> {
    let df = match plan {
        Some(plan) => ctx.execute_logical_plan(plan.clone()).await,
        None => ctx.sql(&two_columns_sql(table, a, b)).await,
    };
    let df = df.map_err(|e| {
        DataFusionError::Plan(format!(
            "resolve_identities: cannot read {a}, {b} from `{table}`: {}",
            e.strip_backtrace()
        ))
    })?;
    let mut stream = df.execute_stream().await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let left = datafusion::arrow::compute::cast(batch.column(0), &DataType::Utf8)?;
        let right = datafusion::arrow::compute::cast(batch.column(1), &DataType::Utf8)?;
        let (l, r) = (left.as_string::<i32>(), right.as_string::<i32>());
        for row in 0..batch.num_rows() {
            let lv = l.is_valid(row).then(|| l.value(row));
            let rv = r.is_valid(row).then(|| r.value(row));
            f(lv, rv)?;
        }
    }
    Ok(())
}

const NONE: u32 = u32::MAX;

/// The resolved graph: every id with its group root, and per group the member that names
/// it and the sticky shared id it keeps.
struct Resolved {
    ids: Interner,
    /// Root of each id's group (fully compressed).
    root: Vec<u32>,
    /// Per root: group size.
    size: Vec<u32>,
    /// Per root: the smallest member id (names a new group's shared id).
    smallest: Vec<u32>,
    /// Per id: index of its previous shared id in `previous_ids`, or NONE.
    previous: Vec<u32>,
    /// Per root: the smallest previous shared id of its members, or NONE.
    sticky: Vec<u32>,
    previous_ids: Interner,
    /// Ids in output order (sorted by id).
    order: Vec<u32>,
    _reservation: MemoryReservation,
}

async fn resolve(
    ctx: &SessionContext,
    spec: &IdentitySpec,
    reservation: MemoryReservation,
) -> Result<Resolved> {
    let mut forest = Forest {
        ids: Interner::new(),
        parent: Vec::new(),
        reservation,
    };
    let plans = spec.plans.as_ref();
    let edges = (spec.edges.as_str(), spec.left.as_str(), spec.right.as_str());
    two_columns(ctx, edges, plans.map(|p| &p.edges), |l, r| {
        let li = l
            .filter(|s| !s.is_empty())
            .map(|s| forest.intern(s))
            .transpose()?;
        let ri = r
            .filter(|s| !s.is_empty())
            .map(|s| forest.intern(s))
            .transpose()?;
        if let (Some(a), Some(b)) = (li, ri) {
            forest.union(a, b);
        }
        Ok(())
    })
    .await?;
    let n = forest.ids.len();
    let root: Vec<u32> = (0..n as u32).map(|i| forest.find(i)).collect();
    drop(forest.parent);
    let (ids, reservation) = (forest.ids, forest.reservation);

    // Previous shared ids of ids that are still in the graph.
    let mut previous = vec![NONE; n];
    let mut previous_ids = Interner::new();
    if let Some(prev) = &spec.previous {
        let plan = plans.and_then(|p| p.previous.as_ref());
        two_columns(ctx, (prev, "id", "shared_id"), plan, |id, sid| {
            if let (Some(id), Some(sid)) = (id, sid) {
                if let Some(i) = ids.find(id) {
                    let (p, new) = previous_ids.intern(sid);
                    if new {
                        reservation.try_grow(id_cost(sid.len())).map_err(|_| {
                            DataFusionError::ResourcesExhausted(
                                "resolve_identities: the previous mapping does not fit in the memory limit; raise --memory-limit".into(),
                            )
                        })?;
                    }
                    previous[i as usize] = p;
                }
            }
            Ok(())
        })
        .await?;
    }

    let mut size = vec![0u32; n];
    let mut smallest = vec![NONE; n];
    let mut sticky = vec![NONE; n];
    for i in 0..n {
        let r = root[i] as usize;
        size[r] += 1;
        if smallest[r] == NONE || ids.get(i as u32) < ids.get(smallest[r]) {
            smallest[r] = i as u32;
        }
        let p = previous[i];
        if p != NONE && (sticky[r] == NONE || previous_ids.get(p) < previous_ids.get(sticky[r])) {
            sticky[r] = p;
        }
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_unstable_by(|a, b| ids.get(*a).cmp(ids.get(*b)));
    Ok(Resolved {
        ids,
        root,
        size,
        smallest,
        previous,
        sticky,
        previous_ids,
        order,
        _reservation: reservation,
    })
}

/// The mapping, built one batch at a time as the consumer asks for it.
struct MappingBatches {
    resolved: Resolved,
    next: usize,
    batch_size: usize,
}

impl Iterator for MappingBatches {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Self::Item> {
        let r = &self.resolved;
        let end = (self.next + self.batch_size).min(r.order.len());
        if self.next >= end {
            return None;
        }
        let rows = &r.order[self.next..end];
        self.next = end;
        let ns = namespace(IDENTITY_NAMESPACE);
        let mut ids = StringBuilder::with_capacity(rows.len(), rows.len() * 16);
        let mut sids = StringBuilder::with_capacity(rows.len(), rows.len() * 36);
        let mut sizes = Int64Builder::with_capacity(rows.len());
        let mut prevs = StringBuilder::with_capacity(rows.len(), 0);
        let (mut name_buf, mut uuid_buf) = (String::new(), [0u8; 36]);
        for &i in rows {
            let root = r.root[i as usize] as usize;
            ids.append_value(r.ids.get(i));
            match r.sticky[root] {
                NONE => sids.append_value(shared_id_of(
                    &ns,
                    &[r.ids.get(r.smallest[root])],
                    &mut name_buf,
                    &mut uuid_buf,
                )),
                p => sids.append_value(r.previous_ids.get(p)),
            }
            sizes.append_value(i64::from(r.size[root]));
            match r.previous[i as usize] {
                NONE => prevs.append_null(),
                p => prevs.append_value(r.previous_ids.get(p)),
            }
        }
        Some(
            RecordBatch::try_new(
                output_schema(),
                vec![
                    Arc::new(ids.finish()),
                    Arc::new(sids.finish()),
                    Arc::new(sizes.finish()),
                    Arc::new(prevs.finish()),
                ],
            )
            .map_err(DataFusionError::from),
        )
    }
}
