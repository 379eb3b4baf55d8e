//! Registering models in the session: published outputs and staged files as tables,
//! planned queries as views, and the project's models declared without building them.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::ViewTable;
use datafusion::prelude::SessionContext;

use super::model::Materialized;
use super::plan::*;
use super::publish::Output;
use crate::config::FileFormat;
use crate::error::{describe_datafusion_error, Result, SluiceError};
use crate::session::Session;
use crate::sources::{open_source, ModelTable, SourceDef};

/// Register a folder or prefix of output files as a table (a published model, a staged one).
pub(crate) async fn register_location(
    ctx: &SessionContext,
    name: &str,
    url: &str,
    format: FileFormat,
) -> Result<()> {
    let def = SourceDef::prefix(name, url, format);
    let table = open_source(&ctx.state(), &def)
        .await
        .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))?;
    replace_table(ctx, name, table)
}

/// Register an already planned query as a view (CREATE OR REPLACE VIEW would plan the
/// SQL a second time).
pub(crate) fn register_view(
    ctx: &SessionContext,
    name: &str,
    df: &DataFrame,
    sql: &str,
) -> Result<()> {
    let view = ViewTable::new(df.logical_plan().clone(), Some(sql.to_string()));
    replace_table(ctx, name, Arc::new(view))
}

/// Column names and types of a model's output, as recorded in manifests and history.
pub(crate) fn output_schema(df: &DataFrame) -> Vec<(String, String)> {
    df.schema()
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string()))
        .collect()
}

/// A table registered for one step of a build (`__previous_m`, `__staged_m`), released
/// when the guard goes out of scope, whichever way the step ends.
pub(crate) struct TempTable<'a> {
    ctx: &'a SessionContext,
    pub name: String,
}

impl<'a> TempTable<'a> {
    pub(crate) fn new(ctx: &'a SessionContext, name: String) -> Self {
        TempTable { ctx, name }
    }
}

impl Drop for TempTable<'_> {
    fn drop(&mut self) {
        let _ = self.ctx.deregister_table(&self.name);
    }
}

pub(crate) fn replace_table(
    ctx: &SessionContext,
    name: &str,
    table: Arc<dyn TableProvider>,
) -> Result<()> {
    let _ = ctx.deregister_table(name);
    ctx.register_table(name, table)
        .map_err(|e| SluiceError::sql(describe_datafusion_error(&e)))?;
    Ok(())
}

/// Make the project's models queryable by name without building them.
pub fn declare_models(session: &Session, plan: &ProjectPlan) {
    session.schema.declare_models(model_tables(plan));
}

/// The project's models as tables: views by their SQL, tables by their published output
/// (when there is one). Nothing is read or planned until a statement uses a model.
pub fn model_tables(plan: &ProjectPlan) -> Vec<(String, ModelTable)> {
    let models = plan.order.iter().filter_map(|&i| {
        let m = &plan.planned[i].model;
        let table = match m.materialized {
            Materialized::View => ModelTable::View {
                sql: plan.planned[i].sql.clone(),
            },
            _ => {
                let output = plan.location(i);
                // On S3 whether it was published is known only by asking, on first use.
                let local_marker = match &output {
                    Output::Local(dir) => Some(dir.join("_SUCCESS")),
                    Output::Delta(l) if !l.contains("://") => {
                        Some(std::path::Path::new(l).join("_delta_log"))
                    }
                    _ => None,
                };
                if local_marker.is_some_and(|m| !m.exists()) {
                    return None;
                }
                ModelTable::Published(Box::new(SourceDef::prefix(
                    &m.name,
                    &output.url(),
                    m.format,
                )))
            }
        };
        Some((m.name.clone(), table))
    });
    models.collect()
}
