//! `resolve_identities(edges, left, right [, previous_mapping])`: connected groups of
//! identifiers (legacy account <-> migrated account <-> email hash ...) each get one shared
//! id; ids keep the shared id they had in the previous run. The graph is partitioned into
//! buckets that spill to disk (`store.rs`), resolved by union-find over numbered ids
//! (`resolve.rs`) and written out in id order (`mapping.rs`).

mod forest;
mod mapping;
mod resolve;
mod store;

pub use forest::IdentityForestExec;

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{plan_err, DataFusionError, ScalarValue};
use datafusion::datasource::TableType;
use datafusion::error::Result;
use datafusion::execution::context::SessionState;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, ExecutionPlanProperties,
    Partitioning, PlanProperties,
};
use datafusion::physical_planner::{DefaultPhysicalPlanner, PhysicalPlanner};
use datafusion::prelude::SessionContext;
use futures::{StreamExt, TryStreamExt};

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
        // With plans, this is a cluster's scheduler planning: the edges are read and
        // contracted on the executors, partition by partition, before the one operator
        // that must see the whole graph.
        let edges = match &self.spec.plans {
            Some(plans) => {
                let edges = DefaultPhysicalPlanner::default()
                    .create_physical_plan(&plans.edges, session_state)
                    .await?;
                let forest: Arc<dyn ExecutionPlan> = Arc::new(IdentityForestExec::new(edges));
                Some(match forest.output_partitioning().partition_count() {
                    1 => forest,
                    _ => Arc::new(CoalescePartitionsExec::new(forest)) as Arc<dyn ExecutionPlan>,
                })
            }
            None => None,
        };
        identity_exec(
            self.spec.clone(),
            session_state.clone(),
            projection.map(|p| p.to_vec()),
            edges,
        )
    }
}

/// The operator resolving the graph when it runs and streaming the mapping out in batches.
/// One partition: union-find needs every edge in one place. It reads the edges itself, or
/// on a cluster from its child (one partition of the executors' contracted edges).
pub struct IdentityExec {
    spec: IdentitySpec,
    edges: Option<Arc<dyn ExecutionPlan>>,
    state: SessionState,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

pub fn identity_exec(
    spec: IdentitySpec,
    state: SessionState,
    projection: Option<Vec<usize>>,
    edges: Option<Arc<dyn ExecutionPlan>>,
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
        edges,
        state,
        projection,
        schema,
        properties: Arc::new(properties),
        metrics: ExecutionPlanMetricsSet::new(),
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
        self.edges.iter().collect()
    }

    fn required_input_distribution(&self) -> Vec<Distribution> {
        vec![Distribution::SinglePartition; self.edges.iter().count()]
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
        if children.len() != self.edges.iter().count() {
            return datafusion::common::internal_err!(
                "IdentityExec has {} children, got {}",
                self.edges.iter().count(),
                children.len()
            );
        }
        identity_exec(
            self.spec.clone(),
            self.state.clone(),
            self.projection.clone(),
            children.into_iter().next(),
        )
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
        let edges = match &self.edges {
            Some(child) => Some(child.execute(0, task.clone())?),
            None => None,
        };
        let batch_size = task.session_config().batch_size().max(1);
        let projection = self.projection.clone();
        let counter = |name: &'static str| MetricBuilder::new(&self.metrics).counter(name, 0);
        let metrics = resolve::Metrics {
            edges: counter("edges"),
            ids: counter("ids"),
            groups: counter("groups"),
            spilled_bytes: MetricBuilder::new(&self.metrics).spilled_bytes(0),
            spill_count: MetricBuilder::new(&self.metrics).spill_count(0),
        };
        let batches = futures::stream::once(async move {
            let resolved = resolve::resolve(
                resolve::Inputs {
                    ctx: &ctx,
                    spec: &spec,
                    pool: task.memory_pool(),
                    disk: task.runtime_env().disk_manager.clone(),
                    metrics: &metrics,
                },
                edges,
            )
            .await?;
            let mapping = mapping::MappingBatches::new(resolved, batch_size)?;
            Ok::<_, DataFusionError>(futures::stream::iter(mapping))
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

fn two_columns_sql(table: &str, a: &str, b: &str) -> String {
    format!(
        "SELECT CAST({} AS VARCHAR), CAST({} AS VARCHAR) FROM {}",
        quote_ident(a),
        quote_ident(b),
        quote_ident(table)
    )
}

/// Where a two-column input of `resolve_identities` is read from.
pub(super) enum Source<'a> {
    /// The table, by name, in the operator's own session.
    Table,
    /// A plan the cluster client resolved the name into.
    Plan(&'a LogicalPlan),
    /// The operator's child: the edges contracted by the executors (`forest.rs`).
    Stream(SendableRecordBatchStream),
}

/// Call `f` with every row of columns `a` and `b` of `table`, read from `source`.
async fn two_columns(
    ctx: &SessionContext,
    (table, a, b): (&str, &str, &str),
    source: Source<'_>,
    mut f: impl FnMut(Option<&str>, Option<&str>) -> Result<()>,
) -> Result<()> {
    let df = match source {
        Source::Stream(stream) => return each_pair(stream, f).await,
        Source::Plan(plan) => ctx.execute_logical_plan(plan.clone()).await,
        Source::Table => ctx.sql(&two_columns_sql(table, a, b)).await,
    };
    let df = df.map_err(|e| {
        DataFusionError::Plan(format!(
            "resolve_identities: cannot read {a}, {b} from `{table}`: {}",
            e.strip_backtrace()
        ))
    })?;
    each_pair(df.execute_stream().await?, &mut f).await
}

async fn each_pair(
    mut stream: SendableRecordBatchStream,
    mut f: impl FnMut(Option<&str>, Option<&str>) -> Result<()>,
) -> Result<()> {
    while let Some(batch) = stream.next().await {
        let batch = forest::utf8_pair(&batch?)?;
        let (l, r) = (
            batch.column(0).as_string::<i32>(),
            batch.column(1).as_string::<i32>(),
        );
        for row in 0..batch.num_rows() {
            let lv = l.is_valid(row).then(|| l.value(row));
            let rv = r.is_valid(row).then(|| r.value(row));
            f(lv, rv)?;
        }
    }
    Ok(())
}
