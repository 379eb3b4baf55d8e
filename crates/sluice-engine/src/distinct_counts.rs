//! `count(DISTINCT x)` beside `count(*)` planned as two group-bys, as DataFusion already
//! plans it beside `sum`, `min` or `max`.
//!
//! DataFusion's `SingleDistinctToGroupBy` turns `SELECT k, count(DISTINCT x), sum(y) ...
//! GROUP BY k` into an inner `GROUP BY k, x` and an outer `GROUP BY k`: both are ordinary
//! hash aggregates that run on every core and spill. A plain `count` beside the distinct
//! one keeps it off that path, so `count(DISTINCT shared_id), count(*) ... GROUP BY day,
//! country, platform` (daily active users and events, the commonest report there is) ran
//! with one hash set of ids per group, which cannot spill: on 92M events under
//! `--memory-limit 4G` its final aggregate asked for 2.5 GB at once and the run failed.
//!
//! [`CountsBesideDistinct`] runs just before that rule and rewrites each plain `count(a)`
//! as `coalesce(sum(CASE WHEN a IS NOT NULL THEN 1 ELSE 0 END), 0)` (`sum(1)` for
//! `count(*)`), in a projection that keeps the aggregate's output names and types, so the
//! aggregate underneath qualifies for the two group-bys.

use std::collections::HashSet;
use std::sync::Arc;

use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, Result, ScalarValue};
use datafusion::functions::core::expr_fn::coalesce;
use datafusion::functions_aggregate::sum::sum_udaf;
use datafusion::logical_expr::expr::AggregateFunction;
use datafusion::logical_expr::{lit, when, Aggregate, Expr, LogicalPlan, Projection};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};

/// The name of DataFusion's rule this one must precede.
pub const BEFORE_RULE: &str = "single_distinct_aggregation_to_group_by";

#[derive(Debug, Default)]
pub struct CountsBesideDistinct;

impl OptimizerRule for CountsBesideDistinct {
    fn name(&self) -> &str {
        "counts_beside_distinct"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(aggregate) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if !qualifies(aggregate) {
            return Ok(Transformed::no(plan));
        }
        let LogicalPlan::Aggregate(aggregate) = plan else {
            unreachable!("matched above")
        };
        rewrite(aggregate).map(Transformed::yes)
    }
}

enum Kind {
    Distinct,
    /// `sum`, `min`, `max`: DataFusion's rule splits these itself.
    Splittable,
    Count,
}

fn kind(expr: &Expr) -> Option<(Kind, &AggregateFunction)> {
    let Expr::AggregateFunction(f) = expr else {
        return None;
    };
    let p = &f.params;
    if p.filter.is_some() || !p.order_by.is_empty() {
        return None;
    }
    let name = f.func.name().to_lowercase();
    Some(match (p.distinct, name.as_str()) {
        (true, _) => (Kind::Distinct, f),
        (false, "sum" | "min" | "max") => (Kind::Splittable, f),
        (false, "count") => (Kind::Count, f),
        _ => return None,
    })
}

/// One distinct argument list, at least one plain count, nothing DataFusion cannot split.
fn qualifies(aggregate: &Aggregate) -> bool {
    if aggregate
        .group_expr
        .iter()
        .any(|e| matches!(e, Expr::GroupingSet(_)))
    {
        return false;
    }
    let mut distinct_args = HashSet::new();
    let mut counts = 0;
    for expr in &aggregate.aggr_expr {
        match kind(expr) {
            None => return false,
            Some((Kind::Distinct, f)) => {
                distinct_args.insert(&f.params.args);
            }
            Some((Kind::Splittable, _)) => {}
            Some((Kind::Count, _)) => counts += 1,
        }
    }
    counts > 0 && distinct_args.len() == 1 && distinct_args.iter().all(|a| a.len() == 1)
}

