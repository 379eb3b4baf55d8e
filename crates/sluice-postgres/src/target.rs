//! A model's output published into a PostgreSQL table.
//!
//! The rows are copied (binary COPY) into a staging table beside the target, named
//! `_sluice_staging_<table>`; the model's checks read them there; then one transaction
//! puts them in the target. A replaced table keeps its identity (grants, owner, dependent
//! views, indexes): its rows are deleted and the staged rows inserted by column name, so a
//! reader sees the old rows or the new, whatever its isolation level. Only a change of
//! column names recreates the table (grants and owner carried over); views that depend on
//! it stop that, with the server's message. A session-level advisory lock on the target keeps two runs apart;
//! a killed run's staging table is dropped by the next run that takes the lock.

use std::sync::Arc;

use bytes::BytesMut;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::error::DataFusionError;
use futures::{SinkExt, Stream, StreamExt};
use tokio_postgres::Client;

use crate::connect::{quote_ident, Database, PgError};
use crate::types::{column_type, writable};

/// `schema.table`; `public` when no schema is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableName {
    pub schema: String,
    pub table: String,
}

impl TableName {
    pub fn parse(name: &str) -> Result<TableName, String> {
        let parts: Vec<&str> = name.trim().split('.').collect();
        let valid = |p: &str| !p.is_empty() && !p.contains('"');
        match parts[..] {
            [table] if valid(table) => Ok(TableName {
                schema: "public".into(),
                table: table.into(),
            }),
            [schema, table] if valid(schema) && valid(table) => Ok(TableName {
                schema: schema.into(),
                table: table.into(),
            }),
            _ => Err(format!(
                "`{name}` is not a table name: expected `schema.table` or `table`"
            )),
        }
    }

    pub fn quoted(&self) -> String {
        format!("{}.{}", quote_ident(&self.schema), quote_ident(&self.table))
    }

    /// The staging table of this target: recognisable as sluice's, at most 63 bytes.
    fn staging(&self) -> TableName {
        let mut table = format!("_sluice_staging_{}", self.table);
        while table.len() > 63 {
            table.pop();
        }
        TableName {
            schema: self.schema.clone(),
            table,
        }
    }
}

impl std::fmt::Display for TableName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.schema, self.table)
    }
}

/// How the staged rows go into the target.
#[derive(Debug, Clone)]
pub enum Publish {
    /// The staged rows are the whole new output.
    Replace,
    /// Added to the published rows.
    Append,
    /// Published rows with a key that comes again are replaced.
    Merge { keys: Vec<String> },
}

/// Published rows to delete in the same transaction: those whose `column` (as text) is
/// one of `keys` (an erasure list).
#[derive(Debug, Clone)]
pub struct Erased {
    pub column: String,
    pub keys: Vec<String>,
}

/// What the staging table holds once written.
#[derive(Debug, Clone)]
pub struct Written {
    pub rows: u64,
    pub bytes: u64,
}

/// A run's staging table for one target, and the connection that holds the target's lock.
pub struct Staging {
    database: Database,
    client: Client,
    target: TableName,
    staging: TableName,
    target_exists: bool,
    same_columns: bool,
    unlogged: bool,
    /// The staged columns, quoted, for inserting by name.
    columns: Vec<String>,
}

const BATCH_BYTES: usize = 4 << 20;

