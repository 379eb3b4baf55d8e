//! Arrow Flight SQL (`sluice serve --flight ADDR`) for ADBC, JDBC and notebook clients:
//! results leave as the Arrow batches the engine computed, batch by batch. Same session,
//! users, read-only rule, per-statement memory limit, concurrency gate, timeout, metrics
//! and log lines as the Postgres port.
//!
//! Authentication is Flight's: a handshake with HTTP basic credentials against
//! `[server.users]` returns a bearer token, which every later call carries. Without users
//! the listener is loopback only (checked at start) and needs no token.

mod catalog;
mod transport;
mod wire;

use wire::{
    basic_credentials, limited, one_batch, parameter_batches, parameter_row, parameter_schema,
    rows_written, schema_bytes,
};

pub use transport::serve;

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementQuery, CommandStatementUpdate,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, Ticket,
};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::common::{DataFusionError, ParamValues, ScalarValue};
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::admission::{Admission, Stopped};
use super::guard;
use super::pgwire::Handlers;
use super::statement::Statements;
use super::statement_kind::{kind_of, Kind};
use crate::error::describe_datafusion_error;

/// Logins and prepared statements kept at most; the oldest go first beyond this.
const MAX_LOGINS: usize = 4096;
const MAX_PREPARED: usize = 4096;

pub struct FlightSql {
    statements: Arc<Statements>,
    admission: Arc<Admission>,
    handlers: Arc<Handlers>,
    read_only: bool,
    /// Bearer token -> the user it was given to, with a session of the login's own.
    logins: Mutex<HashMap<String, Login>>,
    /// Prepared statement handle -> its SQL, owner and bound parameters.
    prepared: Mutex<HashMap<Vec<u8>, Prepared>>,
}

#[derive(Clone)]
struct Login {
    user: String,
    session: Arc<SessionContext>,
    since: Instant,
}

#[derive(Clone)]
struct Prepared {
    user: String,
    sql: String,
    parameters: Option<Vec<ScalarValue>>,
    since: Instant,
}

/// Who is calling and in which session.
struct Caller {
    user: String,
    session: Arc<SessionContext>,
}

type DataStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

fn status(e: &DataFusionError) -> Status {
    let message = describe_datafusion_error(e);
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(message),
        DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

impl From<Stopped> for Status {
    fn from(why: Stopped) -> Self {
        match why {
            Stopped::ShuttingDown => Status::unavailable(why.to_string()),
            Stopped::TimedOut(_) => Status::deadline_exceeded(why.to_string()),
        }
    }
}

/// Keep a map under its bound by dropping the oldest entries.
fn bound<K: Clone + Eq + std::hash::Hash, V>(
    map: &mut HashMap<K, V>,
    max: usize,
    since: impl Fn(&V) -> Instant,
) {
    while map.len() >= max {
        let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| since(v))
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        map.remove(&oldest);
    }
}

impl FlightSql {
    pub fn new(
        statements: Arc<Statements>,
        admission: Arc<Admission>,
        handlers: Arc<Handlers>,
        read_only: bool,
    ) -> Self {
        FlightSql {
            statements,
            admission,
            handlers,
            read_only,
            logins: Mutex::new(HashMap::new()),
            prepared: Mutex::new(HashMap::new()),
        }
    }