fn rewrite(aggregate: Aggregate) -> Result<LogicalPlan> {
    let original = aggregate.schema.clone();
    let group_count = aggregate.group_expr.len();
    let mut counted = Vec::with_capacity(aggregate.aggr_expr.len());
    let aggr_expr = aggregate
        .aggr_expr
        .into_iter()
        .map(|expr| match kind(&expr) {
            Some((Kind::Count, f)) => {
                counted.push(true);
                let one = lit(ScalarValue::Int64(Some(1)));
                let zero = lit(ScalarValue::Int64(Some(0)));
                let counted_rows = f
                    .params
                    .args
                    .iter()
                    .filter(|a| !matches!(a, Expr::Literal(v, _) if !v.is_null()))
                    .cloned()
                    .map(|a| a.is_not_null())
                    .reduce(Expr::and);
                let term = match counted_rows {
                    None => one,
                    Some(all_not_null) => when(all_not_null, one).otherwise(zero)?,
                };
                Ok(Expr::AggregateFunction(AggregateFunction::new_udf(
                    sum_udaf(),
                    vec![term],
                    false,
                    None,
                    vec![],
                    None,
                )))
            }
            _ => {
                counted.push(false);
                Ok(expr)
            }
        })
        .collect::<Result<Vec<_>>>()?;
    let inner = Aggregate::try_new(aggregate.input, aggregate.group_expr, aggr_expr)?;
    let inner_schema = inner.schema.clone();
    let exprs = (0..inner_schema.fields().len())
        .map(|i| {
            let column = Expr::Column(Column::from(inner_schema.qualified_field(i)));
            let value = if i >= group_count && counted[i - group_count] {
                coalesce(vec![column, lit(ScalarValue::Int64(Some(0)))])
            } else {
                column
            };
            let (qualifier, field) = original.qualified_field(i);
            value.alias_qualified(qualifier.cloned(), field.name())
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(LogicalPlan::Aggregate(inner)),
    )?))
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::util::pretty::pretty_format_batches;
    use datafusion::prelude::SessionContext;

    use super::*;

    async fn session(with_rule: bool) -> SessionContext {
        let ctx = SessionContext::new();
        if with_rule {
            let state = ctx.state();
            let mut rules = state.optimizers().to_vec();
            let at = rules
                .iter()
                .position(|r| r.name() == BEFORE_RULE)
                .expect("DataFusion's rule");
            rules.insert(at, Arc::new(CountsBesideDistinct));
            let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
                .with_optimizer_rules(rules)
                .build();
            return SessionContext::new_with_state(state);
        }
        ctx
    }

    const DATA: &str = "CREATE TABLE t(day INT, c VARCHAR, id VARCHAR, v INT) AS VALUES \
        (1, 'de', 'a', 1), (1, 'de', 'a', NULL), (1, 'de', 'b', 2), (1, 'de', NULL, 3), \
        (1, 'fr', 'a', 4), (2, 'de', NULL, NULL), (2, 'fr', 'c', 5), (2, 'fr', 'c', 6)";

    async fn run(ctx: &SessionContext, sql: &str) -> (String, String) {
        ctx.sql(DATA).await.unwrap().collect().await.unwrap();
        let df = ctx.sql(sql).await.unwrap();
        let plan = format!(
            "{}",
            df.clone().into_optimized_plan().unwrap().display_indent()
        );
        let rows = pretty_format_batches(&df.collect().await.unwrap())
            .unwrap()
            .to_string();
        (plan, rows)
    }

    #[tokio::test]
    async fn counts_beside_a_distinct_count_give_datafusions_answer_through_two_group_bys() {
        let queries = [
            "SELECT day, c, count(DISTINCT id) AS users, count(*) AS events, count(v) AS vs, sum(v) AS total \
             FROM t GROUP BY day, c ORDER BY day, c",
            "SELECT day + 1, count(DISTINCT id), count(*) FROM t GROUP BY day + 1 ORDER BY 1",
            "SELECT count(DISTINCT id), count(*), count(v) FROM t",
            "SELECT count(DISTINCT id), count(*) FROM t WHERE day > 5",
            "SELECT day, count(DISTINCT id) AS users, count(*) AS events FROM t WHERE day > 5 GROUP BY day",
        ];
        for sql in queries {
            let (plain_plan, expected) = run(&session(false).await, sql).await;
            let (plan, rows) = run(&session(true).await, sql).await;
            assert_eq!(rows, expected, "{sql}");
            assert!(!plain_plan.contains("alias1"), "{plain_plan}");
            // The distinct argument became an inner group key: the two group-bys.
            assert!(plan.contains("alias1"), "{sql}\n{plan}");
        }
    }

    #[tokio::test]
    async fn empty_input_counts_zero() {
        let (_, rows) = run(
            &session(true).await,
            "SELECT count(DISTINCT id) AS users, count(*) AS events, count(v) AS vs FROM t WHERE day > 5",
        )
        .await;
        assert_eq!(
            rows,
            "+-------+--------+----+\n\
             | users | events | vs |\n\
             +-------+--------+----+\n\
             | 0     | 0      | 0  |\n\
             +-------+--------+----+"
        );
    }

    /// Many ids in few groups: DataFusion's one hash set per group cannot spill, the
    /// two group-bys can.
    #[tokio::test]
    async fn many_distinct_ids_in_few_groups_fit_a_small_memory_pool() {
        use datafusion::execution::memory_pool::FairSpillPool;
        use datafusion::execution::runtime_env::RuntimeEnvBuilder;
        let sql = "SELECT g % 2 AS k, count(DISTINCT g / 4) AS users, count(*) AS events \
                   FROM generate_series(1, 4000000) AS t(g) GROUP BY g % 2 ORDER BY k";
        let limited = |ctx: SessionContext| {
            let runtime = RuntimeEnvBuilder::new()
                .with_memory_pool(Arc::new(FairSpillPool::new(24 << 20)))
                .build_arc()
                .unwrap();
            let state = datafusion::execution::SessionStateBuilder::new_from_existing(ctx.state())
                .with_runtime_env(runtime)
                .build();
            SessionContext::new_with_state(state)
        };
        let plain = limited(session(false).await);
        let err = plain.sql(sql).await.unwrap().collect().await.unwrap_err();
        assert!(err.to_string().contains("Resources exhausted"), "{err}");
        let ctx = limited(session(true).await);
        let rows = pretty_format_batches(&ctx.sql(sql).await.unwrap().collect().await.unwrap())
            .unwrap()
            .to_string();
        assert_eq!(
            rows,
            "+---+---------+---------+\n\
             | k | users   | events  |\n\
             +---+---------+---------+\n\
             | 0 | 1000001 | 2000000 |\n\
             | 1 | 1000000 | 2000000 |\n\
             +---+---------+---------+"
        );
    }

    #[tokio::test]
    async fn other_aggregates_keep_datafusions_plan() {
        let sql = "SELECT day, count(DISTINCT id), avg(v) FROM t GROUP BY day ORDER BY day";
        let (expected_plan, expected) = run(&session(false).await, sql).await;
        let (plan, rows) = run(&session(true).await, sql).await;
        assert_eq!(rows, expected);
        assert_eq!(plan, expected_plan);
    }
}
