//! Publishing into a PostgreSQL table: the stage is a staging table beside the target
//! (see `sluice_postgres::Staging`), and publishing is one transaction that stays open
//! until the run's other outputs are published too, so `--all-or-nothing` can still take
//! it back.

use datafusion::prelude::SessionContext;
use sluice_postgres::{Database, Erased, Publish, Staging, TableName};

use super::published::PublishedManifest;
use crate::error::{Result, SluiceError};
use crate::sources::postgres::{table_location, Databases};

/// A model's output table: the database and `schema.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseTable {
    pub database: String,
    pub table: TableName,
}

impl DatabaseTable {
    pub fn location(&self) -> String {
        table_location(&self.database, &self.table)
    }

    pub fn connection(&self, ctx: &SessionContext) -> Result<Database> {
        Databases::of_session(&ctx.state()).database(&self.database)
    }

    /// What a published table says about itself: its row count and columns as sluice
    /// reads them; None when the table does not exist. Volume and schema checks compare
    /// with this, as they compare file outputs with their manifest.
    pub async fn manifest(&self, ctx: &SessionContext) -> Result<Option<PublishedManifest>> {
        let database = self.connection(ctx)?;
        let Some(rows) = sluice_postgres::row_count(&database, &self.table)
            .await
            .map_err(SluiceError::Database)?
        else {
            return Ok(None);
        };
        let table = sluice_postgres::PostgresTable::open(
            database,
            sluice_postgres::Relation::Table(self.table.clone()),
        )
        .await
        .map_err(SluiceError::Database)?;
        use datafusion::catalog::TableProvider;
        let schema = table
            .schema()
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().to_string()))
            .collect();
        Ok(Some(PublishedManifest {
            rows,
            files: Vec::new(),
            schema,
            json: serde_json::Value::Null,
        }))
    }
}

/// A run's staging table for one output, and how its rows go in when published.
pub struct DatabaseStage {
    pub output: DatabaseTable,
    pub(crate) staging: tokio::sync::Mutex<Staging>,
    how: std::sync::Mutex<(Publish, Option<Erased>)>,
}

impl DatabaseStage {
    pub(crate) async fn begin(ctx: &SessionContext, output: &DatabaseTable) -> Result<Self> {
        let database = output.connection(ctx)?;
        let staging = Staging::begin(database, output.table.clone())
            .await
            .map_err(SluiceError::Database)?;
        Ok(DatabaseStage {
            output: output.clone(),
            staging: tokio::sync::Mutex::new(staging),
            how: std::sync::Mutex::new((Publish::Replace, None)),
        })
    }

    /// Say how the staged rows go in: replace, append, merge, and which published rows an
    /// erasure list removes.
    pub(crate) fn publish_as(&self, how: Publish, erased: Option<Erased>) {
        if let Ok(mut h) = self.how.lock() {
            *h = (how, erased);
        }
    }

    /// Whether the staged rows are the whole new output (not added to the published ones).
    pub(crate) fn replaces(&self) -> bool {
        self.how
            .lock()
            .map(|h| matches!(h.0, Publish::Replace))
            .unwrap_or(true)
    }

    /// The staging table as a location the session can read.
    pub(crate) async fn staging_location(&self) -> String {
        let staging = self.staging.lock().await.staging_table();
        format!("{}/", table_location(&self.output.database, &staging))
    }

    pub(crate) async fn publish(self) -> Result<sluice_postgres::Publishing> {
        let (how, erased) = self.how.into_inner().unwrap_or((Publish::Replace, None));
        self.staging
            .into_inner()
            .publish(how, erased)
            .await
            .map_err(SluiceError::Database)
    }

    pub(crate) async fn discard(self) {
        self.staging.into_inner().discard().await
    }
}
