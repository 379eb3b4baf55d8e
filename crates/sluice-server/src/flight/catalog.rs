//! What catalog browsers and ADBC's `adbc_get_objects` ask a Flight SQL server: catalogs,
//! schemas, tables (with their Arrow schemas when asked), table types and server facts.
//! The filters (catalog name, LIKE patterns on schemas and tables, table types) are applied
//! by arrow-flight's builders, as the Flight SQL specification defines them.

use std::sync::LazyLock;

use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, SqlInfo, SqlNullOrdering, SqlSupportedCaseSensitivity,
};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use tonic::Status;

/// The table types this server has, by the names Flight SQL clients expect.
const TABLE_TYPES: [&str; 2] = ["TABLE", "VIEW"];

fn type_name(table_type: TableType) -> &'static str {
    match table_type {
        TableType::View => "VIEW",
        TableType::Base | TableType::Temporary => "TABLE",
    }
}

fn arrow_status(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("cannot encode the catalog: {e}"))
}

type Info = Result<SqlInfoData, String>;
static SQL_INFO: LazyLock<Info> = LazyLock::new(|| sql_info(true));
static SQL_INFO_WRITABLE: LazyLock<Info> = LazyLock::new(|| sql_info(false));

fn sql_info(read_only: bool) -> Info {
    let mut info = SqlInfoDataBuilder::new();
    info.append(SqlInfo::FlightSqlServerName, "sluice");
    info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    // The Arrow columnar format version (Schema.fbs), not the arrow crate's.
    info.append(SqlInfo::FlightSqlServerArrowVersion, "1.5");
    info.append(SqlInfo::FlightSqlServerReadOnly, read_only);
    info.append(SqlInfo::FlightSqlServerSql, true);
    info.append(SqlInfo::FlightSqlServerSubstrait, false);
    info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
    info.append(SqlInfo::FlightSqlServerCancel, false);
    info.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    info.append(SqlInfo::SqlDdlCatalog, false);
    info.append(SqlInfo::SqlDdlSchema, false);
    info.append(SqlInfo::SqlDdlTable, !read_only);
    info.append(
        SqlInfo::SqlIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
    );
    info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    info.append(
        SqlInfo::SqlQuotedIdentifierCase,
        SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
    );
    info.append(
        SqlInfo::SqlNullOrdering,
        SqlNullOrdering::SqlNullsSortedHigh as i32,
    );
    info.append(SqlInfo::SqlAllTablesAreSelectable, true);
    info.append(SqlInfo::SqlTransactionsSupported, false);
    info.build().map_err(|e| e.to_string())
}

pub fn sql_info_data(read_only: bool) -> Result<&'static SqlInfoData, Status> {
    let info = if read_only {
        &*SQL_INFO
    } else {
        &*SQL_INFO_WRITABLE
    };
    info.as_ref()
        .map_err(|e| Status::internal(format!("cannot describe the server: {e}")))
}

pub fn sql_info_batch(query: CommandGetSqlInfo, read_only: bool) -> Result<RecordBatch, Status> {
    query
        .into_builder(sql_info_data(read_only)?)
        .build()
        .map_err(arrow_status)
}

pub fn catalogs(ctx: &SessionContext, query: CommandGetCatalogs) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for name in ctx.catalog_names() {
        builder.append(name);
    }
    builder.build().map_err(arrow_status)
}

pub fn db_schemas(ctx: &SessionContext, query: CommandGetDbSchemas) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            builder.append(&catalog_name, schema_name);
        }
    }
    builder.build().map_err(arrow_status)
}

pub fn table_types(query: CommandGetTableTypes) -> Result<RecordBatch, Status> {
    let mut builder = query.into_builder();
    for name in TABLE_TYPES {
        builder.append(name);
    }
    builder.build().map_err(arrow_status)
}

/// Every table and view, with its Arrow schema when the client asks for schemas. A source
/// that cannot be opened (a missing file) is listed with an empty schema rather than
/// failing the whole listing; the reason is logged.
pub async fn tables(ctx: &SessionContext, query: CommandGetTables) -> Result<RecordBatch, Status> {
    let include_schema = query.include_schema;
    let wanted_catalog = query.catalog.clone();
    let mut builder = query.into_builder();
    let empty = Schema::empty();
    for catalog_name in ctx.catalog_names() {
        if wanted_catalog.as_ref().is_some_and(|c| *c != catalog_name) {
            continue;
        }
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        for schema_name in catalog.schema_names() {
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut names = schema.table_names();
            names.sort();
            for table_name in names {
                let (kind, table_schema) = match schema.table(&table_name).await {
                    Ok(Some(table)) => (
                        type_name(table.table_type()),
                        include_schema.then(|| table.schema()),
                    ),
                    Ok(None) => continue,
                    Err(e) => {
                        crate::log(&format!(
                            "flight: cannot open {schema_name}.{table_name} for GetTables: {}",
                            crate::error::describe_datafusion_error(&e)
                        ));
                        ("TABLE", None)
                    }
                };
                builder
                    .append(
                        &catalog_name,
                        &schema_name,
                        &table_name,
                        kind,
                        table_schema.as_deref().unwrap_or(&empty),
                    )
                    .map_err(arrow_status)?;
            }
        }
    }
    builder.build().map_err(arrow_status)
}
