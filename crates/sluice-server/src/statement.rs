//! How a client's statement runs on the server, for every protocol: in the client's own
//! session (its settings and prepared statements; with `--allow-write`, what it creates),
//! under the per-statement memory limit (`--query-memory-limit`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use datafusion::common::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    human_readable_size, MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::execution::{
    SendableRecordBatchStream, SessionState, SessionStateBuilder, TaskContext,
};
use datafusion::logical_expr::{DdlStatement, DropTable, DropView, LogicalPlan};
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::SessionContext;

use crate::own_catalog::{project_object, OwnCatalogList};

/// What every statement on this server runs with.
pub struct Statements {
    project: Arc<SessionContext>,
    allow_write: bool,
    /// Who may read personal columns unhashed.
    pub personal: crate::personal::PersonalAccess,
    /// Bytes one statement may hold in the shared pool before it spills or fails.
    memory_limit: usize,
}

impl Statements {
    pub fn new(project: Arc<SessionContext>, allow_write: bool, memory_limit: usize) -> Self {
        Statements {
            project,
            allow_write,
            personal: Default::default(),
            memory_limit,
        }
    }

    pub fn with_personal(mut self, personal: crate::personal::PersonalAccess) -> Self {
        self.personal = personal;
        self
    }

    pub fn memory_limit(&self) -> usize {
        self.memory_limit
    }

    /// The session a new connection (or HTTP request) runs in: the project's catalog and
    /// functions, with settings and prepared statements of its own. With `--allow-write` its
    /// catalog reads through to the project's and keeps what the connection creates.
    pub fn connection_session(&self) -> Arc<SessionContext> {
        let state = self.project.state();
        let state = if self.allow_write {
            let own = Arc::new(OwnCatalogList::over(state.catalog_list().clone()));
            SessionStateBuilder::new_from_existing(state)
                .with_catalog_list(own)
                .build()
        } else {
            state
        };
        Arc::new(SessionContext::new_with_state(state))
    }

    /// The runtime of one statement: the session's, with a memory pool that holds the
    /// statement to its limit inside the shared pool.
    fn statement_runtime(&self, session: &RuntimeEnv) -> Arc<RuntimeEnv> {
        let mut runtime = session.clone();
        runtime.memory_pool = Arc::new(StatementPool {
            shared: session.memory_pool.clone(),
            limit: self.memory_limit,
            used: AtomicUsize::new(0),
        });
        Arc::new(runtime)
    }

    /// What a statement planned in `state` runs with: its functions and settings, and a
    /// memory pool of its own (one statement at a time may run with it).
    pub fn statement_task(&self, state: &SessionState) -> Arc<TaskContext> {
        let runtime = self.statement_runtime(state.runtime_env());
        Arc::new(TaskContext::from(state).with_runtime(runtime))
    }

    /// Start a statement planned in `state`, a snapshot of `session`. A query's rows stream as they are
    /// computed; a command has run (or runs as its stream is read) and streams its count.
    pub async fn execute(
        &self,
        session: &SessionContext,
        state: SessionState,
        plan: LogicalPlan,
    ) -> Result<SendableRecordBatchStream> {
        let runtime = self.statement_runtime(state.runtime_env());
        if let LogicalPlan::Ddl(DdlStatement::DropTable(DropTable { name, .. }))
        | LogicalPlan::Ddl(DdlStatement::DropView(DropView { name, .. })) = &plan
        {
            // DataFusion reports a refused drop as a table that does not exist; say why.
            if self.project.table_exist(name.clone())? {
                return Err(project_object("table", name.table()));
            }
        }
        match &plan {
            // Statements that compute rows to store or write: run under the limit, with the
            // connection's catalog (what they create lands there).
            LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(_))
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_) => {
                let limited = SessionStateBuilder::new_from_existing(state)
                    .with_runtime_env(runtime)
                    .build();
                SessionContext::new_with_state(limited)
                    .execute_logical_plan(plan)
                    .await?
                    .execute_stream()
                    .await
            }
            // Catalog changes and settings change the connection's session itself.
            LogicalPlan::Ddl(_) | LogicalPlan::Statement(_) => {
                session
                    .execute_logical_plan(plan)
                    .await?
                    .execute_stream()
                    .await
            }
            _ => {
                let physical = state.create_physical_plan(&plan).await?;
                execute_stream(
                    physical,
                    Arc::new(TaskContext::from(&state).with_runtime(runtime)),
                )
            }
        }
    }
}

/// One statement's share of the server's pool: every reservation goes to the shared pool
/// (so the server's total stays bounded and spilling works as before) and counts against
/// the statement's own limit.
#[derive(Debug)]
struct StatementPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    used: AtomicUsize,
}

impl std::fmt::Display for StatementPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "statement pool ({} of {} in use)",
            human_readable_size(self.used.load(Ordering::Relaxed)),
            human_readable_size(self.limit)
        )
    }
}

impl MemoryPool for StatementPool {
    fn name(&self) -> &str {
        "statement"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.used.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.used.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        let before = self.used.fetch_add(additional, Ordering::Relaxed);
        if before + additional > self.limit {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "the statement needs more memory than the per-query limit of {} (--query-memory-limit): {} more for {}, with {} held by the statement",
                human_readable_size(self.limit),
                human_readable_size(additional),
                reservation.consumer().name(),
                human_readable_size(before),
            )));
        }
        if let Err(e) = self.shared.try_grow(reservation, additional) {
            self.used.fetch_sub(additional, Ordering::Relaxed);
            return Err(e);
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}
