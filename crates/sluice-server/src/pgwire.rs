//! The pgwire handlers: datafusion-postgres's session service (pg_catalog, simple and
//! extended protocols, types), wrapped with sluice's authentication, read-only guard,
//! concurrency limit, statement timeout, metrics and one log line per query.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use datafusion::prelude::SessionContext;
use datafusion_postgres::hooks::QueryHook;
use datafusion_postgres::DfSessionService;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::Sink;
use futures::StreamExt;
use pgwire::api::auth::sasl::scram::ScramAuth;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{AuthSource, DefaultServerParameterProvider, StartupHandler};
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::portal::Portal;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{DescribePortalResponse, DescribeStatementResponse, Response};
use pgwire::api::stmt::StoredStatement;
use pgwire::api::store::PortalStore;
use pgwire::api::ConnectionHandle;
use pgwire::api::{
    ClientInfo, ClientPortalStore, ConnectionManager, ErrorHandler, PgWireServerHandlers,
};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use tokio::sync::OwnedSemaphorePermit;

use super::admission::{Admission, Admitted, Stopped};
use super::auth::{user_of, Open, Startup, Users};
use super::connection::{user_error, ClientStatements, PortalFormat};
use super::statement::Statements;

/// Limits and instrumentation around datafusion-postgres's session service.
pub struct Service {
    inner: Arc<DfSessionService>,
    admission: Arc<Admission>,
}

/// Fires when the client cancels the statement (pgwire's cancel request).
type CancelSignal = Shared<BoxFuture<'static, ()>>;

/// Listen for a cancel request of the statement whose result is about to stream.
/// pgwire watches for cancels only until `do_query` returns; the result is produced while
/// it streams, so the listening moves to the stream.
async fn cancel_signal<C: ClientInfo>(client: &C) -> Option<CancelSignal> {
    let handle = client.session_extensions().get::<Arc<ConnectionHandle>>()?;
    let rx = handle.start_query().await;
    Some(
        async move {
            if rx.await.is_err() {
                // Replaced by the next statement's listener: this one never fires.
                futures::future::pending::<()>().await;
            }
        }
        .boxed()
        .shared(),
    )
}

fn canceled() -> PgWireError {
    user_error("57014", "canceling statement due to user request".into())
}

fn timed_out(limit: Duration) -> PgWireError {
    stopped(Stopped::TimedOut(limit))
}

/// Make a query result's row stream obey the statement's deadline and the client's cancel,
/// and hold the concurrency permit until the last row is sent.
fn bounded(
    response: Response,
    deadline: Option<(tokio::time::Instant, Duration)>,
    permit: Arc<OwnedSemaphorePermit>,
    cancel: Option<CancelSignal>,
) -> Response {
    let Response::Query(mut query) = response else {
        return response;
    };
    let rows = std::mem::replace(query.data_rows(), Box::pin(futures::stream::empty()));
    let cancel = cancel.unwrap_or_else(|| futures::future::pending::<()>().boxed().shared());
    let (at, limit) = deadline.unwrap_or((
        tokio::time::Instant::now() + Duration::from_secs(100 * 365 * 86_400),
        Duration::ZERO,
    ));
    let state = (
        rows,
        Box::pin(tokio::time::sleep_until(at)),
        cancel,
        permit,
        false,
    );
    let limited = futures::stream::unfold(
        state,
        move |(mut rows, mut sleep, cancel, permit, stop)| async move {
            if stop {
                return None;
            }
            tokio::select! {
                biased;
                _ = cancel.clone() => Some((Err(canceled()), (rows, sleep, cancel, permit, true))),
                _ = &mut sleep => Some((Err(timed_out(limit)), (rows, sleep, cancel, permit, true))),
                item = rows.next() => item.map(|r| (r, (rows, sleep, cancel, permit, false))),
            }
        },
    );
    *query.data_rows() = Box::pin(limited);
    Response::Query(query)
}

impl Service {
    async fn admit(&self) -> PgWireResult<Admitted> {
        self.admission.admit().await.map_err(stopped)
    }

    fn record(&self, user: &str, protocol: &str, queued: Instant, failed: Option<&PgWireError>) {
        let error = failed.map(short_error);
        self.admission
            .record(user, protocol, "planned_ms", queued, error.as_deref());
    }
}

