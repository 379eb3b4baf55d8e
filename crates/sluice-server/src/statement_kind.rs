//! What a planned statement is: rows for the client, or a command with the tag Postgres
//! would answer. The listeners, the plan cache and the personal-data guard all ask.

use datafusion::logical_expr::{DdlStatement, LogicalPlan};

/// What a planned statement is, for running it and for the reply's command tag.
pub enum Kind {
    /// Rows for the client.
    Query,
    /// A catalog change, write or setting; the tag Postgres would answer (`CREATE TABLE`).
    Command(&'static str),
}

pub fn kind_of(plan: &LogicalPlan) -> Kind {
    use datafusion::logical_expr::Statement as S;
    Kind::Command(match plan {
        LogicalPlan::Ddl(ddl) => match ddl {
            DdlStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
            DdlStatement::CreateMemoryTable(_) => "CREATE TABLE",
            DdlStatement::CreateView(_) => "CREATE VIEW",
            DdlStatement::CreateCatalogSchema(_) | DdlStatement::CreateCatalog(_) => {
                "CREATE SCHEMA"
            }
            DdlStatement::CreateIndex(_) => "CREATE INDEX",
            DdlStatement::DropTable(_) => "DROP TABLE",
            DdlStatement::DropView(_) => "DROP VIEW",
            DdlStatement::DropCatalogSchema(_) => "DROP SCHEMA",
            DdlStatement::CreateFunction(_) => "CREATE FUNCTION",
            DdlStatement::DropFunction(_) => "DROP FUNCTION",
        },
        LogicalPlan::Dml(dml) => match dml.op {
            datafusion::logical_expr::WriteOp::Insert(_) => "INSERT",
            datafusion::logical_expr::WriteOp::Delete => "DELETE",
            datafusion::logical_expr::WriteOp::Update => "UPDATE",
            datafusion::logical_expr::WriteOp::Truncate => "TRUNCATE",
            datafusion::logical_expr::WriteOp::Ctas => "CREATE TABLE AS",
            _ => "WRITE",
        },
        LogicalPlan::Copy(_) => "COPY",
        LogicalPlan::Statement(S::SetVariable(_)) => "SET",
        LogicalPlan::Statement(S::ResetVariable(_)) => "RESET",
        LogicalPlan::Statement(S::Prepare(_)) => "PREPARE",
        LogicalPlan::Statement(S::Deallocate(_)) => "DEALLOCATE",
        _ => return Kind::Query,
    })
}
