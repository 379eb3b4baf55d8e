//! A statement's comparison literals lifted out as parameters, so that the same query with
//! other values has one shape to cache a plan under.

use std::ops::ControlFlow;

use datafusion::common::ScalarValue;
use datafusion::sql::sqlparser::ast::visit_expressions;
use datafusion::sql::sqlparser::ast::{
    BinaryOperator, Expr as SqlExpr, JoinConstraint, JoinOperator, Query, SetExpr, Statement,
    Value, VisitMut, VisitorMut,
};

/// The statement with the literal operands of the comparisons in its WHERE, HAVING and JOIN
/// ON clauses (`=`, `<`, ..., `IN (...)`, `BETWEEN`, `LIKE`) made parameters `$1`, `$2`, ...,
/// and their values. Integers and quoted text only; projections, LIMIT, ORDER BY and
/// subqueries keep their literals (they name columns or shape the plan). None for a
/// statement that is not a query or has parameters of its own.
pub fn lift_literals(statement: &Statement) -> Option<(Statement, Vec<ScalarValue>)> {
    let has_params = visit_expressions(statement, |e| match e {
        SqlExpr::Value(v) if matches!(v.value, Value::Placeholder(_)) => ControlFlow::Break(()),
        _ => ControlFlow::Continue(()),
    });
    if has_params.is_break() {
        return None;
    }
    let mut shape = statement.clone();
    let Statement::Query(query) = &mut shape else {
        return None;
    };
    let mut lifter = Lifter::default();
    lift_in_query(query, &mut lifter);
    Some((shape, lifter.values))
}

fn lift_in_query(query: &mut Query, lifter: &mut Lifter) {
    let SetExpr::Select(select) = query.body.as_mut() else {
        return;
    };
    for from in &mut select.from {
        for join in &mut from.joins {
            if let Some(JoinConstraint::On(on)) = join_constraint(&mut join.join_operator) {
                let _ = on.visit(lifter);
            }
        }
    }
    if let Some(selection) = &mut select.selection {
        let _ = selection.visit(lifter);
    }
    if let Some(having) = &mut select.having {
        let _ = having.visit(lifter);
    }
}

fn join_constraint(op: &mut JoinOperator) -> Option<&mut JoinConstraint> {
    match op {
        JoinOperator::Join(c)
        | JoinOperator::Inner(c)
        | JoinOperator::Left(c)
        | JoinOperator::LeftOuter(c)
        | JoinOperator::Right(c)
        | JoinOperator::RightOuter(c)
        | JoinOperator::FullOuter(c) => Some(c),
        _ => None,
    }
}

#[derive(Default)]
struct Lifter {
    values: Vec<ScalarValue>,
    /// Inside a subquery: its literals stay.
    depth: usize,
}

impl Lifter {
    /// Make `operand` a parameter if it is a literal this lifts.
    fn lift(&mut self, operand: &mut SqlExpr) {
        let SqlExpr::Value(v) = operand else {
            return;
        };
        let value = match &v.value {
            Value::Number(n, false) => match n.parse::<i64>() {
                Ok(n) => ScalarValue::Int64(Some(n)),
                Err(_) => return,
            },
            Value::SingleQuotedString(s) => ScalarValue::Utf8(Some(s.clone())),
            _ => return,
        };
        self.values.push(value);
        v.value = Value::Placeholder(format!("${}", self.values.len()));
    }
}

fn is_literal(e: &SqlExpr) -> bool {
    matches!(e, SqlExpr::Value(_))
}

impl VisitorMut for Lifter {
    type Break = ();

    fn pre_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.depth += 1;
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &mut Query) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut SqlExpr) -> ControlFlow<()> {
        if self.depth > 0 {
            return ControlFlow::Continue(());
        }
        match expr {
            SqlExpr::BinaryOp {
                left,
                op:
                    BinaryOperator::Eq
                    | BinaryOperator::NotEq
                    | BinaryOperator::Lt
                    | BinaryOperator::LtEq
                    | BinaryOperator::Gt
                    | BinaryOperator::GtEq,
                right,
            } => {
                if !is_literal(left) {
                    self.lift(right);
                } else if !is_literal(right) {
                    self.lift(left);
                }
            }
            SqlExpr::InList { expr, list, .. } if !is_literal(expr) => {
                list.iter_mut().for_each(|item| self.lift(item));
            }
            SqlExpr::Between {
                expr, low, high, ..
            } if !is_literal(expr) => {
                self.lift(low);
                self.lift(high);
            }
            SqlExpr::Like { expr, pattern, .. } | SqlExpr::ILike { expr, pattern, .. }
                if !is_literal(expr) =>
            {
                self.lift(pattern);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn lifted(sql: &str) -> Option<(String, Vec<ScalarValue>)> {
        let statement = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        lift_literals(&statement).map(|(shape, values)| (shape.to_string(), values))
    }

    #[test]
    fn comparison_literals_become_parameters_and_nothing_else_does() {
        let (shape, values) = lifted(
            "SELECT a = 1, 'x' AS k FROM t JOIN u ON t.id = u.id AND u.kind = 'web' \
             WHERE t.id = 42 AND t.b IN (1, 'two') AND t.c BETWEEN 3 AND 4 AND t.d LIKE 'a%' \
             AND t.e = 2.5 AND t.f IN (SELECT g FROM v WHERE h = 7) AND 1 = 1 \
             GROUP BY 1 HAVING count(*) > 5 ORDER BY 1 LIMIT 10",
        )
        .unwrap();
        assert_eq!(
            shape,
            "SELECT a = 1, 'x' AS k FROM t JOIN u ON t.id = u.id AND u.kind = $1 \
             WHERE t.id = $2 AND t.b IN ($3, $4) AND t.c BETWEEN $5 AND $6 AND t.d LIKE $7 \
             AND t.e = 2.5 AND t.f IN (SELECT g FROM v WHERE h = 7) AND 1 = 1 \
             GROUP BY 1 HAVING count(*) > $8 ORDER BY 1 LIMIT 10"
        );
        let text = |s: &str| ScalarValue::Utf8(Some(s.into()));
        let int = |n: i64| ScalarValue::Int64(Some(n));
        assert_eq!(
            values,
            vec![
                text("web"),
                int(42),
                int(1),
                text("two"),
                int(3),
                int(4),
                text("a%"),
                int(5)
            ]
        );
    }

    #[test]
    fn statements_with_their_own_parameters_or_not_queries_are_left_alone() {
        assert_eq!(lifted("SELECT * FROM t WHERE a = $1 AND b = 2"), None);
        assert_eq!(lifted("INSERT INTO t VALUES (1)"), None);
        let (shape, values) = lifted("SELECT 1").unwrap();
        assert_eq!((shape.as_str(), values.len()), ("SELECT 1", 0));
    }
}
