//! Which input columns feed each output column of a logical plan: any use of them
//! (`Mode::All`, for lineage), or carrying their values (`Mode::Raw`, for the personal
//! data policy of `run` and of `serve`). Views are followed into their own plans; a table
//! whose columns come from elsewhere (a table function's inputs) says so through `scans`.

use std::any::Any;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::DFSchema;
use datafusion::datasource::{source_as_provider, ViewTable};
use datafusion::logical_expr::{Distinct, Expr, JoinType, LogicalPlan, TableScan};

/// The source columns (`table.column`) behind each output column of a plan.
pub type Feeds = Vec<BTreeSet<String>>;

/// What feeding a column means: any use of an input column (`All`, lineage), or carrying
/// its value (`Raw`: not through a pseudonymising function, not inside a count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    All,
    Raw,
}

/// Functions whose result no longer reveals their input: hashes of personal data.
pub const PSEUDONYMISING: [&str; 6] = [
    "hash_pii",
    "hmac_sha256",
    "sha256_hex",
    "sha2",
    "sha256",
    "sha512",
];
/// Aggregates whose result is a count of their input's values.
const COUNTING: [&str; 2] = ["count", "approx_distinct"];

/// Feeds of a scan whose table computes its columns from other tables; None for a table.
pub type ScanFeeds<'a> = &'a dyn Fn(&TableScan) -> Option<Feeds>;

/// Follows a plan's columns back to the `table.column`s that feed them.
pub struct Tracer<'a> {
    pub mode: Mode,
    pub scans: ScanFeeds<'a>,
}