    /// The caller of a request: the login its bearer token names; anyone (as `-`, in a
    /// session of the call's own) when the server has no users.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = header.and_then(|h| h.strip_prefix("Bearer ").map(str::trim));
        if let Some(login) = token.and_then(|t| self.logins.lock().ok()?.get(t).cloned()) {
            return Ok(Caller {
                user: login.user,
                session: login.session,
            });
        }
        if !self.handlers.has_users() {
            return Ok(Caller {
                user: "-".into(),
                session: self.statements.connection_session(),
            });
        }
        // Basic credentials on the call itself, as some clients send them instead of a
        // handshake.
        if let Some((user, password)) = header.and_then(basic_credentials) {
            if self.handlers.check_password(&user, &password) {
                return Ok(Caller {
                    user,
                    session: self.statements.connection_session(),
                });
            }
            return Err(Status::unauthenticated(format!(
                "password authentication failed for user \"{user}\""
            )));
        }
        Err(Status::unauthenticated(match token {
            Some(_) => "the bearer token is not known to this server (it restarted, or the login expired): log in again",
            None => "authentication required: log in with a username and password ([server.users])",
        }))
    }

    /// Plan a client's SQL in its session, refusing on a read-only server what it may not
    /// run (by the statement and, whatever its spelling, by the plan).
    async fn plan(
        &self,
        caller: &Caller,
        sql: &str,
        parameters: Option<&[ScalarValue]>,
    ) -> Result<(SessionState, LogicalPlan), Status> {
        if self.read_only {
            let parsed = Parser::parse_sql(&PostgreSqlDialect {}, sql)
                .map_err(|e| Status::invalid_argument(format!("SQL error: {e}")))?;
            if let Some(why) = parsed.iter().find_map(guard::refusal) {
                return Err(Status::permission_denied(why));
            }
        }
        let state = caller.session.state();
        let mut plan = state
            .create_logical_plan(sql)
            .await
            .map_err(|e| status(&e))?;
        if self.read_only {
            if let Some(why) = guard::plan_refusal(&plan) {
                return Err(Status::permission_denied(why));
            }
        }
        if let Some(why) = self.statements.personal.refusal(&plan, &caller.user) {
            return Err(Status::permission_denied(why));
        }
        if let Some(values) = parameters {
            plan = plan
                .with_param_values(ParamValues::List(
                    values.iter().cloned().map(Into::into).collect(),
                ))
                .map_err(|e| status(&e))?;
        }
        Ok((state, plan))
    }

    /// The schema the statement's rows will have: the physical plan's for a query (that is
    /// what streams, nullability included), the plan's own for a command.
    async fn result_schema(state: &SessionState, plan: &LogicalPlan) -> Result<SchemaRef, Status> {
        match kind_of(plan) {
            Kind::Query => Ok(state
                .create_physical_plan(plan)
                .await
                .map_err(|e| status(&e))?
                .schema()),
            Kind::Command(_) => Ok(Arc::new(plan.schema().as_arrow().clone())),
        }
    }

    fn flight_info(
        schema: &Schema,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
        let info = FlightInfo::new()
            .try_with_schema(schema)
            .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
            .with_endpoint(endpoint)
            .with_descriptor(descriptor)
            .with_ordered(true);
        Ok(Response::new(info))
    }

    /// The FlightInfo of a catalog request: its rows' schema, and the request itself as the
    /// ticket (answered from the catalog when presented).
    fn metadata_info(
        &self,
        schema: &Schema,
        command: Any,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.caller(&request)?;
        Self::flight_info(schema, command.encode_to_vec(), request.into_inner())
    }

    /// Admit, start and stream a planned statement; counted and logged when it ends.
    async fn run(
        &self,
        caller: Caller,
        state: SessionState,
        plan: LogicalPlan,
    ) -> Result<Response<DataStream>, Status> {
        let turn = self.admission.admit().await?;
        let started = turn
            .within(async {
                self.statements
                    .execute(&caller.session, state, plan)
                    .await
                    .map_err(|e| status(&e))
            })
            .await;
        let rows = match started {
            Ok(rows) => rows,
            Err(e) => {
                self.admission.record(
                    &caller.user,
                    "flight",
                    "duration_ms",
                    turn.queued,
                    Some(e.message()),
                );
                return Err(e);
            }
        };
        let schema = rows.schema();
        let batches = limited(rows, turn, self.admission.clone(), caller.user);
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    fn prepared(&self, handle: &[u8], caller: &Caller) -> Result<Prepared, Status> {
        let found = self
            .prepared
            .lock()
            .ok()
            .and_then(|p| p.get(handle).cloned())
            .filter(|p| p.user == caller.user);
        found.ok_or_else(|| {
            Status::not_found("no such prepared statement (closed, or prepared by another login)")
        })
    }

    /// Run a statement that changes something and count the rows it wrote.
    async fn update(&self, caller: Caller, sql: &str) -> Result<i64, Status> {
        let (state, plan) = self.plan(&caller, sql, None).await?;
        self.run_update(caller, state, plan).await
    }

    /// Admit and run a command to its end; the rows it reports writing.
    async fn run_update(
        &self,
        caller: Caller,
        state: SessionState,
        plan: LogicalPlan,
    ) -> Result<i64, Status> {
        let turn = self.admission.admit().await?;
        let result = turn
            .within(async {
                let rows = self
                    .statements
                    .execute(&caller.session, state, plan)
                    .await
                    .map_err(|e| status(&e))?;
                rows_written(rows).await
            })
            .await;
        self.admission.record(
            &caller.user,
            "flight",
            "duration_ms",
            turn.queued,
            result.as_ref().err().map(|e| e.message()),
        );
        result
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let user = match (
            self.handlers.has_users(),
            header.and_then(basic_credentials),
        ) {
            (false, credentials) => credentials.map(|(u, _)| u).unwrap_or_else(|| "-".into()),
            (true, Some((user, password))) if self.handlers.check_password(&user, &password) => {
                user
            }
            (true, Some((user, _))) => {
                super::log(&format!(
                    "flight: login of user={user} refused: wrong password"
                ));
                return Err(Status::unauthenticated(format!(
                    "password authentication failed for user \"{user}\""
                )));
            }
            (true, None) => {
                return Err(Status::unauthenticated(
                    "authentication required: log in with a username and password ([server.users])",
                ))
            }
        };
        let token = uuid::Uuid::new_v4().simple().to_string();
        if let Ok(mut logins) = self.logins.lock() {
            bound(&mut logins, MAX_LOGINS, |l| l.since);
            logins.insert(
                token.clone(),
                Login {
                    user,
                    session: self.statements.connection_session(),
                    since: Instant::now(),
                },
            );
        }
        let bearer = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|e| Status::internal(format!("cannot issue a token: {e}")))?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.into_bytes().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        response.metadata_mut().insert("authorization", bearer);
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let (state, plan) = self.plan(&caller, &query.query, None).await?;
        let schema = Self::result_schema(&state, &plan).await?;
        // The ticket carries the SQL: whoever presents it is authenticated again and the
        // statement planned again in the caller's session, so no server state is needed.
        let ticket = TicketStatementQuery {
            statement_handle: query.query.into_bytes().into(),
        };
        Self::flight_info(
            &schema,
            ticket.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let sql = String::from_utf8(ticket.statement_handle.to_vec())
            .map_err(|_| Status::invalid_argument("the ticket is not one this server issued"))?;
        let (state, plan) = self.plan(&caller, &sql, None).await?;
        self.run(caller, state, plan).await
    }

    async fn do_put_statement_update(
        &self,
        command: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request)?;
        self.update(caller, &command.query).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        let (state, plan) = self.plan(&caller, &query.query, None).await?;
        let parameters = parameter_schema(&plan)?;
        let dataset = if parameters.fields().is_empty() {
            Self::result_schema(&state, &plan).await?
        } else {
            Arc::new(plan.schema().as_arrow().clone())
        };
        let handle = uuid::Uuid::new_v4().simple().to_string().into_bytes();
        if let Ok(mut prepared) = self.prepared.lock() {
            bound(&mut prepared, MAX_PREPARED, |p| p.since);
            prepared.insert(
                handle.clone(),
                Prepared {
                    user: caller.user,
                    sql: query.query,
                    parameters: None,
                    since: Instant::now(),
                },
            );
        }
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into(),
            dataset_schema: schema_bytes(&dataset)?,
            parameter_schema: schema_bytes(&parameters)?,
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        let caller = self.caller(&request)?;
        self.prepared(&query.prepared_statement_handle, &caller)?;
        if let Ok(mut prepared) = self.prepared.lock() {
            prepared.remove(query.prepared_statement_handle.as_ref());
        }
        Ok(())
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let caller = self.caller(&request)?;
        self.prepared(&query.prepared_statement_handle, &caller)?;
        let batches = parameter_batches(request).await?;
        let values = parameter_row(&batches)?;
        if let Ok(mut prepared) = self.prepared.lock() {
            if let Some(p) = prepared.get_mut(query.prepared_statement_handle.as_ref()) {
                p.parameters = Some(values);
            }
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(query.prepared_statement_handle),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let caller = self.caller(&request)?;
        let prepared = self.prepared(&command.prepared_statement_handle, &caller)?;
        let (state, plan) = self
            .plan(&caller, &prepared.sql, prepared.parameters.as_deref())
            .await?;
        let schema = Self::result_schema(&state, &plan).await?;
        Self::flight_info(
            &schema,
            command.as_any().encode_to_vec(),
            request.into_inner(),
        )
    }

    async fn do_get_prepared_statement(
        &self,
        command: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        let prepared = self.prepared(&command.prepared_statement_handle, &caller)?;
        let (state, plan) = self
            .plan(&caller, &prepared.sql, prepared.parameters.as_deref())
            .await?;
        self.run(caller, state, plan).await
    }

    async fn do_put_prepared_statement_update(
        &self,
        command: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        let caller = self.caller(&request)?;
        let prepared = self.prepared(&command.prepared_statement_handle, &caller)?;
        let batches = parameter_batches(request).await?;
        let (state, plan) = if batches.iter().all(|b| b.num_rows() == 0) {
            self.plan(&caller, &prepared.sql, None).await?
        } else {
            let values = parameter_row(&batches)?;
            self.plan(&caller, &prepared.sql, Some(&values)).await?
        };
        self.run_update(caller, state, plan).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query.as_any(), request)
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        Ok(one_batch(catalog::catalogs(&caller.session, query)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query.as_any(), request)
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        Ok(one_batch(catalog::db_schemas(&caller.session, query)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.metadata_info(&schema, query.as_any(), request)
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let caller = self.caller(&request)?;
        Ok(one_batch(catalog::tables(&caller.session, query).await?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.metadata_info(&schema, query.as_any(), request)
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request)?;
        Ok(one_batch(catalog::table_types(query)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query
            .clone()
            .into_builder(catalog::sql_info_data(self.read_only)?)
            .schema();
        self.metadata_info(&schema, query.as_any(), request)
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.caller(&request)?;
        Ok(one_batch(catalog::sql_info_batch(query, self.read_only)?))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::unimplemented(format!(
            "{} is not supported by sluice",
            message.type_url
        )))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
