//! Partitioned Parquet output: every partition of the query splits its own batches by the
//! partition columns' values and sends each part to the one file per value, which
//! DataFusion's Parquet sink encodes column by column.
//!
//! DataFusion's own write merges the query into one stream and splits it in one task that
//! builds a key of `String`s for every row and copies each part out of the batch on its
//! own: 9% of the benchmark pipeline's samples, and the encoders waited on that task.
//! Here a row costs one hash of its value's bytes, a batch is copied once (in partition
//! order, then sliced) or not at all when its rows share one value, and the splitting runs
//! in as many tasks as the query has partitions. When the query ends in a projection that
//! passes the partition columns through, the rows are split before it: its input is the
//! narrower batch to copy (a SHA-256 hex digest is 64 bytes of a 10-40 byte input), and
//! the projection then runs once on the reordered batch. The files are laid out as
//! DataFusion lays them out (`col=value/<write id>.parquet`, one file per value), so
//! readers, Delta's log and the checks see the same output.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::runtime::SpawnedTask;
use datafusion::common::{internal_datafusion_err, HashMap};
use datafusion::config::TableParquetOptions;
use datafusion::datasource::file_format::parquet::ParquetSink;
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::physical_plan::{FileGroup, FileOutputMode, FileSink, FileSinkConfig};
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::projection::Projector;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;
use object_store::path::Path;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

