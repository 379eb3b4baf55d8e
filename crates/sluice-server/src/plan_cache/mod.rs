//! Plans a connection runs again. A query sent again with other values in its comparisons
//! (the simple protocol) or other parameters (the extended protocol) runs the physical plan
//! made the first time, with the values bound into it, instead of being planned anew:
//! planning is most of a point lookup's cost. Only queries that read sources held in memory
//! (or no table at all) and call no function whose answer may change between runs (`now()`,
//! `random()`) are kept; the held copies are checked current before every run. A
//! connection's `SET`, `RESET` and catalog changes empty its cache.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::{DefaultTableSource, MemTable};
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::{
    ColumnarValue, Expr, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    Volatility,
};
use datafusion::physical_plan::execution_plan::reset_plan_states;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use futures::Stream;
use sluice_core::sources::CachedTable;

use crate::statement::Statements;
use crate::statement_kind::{kind_of, Kind};

mod lift;
pub use lift::lift_literals;

/// Shapes a connection keeps; past this the cache starts over.
const SHAPES_PER_CONNECTION: usize = 256;

#[derive(Default)]
pub struct PlanCache {
    shapes: Mutex<HashMap<String, Shape>>,
    /// `CachedTable::copies_replaced()` when the kept plans were last looked over.
    copies_replaced: AtomicU64,
}

#[derive(Clone)]
enum Shape {
    /// Planned every time: it reads something not held in memory, calls a function whose
    /// answer may change, is not a query, or its parameters' types are not known.
    Planned,
    Reused(Arc<Reusable>),
}

impl PlanCache {
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Shape>> {
        self.shapes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reusable plan kept for a statement's text, if any.
    pub fn reusable(&self, text: &str) -> Option<Arc<Reusable>> {
        match self.known(text)? {
            Shape::Reused(r) => Some(r),
            Shape::Planned => None,
        }
    }

    fn known(&self, text: &str) -> Option<Shape> {
        let replaced = CachedTable::copies_replaced();
        if self.copies_replaced.swap(replaced, Ordering::Relaxed) != replaced {
            // A source was read anew: drop the physical plans over its old copy now rather
            // than when their shape comes again, so the old copy's memory goes.
            for shape in self.lock().values() {
                if let Shape::Reused(r) = shape {
                    r.forget_stale_plan();
                }
            }
        }
        match self.lock().get(text)? {
            Shape::Reused(r) if r.given_up.load(Ordering::Relaxed) => Some(Shape::Planned),
            shape => Some(shape.clone()),
        }
    }

    /// Keep what planning a statement's text gave, for the next statement of that text.
    pub fn remember(&self, text: String, plan: &LogicalPlan) -> Option<Arc<Reusable>> {
        let shape = match Reusable::new(plan) {
            Some(r) => Shape::Reused(Arc::new(r)),
            None => Shape::Planned,
        };
        self.keep(text, shape.clone());
        match shape {
            Shape::Reused(r) => Some(r),
            Shape::Planned => None,
        }
    }

    fn keep(&self, text: String, shape: Shape) {
        let mut shapes = self.lock();
        if shapes.len() >= SHAPES_PER_CONNECTION {
            shapes.clear();
        }
        shapes.insert(text, shape);
    }

    /// A simple-protocol query: the reusable plan of its shape (its comparisons' literal
    /// operands made parameters), planned now if the shape is new, and the literals' values.
    pub async fn for_query(
        &self,
        session: &SessionContext,
        statement: &Statement,
    ) -> Option<(Arc<Reusable>, Vec<ScalarValue>)> {
        let (shape, values) = lift_literals(statement)?;
        let text = shape.to_string();
        let reusable = match self.known(&text) {
            Some(Shape::Planned) => return None,
            Some(Shape::Reused(r)) => r,
            None => {
                let planned = session
                    .state()
                    .statement_to_plan(DfStatement::Statement(Box::new(shape)))
                    .await;
                match planned {
                    Ok(plan) => self.remember(text, &plan)?,
                    Err(_) => {
                        // The literal form is planned as usual (and reports its own errors).
                        self.keep(text, Shape::Planned);
                        return None;
                    }
                }
            }
        };
        Some((reusable, values))
    }
}

/// A query's plan with its parameters, the physical plan made at its first run.
pub struct Reusable {
    logical: LogicalPlan,
    /// `$1`, `$2`, ... in order, each with the slot its value is bound into.
    params: Vec<Arc<Param>>,
    physical: Mutex<Option<Arc<Physical>>>,
    /// One run at a time: the slots and the statement's memory pool are the run's own.
    busy: Arc<AtomicBool>,
    /// It reads something not held in memory (or could not be planned with its parameters):
    /// planned every time from now on.
    given_up: AtomicBool,
}

struct Physical {
    plan: Arc<dyn ExecutionPlan>,
    /// The held copy of each source the plan reads: the plan is current while they are.
    reads: Vec<(Arc<dyn TableProvider>, Arc<MemTable>)>,
    state: SessionState,
    task: Arc<datafusion::execution::TaskContext>,
}

impl Reusable {
    fn new(plan: &LogicalPlan) -> Option<Reusable> {
        if !matches!(kind_of(plan), Kind::Query)
            || matches!(
                plan,
                LogicalPlan::Explain(_)
                    | LogicalPlan::Analyze(_)
                    | LogicalPlan::DescribeTable(_)
                    | LogicalPlan::Extension(_)
            )
            || !answers_alike_every_run(plan)
        {
            return None;
        }
        let types = plan.get_parameter_types().ok()?;
        let mut params = Vec::with_capacity(types.len());
        for n in 1..=types.len() {
            let data_type = types.get(&format!("${n}"))?.clone()?;
            params.push(Arc::new(Param {
                id: format!("${n}"),
                value: Mutex::new(ScalarValue::try_from(&data_type).ok()?),
                signature: Signature::nullary(Volatility::Volatile),
                data_type,
            }));
        }
        Some(Reusable {
            logical: plan.clone(),
            params,
            physical: Mutex::new(None),
            busy: Arc::new(AtomicBool::new(false)),
            given_up: AtomicBool::new(false),
        })
    }