impl Tracer<'_> {
    /// Which `table.column`s each output column of `plan` is computed from.
    pub fn trace(&self, plan: &LogicalPlan) -> Feeds {
        match plan {
            LogicalPlan::TableScan(scan) => {
                if let Some(feeds) = (self.scans)(scan) {
                    return feeds;
                }
                // A view reads its own plan: follow it by column name.
                if let Some(view) = source_as_provider(&scan.source)
                    .ok()
                    .and_then(|p| Arc::downcast::<ViewTable>(p as Arc<dyn Any + Send + Sync>).ok())
                    .map(|v| v.logical_plan().clone())
                {
                    let inner = self.trace(&view);
                    return scan
                        .projected_schema
                        .fields()
                        .iter()
                        .map(|f| {
                            view.schema()
                                .index_of_column_by_name(None, f.name())
                                .and_then(|k| inner.get(k).cloned())
                                .unwrap_or_default()
                        })
                        .collect();
                }
                let table = scan.table_name.table();
                scan.projected_schema
                    .fields()
                    .iter()
                    .map(|f| BTreeSet::from([format!("{table}.{}", f.name())]))
                    .collect()
            }
            LogicalPlan::Projection(p) => {
                let input = self.trace(&p.input);
                p.expr
                    .iter()
                    .map(|e| self.expr_feeds(e, p.input.schema(), &input))
                    .collect()
            }
            LogicalPlan::Aggregate(a) => {
                let input = self.trace(&a.input);
                let out: Feeds = a
                    .group_expr
                    .iter()
                    .chain(&a.aggr_expr)
                    .map(|e| self.expr_feeds(e, a.input.schema(), &input))
                    .collect();
                if out.len() == a.schema.fields().len() {
                    out
                } else {
                    // Grouping sets expand into more columns than expressions.
                    self.by_name(plan)
                }
            }
            LogicalPlan::Window(w) => {
                let mut out = self.trace(&w.input);
                out.extend(
                    w.window_expr
                        .iter()
                        .map(|e| self.expr_feeds(e, w.input.schema(), &self.trace(&w.input))),
                );
                out
            }
            LogicalPlan::Join(j) => {
                let (left, right) = (self.trace(&j.left), self.trace(&j.right));
                match j.join_type {
                    JoinType::LeftSemi | JoinType::LeftAnti => left,
                    JoinType::RightSemi | JoinType::RightAnti => right,
                    JoinType::LeftMark => left.into_iter().chain([BTreeSet::new()]).collect(),
                    JoinType::RightMark => right.into_iter().chain([BTreeSet::new()]).collect(),
                    _ => left.into_iter().chain(right).collect(),
                }
            }
            LogicalPlan::Union(u) => {
                let mut out: Feeds = vec![BTreeSet::new(); u.schema.fields().len()];
                for input in &u.inputs {
                    for (slot, feeds) in out.iter_mut().zip(self.trace(input)) {
                        slot.extend(feeds);
                    }
                }
                out
            }
            LogicalPlan::Distinct(Distinct::On(d)) => {
                let input = self.trace(&d.input);
                d.select_expr
                    .iter()
                    .map(|e| self.expr_feeds(e, d.input.schema(), &input))
                    .collect()
            }
            LogicalPlan::Subquery(s) => self.trace(&s.subquery),
            LogicalPlan::Values(_) | LogicalPlan::EmptyRelation(_) => {
                vec![BTreeSet::new(); plan.schema().fields().len()]
            }
            _ => {
                // Filter, Sort, Limit, SubqueryAlias, Distinct, Repartition...: columns pass
                // through in place.
                let inputs = plan.inputs();
                match inputs.as_slice() {
                    [input] if input.schema().fields().len() == plan.schema().fields().len() => {
                        self.trace(input)
                    }
                    _ => self.by_name(plan),
                }
            }
        }
    }

    /// For plans without a positional rule: an output column is fed by the input column of the
    /// same name, or, when there is none, by everything the inputs read.
    fn by_name(&self, plan: &LogicalPlan) -> Feeds {
        let mut named: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut all = BTreeSet::new();
        for input in plan.inputs() {
            for (field, feeds) in input.schema().fields().iter().zip(self.trace(input)) {
                all.extend(feeds.iter().cloned());
                named.entry(field.name().clone()).or_default().extend(feeds);
            }
        }
        plan.schema()
            .fields()
            .iter()
            .map(|f| named.get(f.name()).cloned().unwrap_or_else(|| all.clone()))
            .collect()
    }

    /// The source columns an expression reads: its column references, resolved in the input,
    /// and the output of any scalar subquery inside it.
    fn expr_feeds(&self, expr: &Expr, schema: &DFSchema, input: &Feeds) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if self.mode == Mode::Raw {
            self.raw_feeds(expr, schema, input, &mut out);
            return out;
        }
        for column in expr.column_refs() {
            if let Some(feeds) = schema
                .index_of_column(column)
                .ok()
                .and_then(|k| input.get(k))
            {
                out.extend(feeds.iter().cloned());
            }
        }
        let _ = expr.apply(|e| {
            if let Expr::ScalarSubquery(sq) = e {
                out.extend(self.trace(&sq.subquery).into_iter().flatten());
            }
            Ok(TreeNodeRecursion::Continue)
        });
        out
    }

    /// The input columns whose values an expression carries: column references, except inside
    /// a pseudonymising function or a count; an aggregate's or window function's arguments
    /// (not its grouping, ordering or filter); the output of a scalar subquery.
    fn raw_feeds(&self, expr: &Expr, schema: &DFSchema, input: &Feeds, out: &mut BTreeSet<String>) {
        match expr {
            Expr::Column(column) => {
                if let Some(feeds) = schema
                    .index_of_column(column)
                    .ok()
                    .and_then(|k| input.get(k))
                {
                    out.extend(feeds.iter().cloned());
                }
            }
            Expr::ScalarFunction(f) if PSEUDONYMISING.contains(&f.name()) => {}
            Expr::AggregateFunction(a) => {
                if !COUNTING.contains(&a.func.name()) {
                    for arg in &a.params.args {
                        self.raw_feeds(arg, schema, input, out);
                    }
                }
            }
            Expr::WindowFunction(w) => {
                if !COUNTING.contains(&w.fun.name()) {
                    for arg in &w.params.args {
                        self.raw_feeds(arg, schema, input, out);
                    }
                }
            }
            Expr::ScalarSubquery(sq) => out.extend(self.trace(&sq.subquery).into_iter().flatten()),
            other => {
                let _ = other.apply_children(|child| {
                    self.raw_feeds(child, schema, input, out);
                    Ok(TreeNodeRecursion::Continue)
                });
            }
        }
    }

    /// The columns that decide which rows there are rather than what they hold: filters,
    /// join keys, grouping and sort keys, anywhere in the plan.
    pub fn indirect(&self, plan: &LogicalPlan) -> BTreeSet<String> {
        let all = Tracer {
            mode: Mode::All,
            scans: self.scans,
        };
        let mut out = BTreeSet::new();
        let mut feed = |exprs: Vec<&Expr>, input: &LogicalPlan| {
            let traced = all.trace(input);
            for e in exprs {
                out.extend(all.expr_feeds(e, input.schema(), &traced));
            }
        };
        let _ = plan.apply(|node| {
            match node {
                LogicalPlan::Filter(f) => feed(vec![&f.predicate], &f.input),
                LogicalPlan::Aggregate(a) => feed(a.group_expr.iter().collect(), &a.input),
                LogicalPlan::Sort(s) => feed(s.expr.iter().map(|e| &e.expr).collect(), &s.input),
                LogicalPlan::Join(j) => {
                    feed(j.on.iter().map(|(l, _)| l).collect(), &j.left);
                    feed(j.on.iter().map(|(_, r)| r).collect(), &j.right);
                    // A join filter reads both sides: each column from the side that has it.
                    if let Some(filter) = &j.filter {
                        feed(vec![filter], &j.left);
                        feed(vec![filter], &j.right);
                    }
                }
                _ => {}
            }
            Ok(TreeNodeRecursion::Continue)
        });
        out
    }
}
