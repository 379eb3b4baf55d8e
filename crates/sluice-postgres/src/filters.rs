//! Which of a statement's filters the server can apply, written in its SQL. A filter is
//! sent only when PostgreSQL gives exactly the answer DataFusion would: comparisons,
//! IN lists, NULL tests, LIKE and their AND/OR/NOT over columns read in their own type and
//! plain literals. Ordering comparisons on text (collations differ) and floats (NaN sorts
//! differently) stay with DataFusion.

use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, ScalarValue};
use datafusion::logical_expr::{BinaryExpr, Expr, Like, Operator};
use datafusion::sql::unparser::dialect::PostgreSqlDialect;
use datafusion::sql::unparser::Unparser;

use crate::types::ReadAs;

/// The columns a filter may name: their types, and whether they arrive in their own type.
pub(crate) struct Columns<'a> {
    pub schema: &'a Schema,
    pub read_as: &'a [ReadAs],
}

impl Columns<'_> {
    fn native_type(&self, column: &Column) -> Option<&DataType> {
        let i = self.schema.index_of(&column.name).ok()?;
        (self.read_as[i] == ReadAs::Native).then(|| self.schema.field(i).data_type())
    }
}

/// The filter in PostgreSQL's SQL, when the server can apply it exactly.
pub(crate) fn to_postgres(filter: &Expr, columns: &Columns<'_>) -> Option<String> {
    if !exact(filter, columns) {
        return None;
    }
    let unqualified = filter
        .clone()
        .transform_up(|e| {
            Ok(match e {
                Expr::Column(c) if c.relation.is_some() => {
                    Transformed::yes(Expr::Column(Column::new_unqualified(c.name)))
                }
                other => Transformed::no(other),
            })
        })
        .ok()?
        .data;
    let dialect = PostgreSqlDialect {};
    Unparser::new(&dialect)
        .expr_to_sql(&unqualified)
        .ok()
        .map(|sql| sql.to_string())
}

fn exact(e: &Expr, columns: &Columns<'_>) -> bool {
    match e {
        Expr::Column(c) => columns.native_type(c).is_some_and(comparable),
        Expr::Literal(v, _) => plain_literal(v),
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match op {
            Operator::And | Operator::Or => exact(left, columns) && exact(right, columns),
            Operator::Eq | Operator::NotEq => exact(left, columns) && exact(right, columns),
            Operator::Lt | Operator::LtEq | Operator::Gt | Operator::GtEq => {
                exact(left, columns)
                    && exact(right, columns)
                    && [left, right].iter().all(|side| ordered(side, columns))
            }
            _ => false,
        },
        Expr::Not(inner) | Expr::IsNull(inner) | Expr::IsNotNull(inner) => exact(inner, columns),
        Expr::InList(list) => {
            exact(&list.expr, columns) && list.list.iter().all(|item| exact(item, columns))
        }
        Expr::Like(Like {
            expr,
            pattern,
            case_insensitive: false,
            escape_char: None,
            ..
        }) => {
            exact(expr, columns)
                && matches!(**pattern, Expr::Literal(ScalarValue::Utf8(Some(_)), _))
        }
        _ => false,
    }
}

/// Types whose equality means the same on both sides.
fn comparable(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Boolean
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::Decimal128(..)
            | DataType::Utf8
            | DataType::Date32
            | DataType::Timestamp(_, None)
    )
}

/// Whether `<` on this side orders the same way on both sides.
fn ordered(side: &Expr, columns: &Columns<'_>) -> bool {
    match side {
        Expr::Column(c) => columns
            .native_type(c)
            .is_some_and(|t| !matches!(t, DataType::Utf8 | DataType::Boolean)),
        Expr::Literal(v, _) => !matches!(
            v,
            ScalarValue::Utf8(_) | ScalarValue::LargeUtf8(_) | ScalarValue::Utf8View(_)
        ),
        _ => false,
    }
}

fn plain_literal(v: &ScalarValue) -> bool {
    if v.is_null() {
        return false;
    }
    matches!(
        v,
        ScalarValue::Boolean(_)
            | ScalarValue::Int8(_)
            | ScalarValue::Int16(_)
            | ScalarValue::Int32(_)
            | ScalarValue::Int64(_)
            | ScalarValue::UInt8(_)
            | ScalarValue::UInt16(_)
            | ScalarValue::UInt32(_)
            | ScalarValue::Decimal128(..)
            | ScalarValue::Utf8(_)
            | ScalarValue::LargeUtf8(_)
            | ScalarValue::Utf8View(_)
            | ScalarValue::Date32(_)
            | ScalarValue::TimestampMicrosecond(_, None)
            | ScalarValue::TimestampNanosecond(_, None)
            | ScalarValue::TimestampMillisecond(_, None)
            | ScalarValue::TimestampSecond(_, None)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::Field;
    use datafusion::prelude::{col, lit};

    #[test]
    fn only_exact_filters_are_sent() {
        let schema = Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("email", DataType::Utf8, true),
            Field::new("score", DataType::Float64, true),
            Field::new("meta", DataType::Utf8, true),
        ]);
        let read_as = [ReadAs::Native, ReadAs::Native, ReadAs::Native, ReadAs::Text];
        let columns = Columns {
            schema: &schema,
            read_as: &read_as,
        };
        let sent = |e: Expr| to_postgres(&e, &columns);
        assert_eq!(
            sent(col("id").gt(lit(5i64)).and(col("email").eq(lit("a@b.c")))).as_deref(),
            Some("((\"id\" > 5) AND (\"email\" = 'a@b.c'))")
        );
        assert_eq!(
            sent(col("id").in_list(vec![lit(1i64), lit(2i64)], false)).as_deref(),
            Some("\"id\" IN (1, 2)")
        );
        assert_eq!(sent(col("email").gt(lit("m"))), None);
        assert_eq!(sent(col("score").gt(lit(1.0))), None);
        assert_eq!(sent(col("meta").eq(lit("x"))), None);
        assert_eq!(
            sent(col("email").is_null()).as_deref(),
            Some("\"email\" IS NULL")
        );
    }
}