    fn forget_stale_plan(&self) {
        let mut physical = lock(&self.physical);
        let stale = physical.as_ref().is_some_and(|p| {
            p.reads.iter().any(|(provider, copy)| {
                provider
                    .downcast_ref::<CachedTable>()
                    .is_none_or(|t| !t.still_holds(copy))
            })
        });
        if stale {
            *physical = None;
        }
    }

    /// The statement as planned from its text, with its parameters.
    pub fn logical(&self) -> &LogicalPlan {
        &self.logical
    }

    /// Run with these values bound to the parameters. None: run it the usual way instead
    /// (another run of this plan is still streaming, a value is not one the parameter's type
    /// holds exactly, or the plan reads something not held in memory).
    pub async fn run(
        &self,
        session: &SessionContext,
        statements: &Statements,
        values: Vec<ScalarValue>,
    ) -> Option<Result<(SendableRecordBatchStream, bool)>> {
        let bound = self.bind(values)?;
        if self.busy.swap(true, Ordering::Acquire) {
            return None;
        }
        let busy = Busy(self.busy.clone());
        let kept = lock(&self.physical).clone();
        let (physical, reused) = match kept {
            Some(p) if p.current().await => (p, true),
            _ => match self.plan(session, statements).await {
                Some(p) => {
                    *lock(&self.physical) = Some(p.clone());
                    (p, false)
                }
                None => {
                    self.given_up.store(true, Ordering::Relaxed);
                    return None;
                }
            },
        };
        for (param, value) in self.params.iter().zip(bound) {
            *lock(&param.value) = value;
        }
        let started = reset_plan_states(physical.plan.clone())
            .and_then(|plan| execute_stream(plan, physical.task.clone()));
        Some(started.map(|rows| {
            let schema = rows.schema();
            let rows: SendableRecordBatchStream = Box::pin(Releasing {
                rows,
                schema,
                _busy: busy,
            });
            (rows, reused)
        }))
    }

