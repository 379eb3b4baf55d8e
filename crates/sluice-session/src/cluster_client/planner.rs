//! The client's query planner on a cluster: it resolves what only the client knows into
//! the plan before Ballista's planner sends it off.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::execution::context::{QueryPlanner, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use crate::functions::identity::{identity_spec, identity_table, InputPlans};

/// Wraps Ballista's planner. `resolve_identities('edges', ...)` names a table that may be
/// a view or a model of this run, which executors cannot look up: the names are planned
/// here, on the client, and the plans travel inside the table (see `codec`).
#[derive(Debug)]
pub struct ClusterPlanner {
    pub inner: Arc<dyn QueryPlanner + Send + Sync>,
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        logical_plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = session
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("cluster planning needs a SessionState".into())
            })?;
        let plan = resolve_identity_inputs(logical_plan, state).await?;
        self.inner.create_physical_plan(&plan, session).await
    }
}

/// `plan` with every `resolve_identities` scan carrying its input plans.
async fn resolve_identity_inputs(plan: &LogicalPlan, state: &SessionState) -> Result<LogicalPlan> {
    // Collect first (planning the inputs is async), then rewrite.
    let mut wanted: Vec<Vec<String>> = Vec::new();
    plan.apply_with_subqueries(|node| {
        if let LogicalPlan::TableScan(scan) = node {
            if let Ok(provider) = source_as_provider(&scan.source) {
                if let Some(spec) = identity_spec(provider.as_ref()) {
                    if spec.plans.is_none() {
                        wanted.push(spec.input_queries());
                    }
                }
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    if wanted.is_empty() {
        return Ok(plan.clone());
    }
    let ctx = SessionContext::new_with_state(state.clone());
    let mut planned: HashMap<Vec<String>, InputPlans> = HashMap::new();
    for queries in wanted {
        if planned.contains_key(&queries) {
            continue;
        }
        let mut plans = Vec::with_capacity(queries.len());
        for sql in &queries {
            plans.push(ctx.sql(sql).await?.into_optimized_plan()?);
        }
        let mut plans = plans.into_iter();
        let (Some(edges), previous) = (plans.next(), plans.next()) else {
            return Err(DataFusionError::Internal(
                "resolve_identities without edges".into(),
            ));
        };
        planned.insert(queries, InputPlans { edges, previous });
    }
    plan.clone()
        .transform_up_with_subqueries(|node| {
            let LogicalPlan::TableScan(mut scan) = node else {
                return Ok(Transformed::no(node));
            };
            let provider = match source_as_provider(&scan.source) {
                Ok(p) => p,
                Err(_) => return Ok(Transformed::no(LogicalPlan::TableScan(scan))),
            };
            let Some(spec) = identity_spec(provider.as_ref()).filter(|s| s.plans.is_none()) else {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            };
            let mut spec = spec.clone();
            spec.plans = planned.get(&spec.input_queries()).cloned();
            scan.source = provider_as_source(identity_table(spec));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        })
        .map(|t| t.data)
}
