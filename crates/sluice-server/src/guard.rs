//! Read-only by default: the statements a server user may run are queries, EXPLAIN, SHOW,
//! client-side SET, and transaction and cursor statements. Everything that writes, defines,
//! reads files by path, or changes engine internals is refused with a clear error.

use std::ops::ControlFlow;

use datafusion::logical_expr::{DdlStatement, LogicalPlan, Statement as PlanStatement};
use datafusion::sql::sqlparser::ast::{ObjectName, Statement, Visit, Visitor};

use crate::statement_kind::{kind_of, Kind};

/// Session settings clients set at connect time; harmless to the engine.
const CLIENT_SETTINGS: &[&str] = &[
    "application_name",
    "client_encoding",
    "client_min_messages",
    "datestyle",
    "extra_float_digits",
    "intervalstyle",
    "search_path",
    "statement_timeout",
    "timezone",
    "time zone",
    "bytea_output",
    "standard_conforming_strings",
    "lc_messages",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "default_transaction_isolation",
    "transaction_isolation",
    "idle_in_transaction_session_timeout",
    "lock_timeout",
    "jit",
    "row_security",
];

const HINT: &str = "sluice serve is read-only; start it with --allow-write to allow this";

/// Why `statement` may not run on a read-only server; None when it may.
pub fn refusal(statement: &Statement) -> Option<String> {
    let kind = match statement {
        Statement::Query(_) => return reads_files(statement),
        Statement::Explain { statement, .. } => return refusal(statement),
        Statement::ExplainTable { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowVariables { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowFunctions { .. }
        | Statement::StartTransaction { .. }
        | Statement::Commit { .. }
        | Statement::Rollback { .. }
        | Statement::Declare { .. }
        | Statement::Fetch { .. }
        | Statement::Close { .. }
        | Statement::Discard { .. }
        | Statement::Deallocate { .. } => return None,
        Statement::Set(set) => {
            let text = set.to_string().to_ascii_lowercase();
            let name = text
                .trim_start_matches("set")
                .trim()
                .trim_start_matches("session")
                .trim_start_matches("local")
                .trim();
            if CLIENT_SETTINGS.iter().any(|s| name.starts_with(s)) {
                return None;
            }
            "SET of engine settings"
        }
        Statement::Insert(_) => "INSERT",
        Statement::Update { .. } => "UPDATE",
        Statement::Delete(_) => "DELETE",
        Statement::Merge { .. } => "MERGE",
        Statement::Copy { .. } | Statement::CopyIntoSnowflake { .. } => "COPY",
        Statement::Truncate { .. } => "TRUNCATE",
        _ => "DDL",
    };
    Some(format!("{kind} is not allowed: {HINT}"))
}

/// Why a planned statement may not run on a read-only server; None when it may. This is the
/// guard that counts: whatever the spelling (`SELECT ... INTO`, a CTE around it, EXPLAIN
/// ANALYZE of it), a plan that creates, replaces or drops a catalog object, writes, or
/// changes an engine setting is refused.
pub fn plan_refusal(plan: &LogicalPlan) -> Option<String> {
    let kind = match plan {
        LogicalPlan::Explain(explain) => return plan_refusal(&explain.plan),
        LogicalPlan::Analyze(analyze) => return plan_refusal(&analyze.input),
        LogicalPlan::Statement(PlanStatement::SetVariable(set)) => {
            let name = set.variable.to_ascii_lowercase();
            if CLIENT_SETTINGS.iter().any(|s| name == *s) {
                return None;
            }
            "SET of engine settings"
        }
        LogicalPlan::Statement(PlanStatement::ResetVariable(_)) => "RESET of engine settings",
        LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(_)) => {
            "creating a table (CREATE TABLE, SELECT ... INTO)"
        }
        // Every other catalog change or write, by the command Postgres would answer.
        LogicalPlan::Ddl(_) | LogicalPlan::Dml(_) | LogicalPlan::Copy(_) => match kind_of(plan) {
            Kind::Command(command) => command,
            Kind::Query => return None,
        },
        _ => return None,
    };
    Some(format!("{kind} is not allowed: {HINT}"))
}

/// Queries may read registered tables only, not files or URLs named in the query.
fn reads_files(statement: &Statement) -> Option<String> {
    struct Paths(Option<String>);
    impl Visitor for Paths {
        type Break = ();
        fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
            let name = relation.to_string();
            let bare = name.trim_matches(|c| c == '"' || c == '\'' || c == '`');
            if bare.contains('/') || bare.contains("://") || bare.contains('\\') {
                self.0 = Some(bare.to_string());
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
    }
    let mut paths = Paths(None);
    let _ = statement.visit(&mut paths);
    paths.0.map(|p| {
        format!("reading files or URLs by path ({p}) is not allowed: query a source or model instead; {HINT}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn check(sql: &str) -> Option<String> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        refusal(&statements[0])
    }

    #[test]
    fn queries_pass_writes_and_paths_do_not() {
        assert_eq!(check("SELECT * FROM events WHERE id = 1"), None);
        assert_eq!(check("SET extra_float_digits = 3"), None);
        assert_eq!(check("SHOW TABLES"), None);
        assert_eq!(
            check("INSERT INTO t VALUES (1)").unwrap(),
            "INSERT is not allowed: sluice serve is read-only; start it with --allow-write to allow this"
        );
        assert!(check("CREATE TABLE t (a INT)").unwrap().starts_with("DDL"));
        assert!(check("COPY t TO '/tmp/x'").unwrap().starts_with("COPY"));
        assert!(check("SET datafusion.execution.batch_size = 1")
            .unwrap()
            .starts_with("SET of engine settings"));
        assert!(check("SELECT * FROM '/etc/passwd.csv'")
            .unwrap()
            .starts_with("reading files or URLs by path (/etc/passwd.csv)"));
        assert!(check("SELECT * FROM \"s3://b/x.parquet\"")
            .unwrap()
            .starts_with("reading files or URLs by path (s3://b/x.parquet)"));
    }
}
