//! A connection's own catalog under `--allow-write`: the project's catalogs, schemas and
//! tables read through, and what the connection creates (tables, views, schemas) kept in
//! layers of its own, so that one client's `CREATE TABLE` or `SELECT ... INTO` is never
//! seen by another, dies with its connection, and cannot drop or replace a project table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::catalog::{CatalogProvider, CatalogProviderList, SchemaProvider, TableProvider};
use datafusion::common::{plan_datafusion_err, DataFusionError, Result};

/// The lock only guards maps; a panic while holding it leaves them usable.
fn locked<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The project's names, then the connection's own that the project does not have.
fn names_with_own<'a>(
    mut names: Vec<String>,
    own: impl Iterator<Item = &'a String>,
) -> Vec<String> {
    for name in own {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

#[derive(Debug)]
pub struct OwnCatalogList {
    project: Arc<dyn CatalogProviderList>,
    layers: Mutex<HashMap<String, Arc<dyn CatalogProvider>>>,
}

impl OwnCatalogList {
    pub fn over(project: Arc<dyn CatalogProviderList>) -> OwnCatalogList {
        OwnCatalogList {
            project,
            layers: Mutex::new(HashMap::new()),
        }
    }
}

impl CatalogProviderList for OwnCatalogList {
    fn register_catalog(
        &self,
        name: String,
        catalog: Arc<dyn CatalogProvider>,
    ) -> Option<Arc<dyn CatalogProvider>> {
        locked(&self.layers).insert(name, catalog)
    }

    fn catalog_names(&self) -> Vec<String> {
        names_with_own(self.project.catalog_names(), locked(&self.layers).keys())
    }

    fn catalog(&self, name: &str) -> Option<Arc<dyn CatalogProvider>> {
        let mut layers = locked(&self.layers);
        if let Some(layer) = layers.get(name) {
            return Some(layer.clone());
        }
        let project = self.project.catalog(name)?;
        let layer: Arc<dyn CatalogProvider> = Arc::new(OwnCatalog {
            project,
            layers: Mutex::new(HashMap::new()),
        });
        layers.insert(name.to_string(), layer.clone());
        Some(layer)
    }
}

#[derive(Debug)]
struct OwnCatalog {
    project: Arc<dyn CatalogProvider>,
    layers: Mutex<HashMap<String, Arc<dyn SchemaProvider>>>,
}

impl CatalogProvider for OwnCatalog {
    fn schema_names(&self) -> Vec<String> {
        names_with_own(self.project.schema_names(), locked(&self.layers).keys())
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        let mut layers = locked(&self.layers);
        if let Some(layer) = layers.get(name) {
            return Some(layer.clone());
        }
        let project = self.project.schema(name)?;
        let layer: Arc<dyn SchemaProvider> = Arc::new(OwnSchema {
            project: Some(project),
            tables: Mutex::new(HashMap::new()),
        });
        layers.insert(name.to_string(), layer.clone());
        Some(layer)
    }

    fn register_schema(
        &self,
        name: &str,
        schema: Arc<dyn SchemaProvider>,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        if self.project.schema(name).is_some() {
            return Err(project_object("schema", name));
        }
        // DataFusion's CREATE SCHEMA hands over an in-memory schema; keep it as given.
        Ok(locked(&self.layers).insert(name.to_string(), schema))
    }

    fn deregister_schema(
        &self,
        name: &str,
        cascade: bool,
    ) -> Result<Option<Arc<dyn SchemaProvider>>> {
        if self.project.schema(name).is_some() {
            return Err(project_object("schema", name));
        }
        let mut layers = locked(&self.layers);
        match layers.get(name) {
            Some(schema) if !cascade && !schema.table_names().is_empty() => Err(
                plan_datafusion_err!("schema `{name}` is not empty; use DROP SCHEMA ... CASCADE"),
            ),
            Some(_) => Ok(layers.remove(name)),
            None => Ok(None),
        }
    }
}

#[derive(Debug)]
struct OwnSchema {
    project: Option<Arc<dyn SchemaProvider>>,
    tables: Mutex<HashMap<String, Arc<dyn TableProvider>>>,
}

pub fn project_object(kind: &str, name: &str) -> DataFusionError {
    plan_datafusion_err!(
        "`{name}` is the project's {kind}: a connection cannot replace or drop it (what a connection creates is its own; publish project tables with `sluice run`)"
    )
}

#[async_trait::async_trait]
impl SchemaProvider for OwnSchema {
    fn table_names(&self) -> Vec<String> {
        let project = self
            .project
            .as_ref()
            .map(|p| p.table_names())
            .unwrap_or_default();
        names_with_own(project, locked(&self.tables).keys())
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let own = locked(&self.tables).get(name).cloned();
        match (own, &self.project) {
            (Some(table), _) => Ok(Some(table)),
            (None, Some(project)) => project.table(name).await,
            (None, None) => Ok(None),
        }
    }

    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> Result<Option<Arc<dyn TableProvider>>> {
        if self.project.as_ref().is_some_and(|p| p.table_exist(&name)) {
            return Err(project_object("table", &name));
        }
        Ok(locked(&self.tables).insert(name, table))
    }

    fn deregister_table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(table) = locked(&self.tables).remove(name) {
            return Ok(Some(table));
        }
        if self.project.as_ref().is_some_and(|p| p.table_exist(name)) {
            return Err(project_object("table", name));
        }
        Ok(None)
    }

    fn table_exist(&self, name: &str) -> bool {
        locked(&self.tables).contains_key(name)
            || self.project.as_ref().is_some_and(|p| p.table_exist(name))
    }
}
