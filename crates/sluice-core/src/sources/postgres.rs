//! Database sources and outputs: the project's `[databases]` as a session knows them, and
//! a source's table or query (or a model published to a database) opened as a table.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::error::{DataFusionError, Result as DFResult};
use datafusion::execution::context::SessionState;
use sluice_postgres::{Database, PostgresTable, Relation, TableName};

use super::SourceDef;
use crate::config::{read_secret, DatabaseConfig, Project, SourceConfig};
use crate::error::{Result, SluiceError};

/// The scheme of a database table as a location: `pgtable://DATABASE/schema.table`.
pub const TABLE_SCHEME: &str = "pgtable";

/// The project's databases, carried in the session's config so that every part that opens
/// a table (sources, published models, checks on staged rows) finds them.
#[derive(Debug, Clone, Default)]
pub struct Databases {
    root: PathBuf,
    configs: BTreeMap<String, DatabaseConfig>,
}

impl Databases {
    pub fn of_project(project: &Project) -> Databases {
        Databases {
            root: project.root.clone(),
            configs: project.config.databases.clone(),
        }
    }

    /// The database's connection settings; its URL is read now (from the environment or
    /// a file), so a change is seen by the next statement.
    pub fn database(&self, name: &str) -> Result<Database> {
        let config = self.configs.get(name).ok_or_else(|| {
            SluiceError::sql(format!(
                "unknown database `{name}`: add [databases.{name}] to sluice.toml"
            ))
        })?;
        let url = read_secret(&format!("databases.{name}.url"), &config.url, &self.root)?;
        let url = String::from_utf8(url).map_err(|_| {
            SluiceError::sql(format!("database `{name}`: its URL is not UTF-8 text"))
        })?;
        Database::parse(name, &url).map_err(SluiceError::Database)
    }

    /// The databases of a session.
    pub fn of_session(state: &SessionState) -> Arc<Databases> {
        state
            .config()
            .get_extension::<Databases>()
            .unwrap_or_default()
    }
}

/// How a database source is named in messages.
pub fn location(database: &str, config: &SourceConfig) -> String {
    match &config.table {
        Some(table) => format!("database `{database}`, table {table}"),
        None => format!("database `{database}`, query"),
    }
}

/// A database table as a location.
pub fn table_location(database: &str, table: &TableName) -> String {
    format!("{TABLE_SCHEME}://{database}/{table}")
}

/// `pgtable://DATABASE/schema.table` split into the database and the table.
pub fn parse_table_location(location: &str) -> Option<(String, TableName)> {
    let rest = location.strip_prefix(&format!("{TABLE_SCHEME}://"))?;
    let (database, table) = rest.trim_end_matches('/').split_once('/')?;
    Some((database.to_string(), TableName::parse(table).ok()?))
}

/// Open a database source, or a model's output table, as a table.
pub async fn open(state: &SessionState, def: &SourceDef) -> DFResult<Arc<dyn TableProvider>> {
    let fail = |message: String| {
        DataFusionError::External(Box::new(SluiceError::Source {
            name: def.name.clone(),
            location: Some(def.location.trim_end_matches('/').to_string()),
            message,
        }))
    };
    let (database, relation) = match (&def.config.database, &def.config.table, &def.config.query) {
        (Some(database), Some(table), _) => (
            database.clone(),
            Relation::Table(TableName::parse(table).map_err(fail)?),
        ),
        (Some(database), None, Some(query)) => (database.clone(), Relation::Query(query.clone())),
        _ => match parse_table_location(&def.location) {
            Some((database, table)) => (database, Relation::Table(table)),
            None => return Err(fail(format!("not a database table: {}", def.location))),
        },
    };
    let database = Databases::of_session(state)
        .database(&database)
        .map_err(|e| match e {
            SluiceError::Database(e) => fail(e.message()),
            other => fail(other.to_string()),
        })?;
    let table = PostgresTable::open(database, relation)
        .await
        .map_err(|e| fail(e.message()))?;
    Ok(Arc::new(table))
}
