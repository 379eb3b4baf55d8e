//! Which output columns of a model hold personal data: those its config marks
//! `pii = true`, those computed, through any number of steps, by a function that
//! pseudonymises personal data (`hash_pii`, `hmac_sha256`), and those read from an upstream
//! model's personal columns. A Delta output keeps their values out of its log's
//! statistics, where any reader of the log would find them.

use std::collections::{HashMap, HashSet};

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::logical_expr::{Expr, LogicalPlan};
use datafusion::prelude::SessionContext;

use super::model::Model;
use super::ProjectPlan;

/// The personal columns of model `i`, whose query plans as `query`: its upstream models'
/// are found first (in build order, each from its own SQL) and carried by name.
pub(crate) async fn personal_columns_in_project(
    ctx: &SessionContext,
    plan: &ProjectPlan,
    i: usize,
    query: &LogicalPlan,
) -> Vec<String> {
    let mut ancestors = HashSet::new();
    let mut stack = plan.planned[i].deps.clone();
    while let Some(j) = stack.pop() {
        if ancestors.insert(j) {
            stack.extend(plan.planned[j].deps.iter().copied());
        }
    }
    let mut found: HashMap<usize, Vec<String>> = HashMap::new();
    for &j in plan.order.iter().filter(|j| ancestors.contains(j)) {
        let inherited = inherited(plan, j, &found);
        // An upstream model that cannot be planned now adds nothing it could name.
        if let Ok(df) = ctx.sql(&plan.planned[j].sql).await {
            found.insert(
                j,
                personal_columns(&plan.planned[j].model, df.logical_plan(), &inherited),
            );
        }
    }
    personal_columns(&plan.planned[i].model, query, &inherited(plan, i, &found))
}

fn inherited(plan: &ProjectPlan, i: usize, found: &HashMap<usize, Vec<String>>) -> Vec<String> {
    plan.planned[i]
        .deps
        .iter()
        .filter_map(|j| found.get(j))
        .flatten()
        .cloned()
        .collect()
}

const PSEUDONYMISING: [&str; 2] = ["hash_pii", "hmac_sha256"];

/// The model's output columns that hold personal data, in output order; `inherited`: the
/// personal column names of the tables it reads.
pub(crate) fn personal_columns(m: &Model, plan: &LogicalPlan, inherited: &[String]) -> Vec<String> {
    let mut tainted: HashSet<String> = m.pii_columns.iter().chain(inherited).cloned().collect();
    // A name is tainted when an expression computing it calls a pseudonymising function
    // or reads a tainted name; repeat until nothing changes (each round follows one more
    // step of subqueries and CTEs).
    loop {
        let before = tainted.len();
        let _ = plan.apply(|node| {
            let exprs = node.expressions();
            let fields = node.schema().fields();
            // Projections and aggregates produce one output column per expression; other
            // nodes pass their input's names through.
            let outputs = match node {
                LogicalPlan::Projection(_) | LogicalPlan::Aggregate(_) => fields.iter().collect(),
                LogicalPlan::Window(w) => fields
                    .iter()
                    .skip(w.input.schema().fields().len())
                    .collect(),
                _ => Vec::new(),
            };
            if outputs.len() == exprs.len() {
                for (expr, field) in exprs.iter().zip(outputs) {
                    if is_tainted(expr, &tainted) {
                        tainted.insert(field.name().clone());
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        if tainted.len() == before {
            break;
        }
    }
    plan.schema()
        .fields()
        .iter()
        .filter(|f| tainted.contains(f.name()))
        .map(|f| f.name().clone())
        .collect()
}

fn is_tainted(expr: &Expr, tainted: &HashSet<String>) -> bool {
    expr.exists(|e| {
        Ok(match e {
            Expr::ScalarFunction(f) => PSEUDONYMISING.contains(&f.name()),
            Expr::Column(c) => tainted.contains(&c.name),
            _ => false,
        })
    })
    .unwrap_or(true)
}