impl Staging {
    /// Take the target's lock, check its schema exists, and drop what a killed run left.
    pub async fn begin(database: Database, target: TableName) -> Result<Staging, PgError> {
        let client = database.connect().await?;
        let what = format!("table {target}");
        let failed = |e: tokio_postgres::Error| PgError::statement(&database, &what, &e);
        let locked: bool = client
            .query_one(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))",
                &[&format!("sluice publish {}", target.quoted())],
            )
            .await
            .map_err(failed)?
            .get(0);
        if !locked {
            return Err(PgError::other(
                &database,
                &what,
                "another sluice run is publishing to this table; try again when it has finished"
                    .into(),
            ));
        }
        let schema_exists = client
            .query_opt(
                "SELECT 1 FROM pg_namespace WHERE nspname = $1",
                &[&target.schema],
            )
            .await
            .map_err(failed)?
            .is_some();
        if !schema_exists {
            return Err(PgError::other(
                &database,
                &what,
                format!(
                    "schema `{}` does not exist; create it (CREATE SCHEMA {}) or name another",
                    target.schema,
                    quote_ident(&target.schema)
                ),
            ));
        }
        let staging = target.staging();
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", staging.quoted()))
            .await
            .map_err(failed)?;
        let target_exists = exists(&client, &target).await.map_err(failed)?;
        Ok(Staging {
            database,
            client,
            target,
            staging,
            target_exists,
            same_columns: false,
            unlogged: false,
            columns: Vec::new(),
        })
    }

    pub fn target_exists(&self) -> bool {
        self.target_exists
    }

    /// The staging table, for the checks to read.
    pub fn staging_table(&self) -> TableName {
        self.staging.clone()
    }

    fn what(&self) -> String {
        format!("table {}", self.target)
    }

    fn failed(&self, e: tokio_postgres::Error) -> PgError {
        PgError::statement(&self.database, self.what(), &e)
    }

    /// Create the staging table for rows of `schema` and copy `batches` into it.
    pub async fn write<S>(
        &mut self,
        schema: SchemaRef,
        batches: S,
    ) -> Result<Written, DataFusionError>
    where
        S: Stream<Item = Result<RecordBatch, DataFusionError>>,
    {
        let external = |e: PgError| DataFusionError::External(Box::new(e));
        let fields: Vec<Field> = schema
            .fields()
            .iter()
            .map(|f| Field::new(f.name(), writable(f.data_type()), true))
            .collect();
        let written_schema = Arc::new(Schema::new(fields));
        let mut columns = Vec::new();
        for f in written_schema.fields() {
            let Some(ty) = column_type(f.data_type()) else {
                return Err(external(PgError::other(
                    &self.database,
                    self.what(),
                    format!(
                        "column `{}` is {}, which has no PostgreSQL column type here; cast it in the model",
                        f.name(),
                        f.data_type()
                    ),
                )));
            };
            columns.push(format!("{} {ty}", quote_ident(f.name())));
        }
        // Rows that will be inserted into an existing table need no WAL of their own.
        self.unlogged = self.target_exists;
        let create = format!(
            "CREATE {}TABLE {} ({}); COMMENT ON TABLE {} IS {}",
            if self.unlogged { "UNLOGGED " } else { "" },
            self.staging.quoted(),
            columns.join(", "),
            self.staging.quoted(),
            literal(&format!(
                "sluice staging table for {}; the next run publishing there drops it",
                self.target
            ))
        );
        self.client
            .batch_execute(&create)
            .await
            .map_err(|e| external(self.failed(e)))?;
        if self.target_exists {
            // Same names: rows go in by name, with PostgreSQL's assignment casts for
            // types the consumers chose (varchar(100) for text, say).
            let names = |mut columns: Vec<(String, String)>| {
                columns.sort();
                columns
                    .into_iter()
                    .map(|(name, _)| name)
                    .collect::<Vec<_>>()
            };
            self.same_columns = names(columns_of(&self.client, &self.target).await)
                == names(columns_of(&self.client, &self.staging).await);
            self.columns = schema
                .fields()
                .iter()
                .map(|f| quote_ident(f.name()))
                .collect();
        }
        let mut encoder = pgpq::ArrowToPostgresBinaryEncoder::try_new(&written_schema)
            .map_err(|e| external(PgError::other(&self.database, self.what(), e.to_string())))?;
        let sink = self
            .client
            .copy_in(&format!(
                "COPY {} FROM STDIN (FORMAT BINARY)",
                self.staging.quoted()
            ))
            .await
            .map_err(|e| external(self.failed(e)))?;
        futures::pin_mut!(sink);
        let encode_error = |e: pgpq::error::ErrorKind| {
            external(PgError::other(&self.database, self.what(), e.to_string()))
        };
        let mut buf = BytesMut::with_capacity(BATCH_BYTES);
        encoder.write_header(&mut buf).map_err(encode_error)?;
        futures::pin_mut!(batches);
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            let columns = batch
                .columns()
                .iter()
                .zip(written_schema.fields())
                .map(|(c, f)| match c.data_type() == f.data_type() {
                    true => Ok(c.clone()),
                    false => cast(c, f.data_type()),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let batch = RecordBatch::try_new(written_schema.clone(), columns)?;
            encoder
                .write_batch(&batch, &mut buf)
                .map_err(encode_error)?;
            if buf.len() >= BATCH_BYTES {
                sink.send(buf.split().freeze())
                    .await
                    .map_err(|e| external(self.failed(e)))?;
            }
        }
        encoder.write_footer(&mut buf).map_err(encode_error)?;
        sink.send(buf.split().freeze())
            .await
            .map_err(|e| external(self.failed(e)))?;
        let rows = sink.finish().await.map_err(|e| external(self.failed(e)))?;
        let bytes: i64 = self
            .client
            .query_one(
                "SELECT pg_total_relation_size($1::text::regclass)",
                &[&self.staging.quoted()],
            )
            .await
            .map_err(|e| external(self.failed(e)))?
            .get(0);
        Ok(Written {
            rows,
            bytes: bytes.max(0) as u64,
        })
    }

    /// Put the staged rows in the target, in a transaction left open: readers see nothing
    /// until it is finished, and undoing it changes nothing.
    pub async fn publish(
        self,
        how: Publish,
        erased: Option<Erased>,
    ) -> Result<Publishing, PgError> {
        match self.statements(&how, erased.as_ref()).await {
            Ok(()) => Ok(Publishing {
                database: self.database,
                client: self.client,
                target: self.target,
                staging: self.staging,
            }),
            Err(e) => {
                let _ = self.client.batch_execute("ROLLBACK").await;
                let _ = self
                    .client
                    .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.staging.quoted()))
                    .await;
                Err(e)
            }
        }
    }

    async fn statements(&self, how: &Publish, erased: Option<&Erased>) -> Result<(), PgError> {
        let (target, staging) = (self.target.quoted(), self.staging.quoted());
        let c = &self.client;
        c.batch_execute("BEGIN").await.map_err(|e| self.failed(e))?;
        if !matches!(how, Publish::Replace) && (!self.target_exists || !self.same_columns) {
            return Err(PgError::other(
                &self.database,
                self.what(),
                "its column names differ from the model's output; run with --full-refresh to rebuild it"
                    .into(),
            ));
        }
        if matches!(how, Publish::Replace) && self.target_exists && !self.same_columns {
            return self.recreate().await;
        }
        if matches!(how, Publish::Replace) && !self.target_exists {
            let sql = format!(
                "ALTER TABLE {staging} RENAME TO {t}; COMMENT ON TABLE {target} IS NULL",
                t = quote_ident(&self.target.table)
            );
            return c.batch_execute(&sql).await.map_err(|e| self.failed(e));
        }
        let mut sql = Vec::new();
        match how {
            Publish::Replace => sql.push(format!("DELETE FROM {target}")),
            Publish::Append => {}
            Publish::Merge { keys } => {
                let on = keys
                    .iter()
                    .map(|k| format!("t.{k} = s.{k}", k = quote_ident(k)))
                    .collect::<Vec<_>>()
                    .join(" AND ");
                sql.push(format!(
                    "DELETE FROM {target} AS t USING {staging} AS s WHERE {on}"
                ));
            }
        }
        c.batch_execute(&sql.join("; "))
            .await
            .map_err(|e| self.failed(e))?;
        if let Some(erased) = erased.filter(|e| !e.keys.is_empty()) {
            c.execute(
                &format!(
                    "DELETE FROM {target} WHERE {}::text = ANY($1)",
                    quote_ident(&erased.column)
                ),
                &[&erased.keys],
            )
            .await
            .map_err(|e| self.failed(e))?;
        }
        let columns = self.columns.join(", ");
        let finish = format!(
            "INSERT INTO {target} ({columns}) SELECT {columns} FROM {staging}; DROP TABLE {staging}"
        );
        c.batch_execute(&finish).await.map_err(|e| self.failed(e))
    }

    /// The columns changed: the staged table takes the target's place, with its grants and
    /// owner.
    async fn recreate(&self) -> Result<(), PgError> {
        let c = &self.client;
        let (target, staging) = (self.target.quoted(), self.staging.quoted());
        let grants = c
            .query(
                "SELECT coalesce(r.rolname, 'PUBLIC'), a.privilege_type, a.is_grantable \
                 FROM pg_class t, aclexplode(t.relacl) a \
                 LEFT JOIN pg_roles r ON r.oid = a.grantee \
                 WHERE t.oid = $1::text::regclass AND a.grantee <> t.relowner",
                &[&target],
            )
            .await
            .map_err(|e| self.failed(e))?;
        let owner: String = c
            .query_one(
                "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = $1::text::regclass",
                &[&target],
            )
            .await
            .map_err(|e| self.failed(e))?
            .get(0);
        let mut sql = vec![format!("DROP TABLE {target}")];
        if self.unlogged {
            sql.push(format!("ALTER TABLE {staging} SET LOGGED"));
        }
        sql.push(format!(
            "ALTER TABLE {staging} RENAME TO {}",
            quote_ident(&self.target.table)
        ));
        sql.push(format!("COMMENT ON TABLE {target} IS NULL"));
        for row in grants {
            let (grantee, privilege, grantable): (String, String, bool) =
                (row.get(0), row.get(1), row.get(2));
            let grantee = match grantee.as_str() {
                "PUBLIC" => grantee,
                role => quote_ident(role),
            };
            sql.push(format!(
                "GRANT {privilege} ON {target} TO {grantee}{}",
                if grantable { " WITH GRANT OPTION" } else { "" }
            ));
        }
        sql.push(format!(
            "ALTER TABLE {target} OWNER TO {}",
            quote_ident(&owner)
        ));
        c.batch_execute(&sql.join("; "))
            .await
            .map_err(|e| self.failed(e))
    }

    /// Drop the staging table (a check failed, or the query did).
    pub async fn discard(self) {
        let _ = self
            .client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.staging.quoted()))
            .await;
    }
}