/// Whether this writer can split the output by `partition_by`: every column is text. Other
/// types keep DataFusion's writer, whose rendering of them (dates, numbers, nulls) the
/// output's paths then follow.
pub(crate) fn splits(schema: &SchemaRef, partition_by: &[String]) -> bool {
    !partition_by.is_empty()
        && partition_by.iter().all(|name| {
            schema.field_with_name(name).is_ok_and(|f| {
                matches!(
                    f.data_type(),
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
            })
        })
}

/// Run `plan` and write its rows as Parquet under `url` (a folder ending in `/`), one
/// folder level per column of `partition_by`. `options` is given the query's first batch,
/// so the writer's settings can follow the rows. The number of rows written.
pub(crate) async fn write(
    plan: Arc<dyn ExecutionPlan>,
    task_ctx: Arc<TaskContext>,
    url: &str,
    partition_by: &[String],
    options: impl FnOnce(Option<&RecordBatch>) -> TableParquetOptions,
) -> Result<u64> {
    let schema = plan.schema();
    let table_url = ListingTableUrl::parse(url)?;
    let execution = &task_ctx.session_config().options().execution;
    let keep_partition_columns = execution.keep_partition_by_columns;
    let buffered_batches = execution.max_buffered_batches_per_output_file.get();
    let partition_columns = partition_by
        .iter()
        .map(|name| {
            Ok((
                name.clone(),
                schema.field_with_name(name)?.data_type().clone(),
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    let config = FileSinkConfig {
        original_url: url.to_string(),
        object_store_url: table_url.object_store(),
        file_group: FileGroup::default(),
        table_paths: vec![table_url.clone()],
        output_schema: schema.clone(),
        table_partition_cols: partition_columns,
        insert_op: InsertOp::Append,
        keep_partition_by_columns: keep_partition_columns,
        file_extension: "parquet".to_string(),
        file_output_mode: FileOutputMode::Directory,
    };
    let object_store = task_ctx
        .runtime_env()
        .object_store(&config.object_store_url)?;

    let (source, projector) = split_below(&plan, partition_by);
    let source_schema = source.schema();
    let (new_files, files_rx) = mpsc::unbounded_channel();
    let (sample_tx, sample_rx) = oneshot::channel();
    let router = Arc::new(Router {
        key_columns: partition_by
            .iter()
            .map(|name| source_schema.index_of(name))
            .collect::<std::result::Result<_, _>>()?,
        kept_columns: (0..schema.fields().len())
            .filter(|i| keep_partition_columns || !partition_by.contains(schema.field(*i).name()))
            .collect(),
        projector,
        partition_by: partition_by.to_vec(),
        prefix: table_url.prefix().clone(),
        write_id: write_id(),
        buffered_batches,
        files: Mutex::new(HashMap::new()),
        new_files,
        sample: Mutex::new(Some(sample_tx)),
    });
    let streams = (0..source.properties().partitioning.partition_count())
        .map(|i| source.execute(i, task_ctx.clone()))
        .collect::<Result<Vec<_>>>()?;
    let split = SpawnedTask::spawn(split_all(streams, router));

    // Every splitter has ended without a row when the sample's sender is gone.
    let sample = sample_rx.await.ok();
    let sink = ParquetSink::new(config, options(sample.as_ref()));
    sink.spawn_writer_tasks_and_join(&task_ctx, split, files_rx, object_store)
        .await
}

/// Where to split the rows: under the plan's top projection when it passes every partition
/// column through under its own name, so that the source's column of that name is the
/// same values; else the plan's own output.
fn split_below(
    plan: &Arc<dyn ExecutionPlan>,
    partition_by: &[String],
) -> (Arc<dyn ExecutionPlan>, Option<Projector>) {
    let Some(projection) = plan.downcast_ref::<ProjectionExec>() else {
        return (plan.clone(), None);
    };
    let input = projection.input();
    let input_schema = input.schema();
    let passed_through = partition_by.iter().all(|name| {
        projection.expr().iter().any(|p| {
            p.alias == *name
                && p.expr
                    .downcast_ref::<Column>()
                    .is_some_and(|c| input_schema.index_of(name).is_ok_and(|i| i == c.index()))
        })
    });
    if !passed_through {
        return (plan.clone(), None);
    }
    match projection
        .projection_expr()
        .make_projector_with_schema_metadata(&input_schema, &plan.schema())
    {
        Ok(projector) => (input.clone(), Some(projector)),
        Err(_) => (plan.clone(), None),
    }
}

/// What the query's partitions share while they split their batches: the open files by
/// partition value, and the channel that hands each new file to the sink.
struct Router {
    /// The partition columns in the batches split, which are the projection's input when
    /// there is a `projector`.
    key_columns: Vec<usize>,
    /// The written columns, of the query's output.
    kept_columns: Vec<usize>,
    projector: Option<Projector>,
    partition_by: Vec<String>,
    prefix: Path,
    write_id: String,
    buffered_batches: usize,
    files: Mutex<HashMap<Vec<String>, mpsc::Sender<RecordBatch>>>,
    new_files: mpsc::UnboundedSender<(Path, mpsc::Receiver<RecordBatch>)>,
    /// Takes the first batch any partition produces, for the writer's settings.
    sample: Mutex<Option<oneshot::Sender<RecordBatch>>>,
}

impl Router {
    /// The channel of the file for `values`, opened (and handed to the sink) on first use.
    fn file_for(&self, values: Vec<String>) -> Result<mpsc::Sender<RecordBatch>> {
        let mut files = self.files.lock();
        if let Some(file) = files.get(&values) {
            return Ok(file.clone());
        }
        let (file, rows) = mpsc::channel(self.buffered_batches);
        let mut path = self.prefix.clone();
        for (column, value) in self.partition_by.iter().zip(&values) {
            path = path.join(format!("{column}={value}"));
        }
        let path = path.join(format!("{}.parquet", self.write_id));
        self.new_files
            .send((path, rows))
            .map_err(|_| internal_datafusion_err!("the Parquet sink stopped taking files"))?;
        files.insert(values, file.clone());
        Ok(file)
    }
}

/// Split every partition's stream in a task of its own; the first error ends them all.
async fn split_all(streams: Vec<SendableRecordBatchStream>, router: Arc<Router>) -> Result<()> {
    let mut tasks = tokio::task::JoinSet::new();
    for stream in streams {
        tasks.spawn(split(stream, router.clone()));
    }
    drop(router);
    while let Some(done) = tasks.join_next().await {
        done.map_err(|e| internal_datafusion_err!("a partition's writer task failed: {e}"))??;
    }
    Ok(())
}

/// One partition's batches, each split by partition value and sent to its values' files.
async fn split(mut stream: SendableRecordBatchStream, router: Arc<Router>) -> Result<()> {
    // This task's own index of the values it has met, so that a row costs one hash of its
    // value's bytes and no lock.
    let mut known: HashMap<Vec<u8>, usize> = HashMap::new();
    let mut files: Vec<mpsc::Sender<RecordBatch>> = Vec::new();
    let mut part_of_row: Vec<u32> = Vec::new();
    let mut key = Vec::new();
    while let Some(batch) = stream.next().await.transpose()? {
        if batch.num_rows() == 0 {
            continue;
        }
        let values = text_columns(&batch, &router.key_columns)?;
        part_of_row.clear();
        for row in 0..batch.num_rows() {
            key.clear();
            for column in &values {
                let value = column.value(row);
                if values.len() > 1 {
                    key.extend_from_slice(&(value.len() as u32).to_le_bytes());
                }
                key.extend_from_slice(value.as_bytes());
            }
            let file = match known.get(key.as_slice()) {
                Some(file) => *file,
                None => {
                    let rendered = values.iter().map(|c| c.value(row).to_string()).collect();
                    files.push(router.file_for(rendered)?);
                    known.insert(key.clone(), files.len() - 1);
                    files.len() - 1
                }
            };
            part_of_row.push(file as u32);
        }
        for (file, part) in parts(&batch, &part_of_row, files.len(), &router)? {
            if files[file].send(part).await.is_err() {
                // The sink has stopped; its error is the one to report.
                return Ok(());
            }
        }
    }
    Ok(())
}

/// The batch's rows grouped by the file each goes to, projected and cut to the written
/// columns: the batch itself when they all go to one, else one copy of it in file order,
/// sliced per file.
fn parts(
    batch: &RecordBatch,
    part_of_row: &[u32],
    files: usize,
    router: &Router,
) -> Result<Vec<(usize, RecordBatch)>> {
    let first = part_of_row[0];
    if part_of_row.iter().all(|p| *p == first) {
        return Ok(vec![(first as usize, router.written(batch)?)]);
    }
    let mut starts = vec![0u32; files + 1];
    for p in part_of_row {
        starts[*p as usize + 1] += 1;
    }
    for f in 0..files {
        starts[f + 1] += starts[f];
    }
    let mut next = starts.clone();
    let mut order = vec![0u32; part_of_row.len()];
    for (row, p) in part_of_row.iter().enumerate() {
        let slot = &mut next[*p as usize];
        order[*slot as usize] = row as u32;
        *slot += 1;
    }
    let sorted = router.written(&take_record_batch(batch, &UInt32Array::from(order))?)?;
    Ok((0..files)
        .filter(|f| starts[f + 1] > starts[*f])
        .map(|f| {
            let start = starts[f] as usize;
            (f, sorted.slice(start, starts[f + 1] as usize - start))
        })
        .collect())
}

impl Router {
    /// A split batch's rows as written: projected, then without the partition columns
    /// unless they are kept. The first one is the writer's sample of the output.
    fn written(&self, batch: &RecordBatch) -> Result<RecordBatch> {
        let output = match &self.projector {
            Some(projector) => projector.project_batch(batch)?,
            None => batch.clone(),
        };
        if let Some(sample) = self.sample.lock().take() {
            let _ = sample.send(output.clone());
        }
        Ok(output.project(&self.kept_columns)?)
    }
}

/// The partition columns' values as text; `splits` admitted only text columns.
enum Text<'a> {
    Utf8(&'a datafusion::arrow::array::StringArray),
    Large(&'a datafusion::arrow::array::LargeStringArray),
    View(&'a datafusion::arrow::array::StringViewArray),
}

impl Text<'_> {
    /// The row's value as DataFusion's writer names it: a null is the empty string.
    fn value(&self, row: usize) -> &str {
        match self {
            Text::Utf8(a) => a.value(row),
            Text::Large(a) => a.value(row),
            Text::View(a) => a.value(row),
        }
    }
}

fn text_columns<'a>(batch: &'a RecordBatch, columns: &[usize]) -> Result<Vec<Text<'a>>> {
    columns
        .iter()
        .map(|i| {
            let column = batch.column(*i);
            Ok(match column.data_type() {
                DataType::Utf8 => Text::Utf8(column.as_string::<i32>()),
                DataType::LargeUtf8 => Text::Large(column.as_string::<i64>()),
                DataType::Utf8View => Text::View(column.as_string_view()),
                other => {
                    return Err(internal_datafusion_err!(
                        "partition column of type {other} reached the text-only writer"
                    ))
                }
            })
        })
        .collect()
}

/// A name shared by this write's files, as DataFusion names them: 16 letters and digits.
fn write_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..16].to_string()
}