    /// The values as the parameters' types, when each converts without loss (and as the
    /// statement with the literal in place would have compared it).
    fn bind(&self, values: Vec<ScalarValue>) -> Option<Vec<ScalarValue>> {
        if values.len() != self.params.len() {
            return None;
        }
        self.params
            .iter()
            .zip(values)
            .map(|(param, value)| exactly_as(value, &param.data_type))
            .collect()
    }

    /// The physical plan, its parameters as slots; None when it reads something not held in
    /// memory or cannot be planned this way.
    async fn plan(
        &self,
        session: &SessionContext,
        statements: &Statements,
    ) -> Option<Arc<Physical>> {
        let mut state = session.state();
        // Dynamic filters are written into the plan while it runs: a plan run again must not
        // start with the last run's.
        state
            .config_mut()
            .options_mut()
            .optimizer
            .enable_dynamic_filter_pushdown = false;
        let optimized = state.optimize(&self.logical).ok()?;
        let reads = held_copies(&optimized, &state).await?;
        let with_slots = optimized
            .transform_up_with_subqueries(|node| {
                node.map_expressions(|e| {
                    e.transform_up(|e| match e {
                        Expr::Placeholder(p) => match self.params.iter().find(|s| s.id == p.id) {
                            Some(param) => Ok(Transformed::yes(
                                ScalarUDF::new_from_shared_impl(param.clone()).call(vec![]),
                            )),
                            None => Ok(Transformed::no(Expr::Placeholder(p))),
                        },
                        e => Ok(Transformed::no(e)),
                    })
                })
            })
            .ok()?
            .data;
        let plan = state
            .query_planner()
            .create_physical_plan(&with_slots, &state)
            .await
            .ok()?;
        let task = statements.statement_task(&state);
        // `reads` were taken before the scans: a source read again meanwhile leaves the plan
        // over a newer copy than recorded, which the check before its next run finds.
        Some(Arc::new(Physical {
            plan,
            reads,
            state,
            task,
        }))
    }
}

impl Physical {
    async fn current(&self) -> bool {
        for (provider, copy) in &self.reads {
            let Some(table) = provider.downcast_ref::<CachedTable>() else {
                return false;
            };
            match table.held_copy(&self.state).await {
                Ok(Some(now)) if Arc::ptr_eq(&now, copy) => {}
                _ => return false,
            }
        }
        true
    }
}

/// The held copy of every table the optimised plan reads; None if one is not held.
async fn held_copies(
    plan: &LogicalPlan,
    state: &SessionState,
) -> Option<Vec<(Arc<dyn TableProvider>, Arc<MemTable>)>> {
    let mut providers = Vec::new();
    let mut all_held = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            let provider = scan
                .source
                .downcast_ref::<DefaultTableSource>()
                .map(|s| s.table_provider.clone())
                .filter(|p| p.is::<CachedTable>());
            match provider {
                Some(p) => providers.push(p),
                None => {
                    all_held = false;
                    return Ok(TreeNodeRecursion::Stop);
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if !all_held {
        return None;
    }
    let mut reads = Vec::with_capacity(providers.len());
    for provider in providers {
        let table = provider.downcast_ref::<CachedTable>()?;
        let copy = table.held_copy(state).await.ok()??;
        reads.push((provider, copy));
    }
    Some(reads)
}

/// No function whose answer may differ between two runs of one plan (`now()` is folded into
/// the plan when it is made, `random()` and the like), here or in a view the query reads.
fn answers_alike_every_run(plan: &LogicalPlan) -> bool {
    let mut alike = true;
    let _ = plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Some(view) = scan.source.get_logical_plan() {
                alike &= answers_alike_every_run(&view);
            }
        }
        node.apply_expressions(|e| {
            e.apply(|e| {
                if let Expr::ScalarFunction(f) = e {
                    if f.func.signature().volatility != Volatility::Immutable {
                        alike = false;
                    }
                }
                Ok(if alike {
                    TreeNodeRecursion::Continue
                } else {
                    TreeNodeRecursion::Stop
                })
            })
        })?;
        Ok(if alike {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    alike
}

/// `value` as `data_type` when the statement with the literal in place would have compared
/// the same value: the same type, a wider or narrower type that holds it exactly, text for a
/// text column, or text for a date or time column (which DataFusion casts the same way).
fn exactly_as(value: ScalarValue, data_type: &DataType) -> Option<ScalarValue> {
    let from = value.data_type();
    if &from == data_type {
        return Some(value);
    }
    let is_text =
        |t: &DataType| matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8);
    let cast = value.cast_to(data_type).ok()?;
    if is_text(&from) && (is_text(data_type) || data_type.is_temporal()) {
        return Some(cast);
    }
    let numeric = |t: &DataType| t.is_integer() || t.is_floating() || t.is_decimal();
    if numeric(&from) && numeric(data_type) && cast.cast_to(&from).ok()? == value {
        return Some(cast);
    }
    None
}

/// A parameter of a kept plan: a function of no arguments that answers the value bound for
/// the current run. Volatile, so that nothing folds it into the plan.
#[derive(Debug)]
struct Param {
    id: String,
    data_type: DataType,
    value: Mutex<ScalarValue>,
    signature: Signature,
}

impl PartialEq for Param {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Eq for Param {}

impl Hash for Param {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::ptr::hash(self, state)
    }
}

impl ScalarUDFImpl for Param {
    fn name(&self) -> &str {
        &self.id
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.data_type.clone())
    }

    fn invoke_with_args(&self, _: ScalarFunctionArgs) -> Result<ColumnarValue> {
        Ok(ColumnarValue::Scalar(lock(&self.value).clone()))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Frees the plan for its next run when the rows have been sent (or the client went away).
struct Busy(Arc<AtomicBool>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

struct Releasing {
    rows: SendableRecordBatchStream,
    schema: SchemaRef,
    // Dropped after `rows`: the run's operators are gone before the plan is run again.
    _busy: Busy,
}

impl Stream for Releasing {
    type Item = Result<datafusion::arrow::record_batch::RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rows.as_mut().poll_next(cx)
    }
}

impl RecordBatchStream for Releasing {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_bind_only_when_they_compare_as_the_literal_would() {
        let int = |n: i64| ScalarValue::Int64(Some(n));
        let text = |s: &str| ScalarValue::Utf8(Some(s.into()));
        assert_eq!(exactly_as(int(7), &DataType::Int64), Some(int(7)));
        assert_eq!(
            exactly_as(int(7), &DataType::Int32),
            Some(ScalarValue::Int32(Some(7)))
        );
        assert_eq!(exactly_as(int(1 << 40), &DataType::Int32), None);
        assert_eq!(
            exactly_as(int(1), &DataType::Decimal128(10, 2)),
            Some(ScalarValue::Decimal128(Some(100), 10, 2))
        );
        assert_eq!(
            exactly_as(text("ann"), &DataType::Utf8View),
            Some(ScalarValue::Utf8View(Some("ann".into())))
        );
        assert_eq!(
            exactly_as(text("2026-05-02"), &DataType::Date32),
            Some(ScalarValue::Date32(Some(20575)))
        );
        // Text against a number, a number against text: DataFusion compares those by its own
        // coercion, so they are planned as written.
        assert_eq!(exactly_as(text("2"), &DataType::Int64), None);
        assert_eq!(exactly_as(int(2), &DataType::Utf8View), None);
    }
}