/// A publish whose transaction is open: finishing commits it, undoing rolls it back.
pub struct Publishing {
    database: Database,
    client: Client,
    target: TableName,
    staging: TableName,
}

impl Publishing {
    pub async fn finish(self) -> Result<(), PgError> {
        self.client
            .batch_execute("COMMIT")
            .await
            .map_err(|e| PgError::statement(&self.database, format!("table {}", self.target), &e))
    }

    pub async fn undo(self) -> Result<(), PgError> {
        let what = format!("table {}", self.target);
        self.client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| PgError::statement(&self.database, &what, &e))?;
        self.client
            .batch_execute(&format!("DROP TABLE IF EXISTS {}", self.staging.quoted()))
            .await
            .map_err(|e| PgError::statement(&self.database, &what, &e))
    }
}

async fn exists(client: &Client, table: &TableName) -> Result<bool, tokio_postgres::Error> {
    let row = client
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&table.quoted()])
        .await?;
    Ok(row.get(0))
}

/// Column names and types, in order.
async fn columns_of(client: &Client, table: &TableName) -> Vec<(String, String)> {
    client
        .query(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute \
             WHERE attrelid = $1::text::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
            &[&table.quoted()],
        )
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// A string literal.
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Whether the table exists, and its row count when it does.
pub async fn row_count(database: &Database, table: &TableName) -> Result<Option<u64>, PgError> {
    let client = database.connect().await?;
    let what = format!("table {table}");
    if !exists(&client, table)
        .await
        .map_err(|e| PgError::statement(database, &what, &e))?
    {
        return Ok(None);
    }
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM {}", table.quoted()), &[])
        .await
        .map_err(|e| PgError::statement(database, &what, &e))?
        .get(0);
    Ok(Some(n as u64))
}

/// Delete the rows whose `column` (as text) is one of `keys`, in one transaction; how many.
pub async fn erase(
    database: &Database,
    table: &TableName,
    column: &str,
    keys: &[String],
) -> Result<u64, PgError> {
    let mut client = database.connect().await?;
    let what = format!("table {table}");
    let failed = |e: tokio_postgres::Error| PgError::statement(database, &what, &e);
    let tx = client.transaction().await.map_err(failed)?;
    let n = tx
        .execute(
            &format!(
                "DELETE FROM {} WHERE {}::text = ANY($1)",
                table.quoted(),
                quote_ident(column)
            ),
            &[&keys],
        )
        .await
        .map_err(failed)?;
    tx.commit().await.map_err(failed)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_names_and_their_staging_tables() {
        let t = TableName::parse("delivery.hashed_contacts").unwrap();
        assert_eq!(t.quoted(), "\"delivery\".\"hashed_contacts\"");
        assert_eq!(t.staging().table, "_sluice_staging_hashed_contacts");
        assert_eq!(TableName::parse("contacts").unwrap().schema, "public");
        assert!(TableName::parse("a.b.c").is_err());
        let long = TableName::parse(&"x".repeat(63)).unwrap();
        assert_eq!(long.staging().table.len(), 63);
    }
}