fn stopped(why: Stopped) -> PgWireError {
    match why {
        Stopped::ShuttingDown => user_error("57P03", why.to_string()),
        Stopped::TimedOut(_) => user_error("57014", why.to_string()),
    }
}

impl From<Stopped> for PgWireError {
    fn from(why: Stopped) -> Self {
        stopped(why)
    }
}

fn short_error(e: &PgWireError) -> String {
    match e {
        PgWireError::UserError(info) => format!("{} {}", info.code, info.message),
        other => other.to_string(),
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = user_of(client);
        let turn = self.admit().await?;
        let result = turn
            .within(SimpleQueryHandler::do_query(
                self.inner.as_ref(),
                client,
                query,
            ))
            .await;
        self.record(&user, "simple", turn.queued, result.as_ref().err());
        let responses = result?;
        let cancel = cancel_signal(client).await;
        Ok(responses
            .into_iter()
            .map(|r| bounded(r, turn.deadline, turn.permit.clone(), cancel.clone()))
            .collect())
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = <DfSessionService as ExtendedQueryHandler>::Statement;
    type QueryParser = <DfSessionService as ExtendedQueryHandler>::QueryParser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.inner.query_parser()
    }

    async fn do_describe_statement<C>(
        &self,
        client: &mut C,
        target: &StoredStatement<Self::Statement>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.inner.do_describe_statement(client, target).await
    }

    async fn do_describe_portal<C>(
        &self,
        client: &mut C,
        target: &Portal<Self::Statement>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        self.inner.do_describe_portal(client, target).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let user = user_of(client);
        client
            .session_extensions()
            .insert(PortalFormat(portal.result_column_format.clone()));
        let turn = self.admit().await?;
        let result = turn
            .within(ExtendedQueryHandler::do_query(
                self.inner.as_ref(),
                client,
                portal,
                max_rows,
            ))
            .await;
        self.record(&user, "extended", turn.queued, result.as_ref().err());
        let response = result?;
        let cancel = cancel_signal(client).await;
        Ok(bounded(response, turn.deadline, turn.permit, cancel))
    }
}

struct QuietErrors;

impl ErrorHandler for QuietErrors {
    fn on_error<C>(&self, _client: &C, _error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        // Errors are logged once, with the query, by `Service`.
    }
}

/// Everything pgwire needs to serve a connection.
pub struct Handlers {
    service: Arc<Service>,
    users: Arc<Users>,
    connections: Arc<ConnectionManager>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Handlers {
    pub fn new(
        ctx: Arc<SessionContext>,
        statements: Arc<Statements>,
        users: Users,
        read_only: bool,
        admission: Arc<Admission>,
    ) -> Handlers {
        let metrics = admission.metrics().clone();
        // One hook answers every statement; datafusion-postgres parses and binds.
        let hooks: Vec<Arc<dyn QueryHook>> = vec![Arc::new(ClientStatements::new(
            statements, read_only, metrics,
        ))];
        let inner = Arc::new(DfSessionService::new_with_hooks(ctx, hooks));
        let connections = Arc::new(ConnectionManager::new());
        Handlers {
            service: Arc::new(Service { inner, admission }),
            users: Arc::new(users),
            cancel: Arc::new(DefaultCancelHandler::new(connections.clone())),
            connections,
        }
    }
}

impl Handlers {
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// HTTP basic auth against the same users (always true when there are none).
    pub fn check_password(&self, user: &str, password: &str) -> bool {
        self.users.is_empty() || self.users.check(user, password)
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        if self.users.is_empty() {
            return Arc::new(Startup::Open(Open {
                connections: self.connections.clone(),
            }));
        }
        let mut params = DefaultServerParameterProvider::default();
        params.server_version = format!("16.0 (sluice {})", env!("CARGO_PKG_VERSION"));
        let scram = ScramAuth::new(self.users.clone() as Arc<dyn AuthSource>);
        Arc::new(Startup::Scram(
            SASLAuthStartupHandler::new(Arc::new(params))
                .with_scram(scram)
                .with_connection_manager(self.connections.clone()),
        ))
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(QuietErrors)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}
