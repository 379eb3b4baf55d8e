//! `resolve_identities(edges, left, right [, previous_mapping])`: connected groups of
//! identifiers (legacy account <-> migrated account <-> email hash ...) each get one shared
//! id. Union-find over interned ids; ids keep the shared id they had in the previous run.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray, Int64Builder, RecordBatch, StringBuilder};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{plan_err, DataFusionError, ScalarValue};
use datafusion::datasource::{MemTable, TableType};
use datafusion::error::Result;
use datafusion::execution::context::SessionState;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;
use futures::StreamExt;

use super::shared_id::{namespace, shared_id_of};
use super::FunctionDoc;

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

#[derive(Debug)]
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
        let spec = IdentitySpec {
            edges: text_arg(exprs, 0, "the edges table")?.unwrap_or_default(),
            left: text_arg(exprs, 1, "the left column")?.unwrap_or_default(),
            right: text_arg(exprs, 2, "the right column")?.unwrap_or_default(),
            previous: text_arg(exprs, 3, "the previous mapping table")?,
        };
        Ok(Arc::new(IdentityTable {
            spec,
            schema: output_schema(),
        }))
    }
}

pub fn output_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("shared_id", DataType::Utf8, false),
        Field::new("group_size", DataType::Int64, false),
        Field::new("previous_shared_id", DataType::Utf8, true),
    ]))
}

#[derive(Debug, Clone)]
struct IdentitySpec {
    edges: String,
    left: String,
    right: String,
    previous: Option<String>,
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
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let session_state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("resolve_identities needs a SessionState".into())
            })?;
        let ctx = SessionContext::new_with_state(session_state.clone());
        let pool = state.runtime_env().memory_pool.clone();
        let reservation = MemoryConsumer::new("resolve_identities").register(&pool);
        let batch = resolve(&ctx, &self.spec, reservation).await?;
        let table = MemTable::try_new(self.schema.clone(), vec![vec![batch]])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// Interned ids and a union-find forest over them.
struct Forest {
    index: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
    parent: Vec<u32>,
    reservation: MemoryReservation,
}

impl Forest {
    fn intern(&mut self, id: &str) -> Result<u32> {
        if let Some(&i) = self.index.get(id) {
            return Ok(i);
        }
        // Key stored twice (map and names), plus the map slot and the parent entry.
        let cost = 2 * id.len() + 64;
        self.reservation.try_grow(cost).map_err(|_| {
            DataFusionError::ResourcesExhausted(format!(
                "resolve_identities: {} distinct ids do not fit in the memory limit; raise --memory-limit",
                self.names.len()
            ))
        })?;
        let i = self.names.len() as u32;
        let key: Box<str> = id.into();
        self.index.insert(key.clone(), i);
        self.names.push(key);
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

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

async fn two_columns(
    ctx: &SessionContext,
    table: &str,
    a: &str,
    b: &str,
    mut f: impl FnMut(Option<&str>, Option<&str>) -> Result<()>,
) -> Result<()> {
    let sql = format!(
        "SELECT CAST({} AS VARCHAR), CAST({} AS VARCHAR) FROM {}",
        quote(a),
        quote(b),
        quote(table)
    );
    let df = ctx.sql(&sql).await.map_err(|e| {
        DataFusionError::Plan(format!(
            "resolve_identities: cannot read {a}, {b} from `{table}`: {}",
            crate::error::describe_datafusion_error(&e)
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

async fn resolve(
    ctx: &SessionContext,
    spec: &IdentitySpec,
    reservation: MemoryReservation,
) -> Result<RecordBatch> {
    let mut forest = Forest {
        index: HashMap::new(),
        names: Vec::new(),
        parent: Vec::new(),
        reservation,
    };
    two_columns(ctx, &spec.edges, &spec.left, &spec.right, |l, r| {
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

    // Previous shared ids of ids that are still in the graph.
    let mut previous: HashMap<u32, String> = HashMap::new();
    if let Some(prev) = &spec.previous {
        two_columns(ctx, prev, "id", "shared_id", |id, sid| {
            if let (Some(id), Some(sid)) = (id, sid) {
                if let Some(&i) = forest.index.get(id) {
                    previous.insert(i, sid.to_string());
                }
            }
            Ok(())
        })
        .await?;
    }

    let n = forest.names.len();
    let roots: Vec<u32> = (0..n as u32).map(|i| forest.find(i)).collect();
    // Per group: size, smallest id, smallest previous shared id.
    let mut size = vec![0i64; n];
    let mut smallest: Vec<Option<u32>> = vec![None; n];
    let mut sticky: Vec<Option<&str>> = vec![None; n];
    for (i, &root) in roots.iter().enumerate() {
        let r = root as usize;
        size[r] += 1;
        let name = &forest.names[i];
        if smallest[r]
            .map(|s| name.as_ref() < forest.names[s as usize].as_ref())
            .unwrap_or(true)
        {
            smallest[r] = Some(i as u32);
        }
        if let Some(p) = previous.get(&(i as u32)) {
            if sticky[r].map(|s| p.as_str() < s).unwrap_or(true) {
                sticky[r] = Some(p.as_str());
            }
        }
    }
    let ns = namespace(IDENTITY_NAMESPACE);
    let mut group_id: Vec<Option<String>> = vec![None; n];
    let (mut name_buf, mut uuid_buf) = (String::new(), [0u8; 36]);
    for r in 0..n {
        if size[r] == 0 {
            continue;
        }
        group_id[r] = Some(match sticky[r] {
            Some(s) => s.to_string(),
            None => {
                let key = &forest.names[smallest[r].unwrap_or(r as u32) as usize];
                shared_id_of(&ns, &[key], &mut name_buf, &mut uuid_buf).to_string()
            }
        });
    }
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.sort_by(|a, b| forest.names[*a as usize].cmp(&forest.names[*b as usize]));
    let mut ids = StringBuilder::with_capacity(n, n * 16);
    let mut sids = StringBuilder::with_capacity(n, n * 36);
    let mut sizes = Int64Builder::with_capacity(n);
    let mut prevs = StringBuilder::with_capacity(n, 0);
    for i in order {
        let r = roots[i as usize] as usize;
        ids.append_value(&forest.names[i as usize]);
        sids.append_value(group_id[r].as_deref().unwrap_or_default());
        sizes.append_value(size[r]);
        prevs.append_option(previous.get(&i));
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
    Ok(batch)
}
