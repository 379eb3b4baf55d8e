//! A PostgreSQL table or query as a DataFusion table. The scan sends the server one
//! SELECT with the columns, the exact filters and the limit the statement needs, and reads
//! the rows by binary COPY; EXPLAIN shows that SELECT.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, TableType};
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use futures::StreamExt;
use tokio_postgres::types::Type;

use crate::connect::{quote_ident, Database, PgError};
use crate::copy_out::CopyReader;
use crate::filters::{self, Columns};
use crate::target::TableName;
use crate::types::{arrow_type, ReadAs};

/// What a source reads: a table (`schema.table`) or the rows of a query.
#[derive(Debug, Clone)]
pub enum Relation {
    Table(TableName),
    Query(String),
}

impl Relation {
    fn sql_source(&self) -> String {
        match self {
            Relation::Table(t) => t.quoted(),
            Relation::Query(q) => format!("({}) AS q", q.trim().trim_end_matches(';')),
        }
    }

    /// `table crm.contacts`, or `query`, for messages.
    pub fn describe(&self) -> String {
        match self {
            Relation::Table(t) => format!("table {t}"),
            Relation::Query(_) => "query".to_string(),
        }
    }
}

#[derive(Debug)]
pub struct PostgresTable {
    database: Database,
    relation: Relation,
    schema: SchemaRef,
    /// Each column's PostgreSQL type and whether it is read in it or as text.
    types: Vec<(Type, ReadAs)>,
}

impl PostgresTable {
    /// Ask the server for the relation's columns (nothing is read).
    pub async fn open(database: Database, relation: Relation) -> Result<PostgresTable, PgError> {
        let client = database.connect().await?;
        let what = relation.describe();
        let probe = format!("SELECT * FROM {} LIMIT 0", relation.sql_source());
        let statement = client
            .prepare(&probe)
            .await
            .map_err(|e| PgError::statement(&database, &what, &e))?;
        let mut fields = Vec::new();
        let mut types = Vec::new();
        for column in statement.columns() {
            // The type modifier (numeric's precision and scale) is the table's.
            let typmod = match (column.table_oid(), column.column_id()) {
                (Some(table), Some(attnum)) if *column.type_() == Type::NUMERIC => client
                    .query_opt(
                        "SELECT atttypmod FROM pg_attribute WHERE attrelid = $1 AND attnum = $2",
                        &[&table, &attnum],
                    )
                    .await
                    .map_err(|e| PgError::statement(&database, &what, &e))?
                    .map(|row| row.get::<_, i32>(0))
                    .unwrap_or(-1),
                _ => -1,
            };
            let (data_type, read_as) = arrow_type(column.type_(), typmod);
            fields.push(Field::new(column.name(), data_type, true));
            types.push((column.type_().clone(), read_as));
        }
        Ok(PostgresTable {
            database,
            relation,
            schema: Arc::new(Schema::new(fields)),
            types,
        })
    }

    fn read_as(&self) -> Vec<ReadAs> {
        self.types.iter().map(|(_, r)| *r).collect()
    }
}

