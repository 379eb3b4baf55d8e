//! Every statement a Postgres client sends, after datafusion-postgres has parsed it: the
//! read-only guard (by statement kind, then by the planned statement), the built-in hooks
//! (cursors, client `SET`/`SHOW`, transactions) in the client's own session, and the
//! statement run by `Statements` under its memory limit, encoded for the wire.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, UInt64Array};
use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, SessionState};
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_postgres::arrow_pg::datatypes::{arrow_schema_to_pg_fields, encode_recordbatch};
use datafusion_postgres::hooks::cursor::CursorStatementHook;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use futures::StreamExt;
use pgwire::api::portal::Format;
use pgwire::api::results::{QueryResponse, Response, Tag};
use pgwire::api::ClientInfo;
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::types::format::FormatOptions;

use super::guard;
use super::metrics::Metrics;
use super::plan_cache::{PlanCache, Reusable};
use super::statement::Statements;
use super::statement_kind::{kind_of, Kind};

pub fn user_error(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message,
    )))
}

/// A DataFusion error as the Postgres error a client can act on.
pub fn statement_error(e: DataFusionError) -> PgWireError {
    let root = e.find_root();
    if let DataFusionError::ResourcesExhausted(message) = root {
        // 53200: out_of_memory.
        return user_error("53200", format!("resources exhausted: {message}"));
    }
    PgWireError::ApiError(Box::new(e))
}

/// The session of this connection, made at its first statement, and the plans it reuses.
struct Connection {
    session: Arc<SessionContext>,
    plans: PlanCache,
}

/// The result column format of the portal being executed (text or binary per column):
/// pgwire gives it to the query handler, and the hook below encodes with it.
pub struct PortalFormat(pub Format);

pub struct ClientStatements {
    statements: Arc<Statements>,
    read_only: bool,
    builtin: Vec<Arc<dyn QueryHook>>,
    metrics: Arc<Metrics>,
}

impl ClientStatements {
    pub fn new(statements: Arc<Statements>, read_only: bool, metrics: Arc<Metrics>) -> Self {
        ClientStatements {
            statements,
            read_only,
            metrics,
            builtin: vec![
                Arc::new(CursorStatementHook),
                Arc::new(SetShowHook),
                Arc::new(TransactionStatementHook),
            ],
        }
    }

    fn connection_of<C: ClientInfo + ?Sized>(&self, client: &C) -> Arc<Connection> {
        client
            .session_extensions()
            .get_or_insert_with(|| Connection {
                session: self.statements.connection_session(),
                plans: PlanCache::default(),
            })
    }

    /// A built-in hook answered: a setting may have changed what a statement plans to.
    fn builtin_answered(connection: &Connection, statement: &Statement) {
        if !matches!(
            statement,
            Statement::StartTransaction { .. }
                | Statement::Commit { .. }
                | Statement::Rollback { .. }
                | Statement::ShowVariable { .. }
        ) {
            connection.plans.clear();
        }
    }

    /// Run a kept plan with these values, if it can be.
    async fn reuse<C: ClientInfo + ?Sized>(
        &self,
        connection: &Connection,
        reusable: &Reusable,
        values: Vec<ScalarValue>,
        format: &Format,
        client: &C,
    ) -> Option<PgWireResult<Response>> {
        let started = reusable
            .run(&connection.session, &self.statements, values)
            .await?;
        Some(match started {
            Ok((rows, reused)) => {
                if reused {
                    self.metrics.plan_reused();
                }
                self.answer(Kind::Query, rows, format, client).await
            }
            Err(e) => Err(statement_error(e)),
        })
    }

    /// 25006 (read_only_sql_transaction), what Postgres answers on a read-only standby.
    fn refused(&self, statement: &Statement) -> Option<PgWireError> {
        self.read_only
            .then(|| guard::refusal(statement))
            .flatten()
            .map(|m| user_error("25006", m))
    }

    /// 25006 for what a read-only server does not run; 42501 (insufficient_privilege) for
    /// personal data the user may not read.
    fn refused_plan<C: ClientInfo + ?Sized>(
        &self,
        plan: &LogicalPlan,
        client: &C,
    ) -> Option<PgWireError> {
        let read_only = self
            .read_only
            .then(|| guard::plan_refusal(plan))
            .flatten()
            .map(|m| user_error("25006", m));
        read_only.or_else(|| {
            let user = client
                .metadata()
                .get(pgwire::api::METADATA_USER)
                .map(String::as_str)
                .unwrap_or("");
            self.statements
                .personal
                .refusal(plan, user)
                .map(|m| user_error("42501", m))
        })
    }

    /// Run a planned statement and answer it: rows as they stream, or a command's tag.
    async fn respond<C: ClientInfo + ?Sized>(
        &self,
        connection: &Connection,
        state: SessionState,
        plan: LogicalPlan,
        format: &Format,
        client: &C,
    ) -> PgWireResult<Response> {
        if let Some(e) = self.refused_plan(&plan, client) {
            return Err(e);
        }
        let kind = kind_of(&plan);
        if let Kind::Command(_) = kind {
            connection.plans.clear();
        }
        let rows = self
            .statements
            .execute(&connection.session, state, plan)
            .await
            .map_err(statement_error)?;
        self.answer(kind, rows, format, client).await
    }