#[async_trait]
impl TableProvider for PostgresTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        let read_as = self.read_as();
        let columns = Columns {
            schema: &self.schema,
            read_as: &read_as,
        };
        Ok(filters
            .iter()
            .map(|f| match filters::to_postgres(f, &columns) {
                Some(_) => TableProviderFilterPushDown::Exact,
                None => TableProviderFilterPushDown::Unsupported,
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let indices: Vec<usize> = match projection {
            Some(p) => p.clone(),
            None => (0..self.schema.fields().len()).collect(),
        };
        let select = indices
            .iter()
            .map(|&i| {
                let name = quote_ident(self.schema.field(i).name());
                match self.types[i].1 {
                    ReadAs::Native => name,
                    ReadAs::Text => format!("{name}::text AS {name}"),
                }
            })
            .collect::<Vec<_>>()
            .join(", ");
        let read_as = self.read_as();
        let columns = Columns {
            schema: &self.schema,
            read_as: &read_as,
        };
        let conditions: Vec<String> = filters
            .iter()
            .filter_map(|f| filters::to_postgres(f, &columns))
            .collect();
        let mut sql = format!("SELECT {select} FROM {}", self.relation.sql_source());
        if !conditions.is_empty() {
            sql.push_str(&format!(" WHERE {}", conditions.join(" AND ")));
        }
        if let Some(n) = limit {
            sql.push_str(&format!(" LIMIT {n}"));
        }
        let schema = Arc::new(self.schema.project(&indices)?);
        let types = indices.iter().map(|&i| self.types[i].clone()).collect();
        Ok(Arc::new(PostgresScanExec::new(
            self.database.clone(),
            self.relation.describe(),
            sql,
            schema,
            types,
        )))
    }
}

/// One SELECT on the server, its rows read by binary COPY.
#[derive(Debug)]
pub struct PostgresScanExec {
    database: Database,
    what: String,
    sql: String,
    schema: SchemaRef,
    types: Vec<(Type, ReadAs)>,
    properties: Arc<PlanProperties>,
}

impl PostgresScanExec {
    fn new(
        database: Database,
        what: String,
        sql: String,
        schema: SchemaRef,
        types: Vec<(Type, ReadAs)>,
    ) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        PostgresScanExec {
            database,
            what,
            sql,
            schema,
            types,
            properties: Arc::new(properties),
        }
    }
}

impl DisplayAs for PostgresScanExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "PostgresScanExec: database={}, sql={}",
            self.database.name, self.sql
        )
    }
}

impl ExecutionPlan for PostgresScanExec {
    fn name(&self) -> &str {
        "PostgresScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        task: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let batch_size = task.session_config().batch_size().max(1);
        let database = self.database.clone();
        let what = self.what.clone();
        let copy = format!("COPY ({}) TO STDOUT (FORMAT BINARY)", self.sql);
        let reader = CopyReader::new(self.schema.clone(), &self.types);
        let fail = move |message: String| {
            DataFusionError::External(Box::new(PgError::other(&database, &what, message)))
        };
        let database = self.database.clone();
        let what = self.what.clone();
        let stream = futures::stream::once(async move {
            let client = database
                .connect()
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let rows = client.copy_out(copy.as_str()).await.map_err(|e| {
                DataFusionError::External(Box::new(PgError::statement(&database, &what, &e)))
            })?;
            let (database, what) = (database.clone(), what.clone());
            let batches = futures::stream::try_unfold(
                (Box::pin(rows), reader, client, false),
                move |(mut rows, mut reader, client, done)| {
                    let (database, what, fail) = (database.clone(), what.clone(), fail.clone());
                    async move {
                        if done {
                            return Ok(None);
                        }
                        while reader.rows() < batch_size {
                            match rows.next().await {
                                Some(Ok(data)) => reader.feed(&data).map_err(&fail)?,
                                Some(Err(e)) => {
                                    return Err(DataFusionError::External(Box::new(
                                        PgError::statement(&database, &what, &e),
                                    )))
                                }
                                None => {
                                    if !reader.finished {
                                        return Err(fail(
                                            "the COPY ended before its last row".into(),
                                        ));
                                    }
                                    if reader.rows() == 0 {
                                        return Ok(None);
                                    }
                                    let batch = reader.take_batch().map_err(&fail)?;
                                    return Ok(Some((batch, (rows, reader, client, true))));
                                }
                            }
                        }
                        let batch = reader.take_batch().map_err(&fail)?;
                        Ok(Some((batch, (rows, reader, client, false))))
                    }
                },
            );
            Ok::<_, DataFusionError>(batches)
        })
        .map(|made| match made {
            Ok(batches) => batches.boxed(),
            Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
        })
        .flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }
}