    /// The reply to a started statement: its rows as they stream, or a command's tag.
    async fn answer<C: ClientInfo + ?Sized>(
        &self,
        kind: Kind,
        mut rows: SendableRecordBatchStream,
        format: &Format,
        client: &C,
    ) -> PgWireResult<Response> {
        match kind {
            Kind::Command(command) => {
                let mut count = None;
                while let Some(batch) = rows.next().await {
                    let batch = batch.map_err(statement_error)?;
                    if let Some(n) = batch
                        .column_by_name("count")
                        .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
                        .filter(|c| !c.is_empty())
                    {
                        count = Some(count.unwrap_or(0) + n.value(0) as usize);
                    }
                }
                let tag = match (command, count) {
                    ("INSERT", n) => Tag::new("INSERT").with_oid(0).with_rows(n.unwrap_or(0)),
                    ("COPY" | "DELETE" | "UPDATE", n) => {
                        Tag::new(command).with_rows(n.unwrap_or(0))
                    }
                    _ => Tag::new(command),
                };
                Ok(Response::Execution(tag))
            }
            Kind::Query => {
                let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
                let fields = Arc::new(arrow_schema_to_pg_fields(
                    rows.schema().as_ref(),
                    format,
                    Some(options),
                )?);
                let encoding = fields.clone();
                let data = rows
                    .map(move |batch| {
                        let rows: Box<dyn Iterator<Item = PgWireResult<_>> + Send + Sync> =
                            match batch {
                                Ok(batch) => encode_recordbatch(encoding.clone(), batch),
                                Err(e) => Box::new(std::iter::once(Err(statement_error(e)))),
                            };
                        futures::stream::iter(rows)
                    })
                    .flatten();
                Ok(Response::Query(QueryResponse::new(fields, data)))
            }
        }
    }
}

#[async_trait]
impl QueryHook for ClientStatements {
    async fn handle_simple_query(
        &self,
        statement: &Statement,
        _project: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(e) = self.refused(statement) {
            return Some(Err(e));
        }
        let connection = self.connection_of(client);
        let session = &connection.session;
        for hook in &self.builtin {
            if let Some(answer) = hook.handle_simple_query(statement, session, client).await {
                Self::builtin_answered(&connection, statement);
                return Some(answer);
            }
        }
        if let Some((reusable, values)) = connection.plans.for_query(session, statement).await {
            if let Some(e) = self.refused_plan(reusable.logical(), client) {
                return Some(Err(e));
            }
            let format = Format::UnifiedText;
            if let Some(answer) = self
                .reuse(&connection, &reusable, values, &format, client)
                .await
            {
                return Some(answer);
            }
        }
        // Planned from the text, as `SessionContext::sql` would: DataFusion's own statements
        // (CREATE EXTERNAL TABLE, COPY ... TO) parse too.
        let state = session.state();
        let plan = match state.create_logical_plan(&statement.to_string()).await {
            Ok(plan) => plan,
            Err(e) => return Some(Err(statement_error(e))),
        };
        Some(
            self.respond(&connection, state, plan, &Format::UnifiedText, client)
                .await,
        )
    }

    async fn handle_extended_parse_query(
        &self,
        statement: &Statement,
        _project: &SessionContext,
        client: &(dyn ClientInfo + Send + Sync),
    ) -> Option<PgWireResult<LogicalPlan>> {
        if let Some(e) = self.refused(statement) {
            return Some(Err(e));
        }
        let connection = self.connection_of(client);
        let session = &connection.session;
        for hook in &self.builtin {
            if let Some(plan) = hook
                .handle_extended_parse_query(statement, session, client)
                .await
            {
                return Some(plan);
            }
        }
        let text = statement.to_string();
        if let Some(reusable) = connection.plans.reusable(&text) {
            return Some(Ok(reusable.logical().clone()));
        }
        let planned = session
            .state()
            .statement_to_plan(DfStatement::Statement(Box::new(statement.clone())))
            .await
            .map_err(statement_error);
        Some(
            planned.and_then(|plan| match self.refused_plan(&plan, client) {
                Some(e) => Err(e),
                None => {
                    connection.plans.remember(text, &plan);
                    Ok(plan)
                }
            }),
        )
    }

    async fn handle_extended_query(
        &self,
        statement: &Statement,
        plan: &LogicalPlan,
        params: &ParamValues,
        _project: &SessionContext,
        client: &mut dyn HookClient,
    ) -> Option<PgWireResult<Response>> {
        if let Some(e) = self.refused(statement) {
            return Some(Err(e));
        }
        let connection = self.connection_of(client);
        let session = &connection.session;
        for hook in &self.builtin {
            if let Some(answer) = hook
                .handle_extended_query(statement, plan, params, session, client)
                .await
            {
                Self::builtin_answered(&connection, statement);
                return Some(answer);
            }
        }
        let format = client
            .session_extensions()
            .get::<PortalFormat>()
            .map(|f| f.0.clone())
            .unwrap_or_default();
        if let (Some(reusable), ParamValues::List(values)) =
            (connection.plans.reusable(&statement.to_string()), params)
        {
            let values = values.iter().map(|v| v.value.clone()).collect();
            if let Some(answer) = self
                .reuse(&connection, &reusable, values, &format, client)
                .await
            {
                return Some(answer);
            }
        }
        let bound = match plan.clone().replace_params_with_values(params) {
            Ok(plan) => plan,
            Err(e) => return Some(Err(statement_error(e))),
        };
        Some(
            self.respond(&connection, session.state(), bound, &format, client)
                .await,
        )
    }
}
