//! Results and parameters on the wire: batches limited by the statement's gate and
//! deadline, parameter batches bound to a plan, schemas as IPC bytes, basic credentials.

use std::sync::Arc;
use std::time::Instant;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::{IpcMessage, SchemaAsIpc};
use base64::Engine;
use datafusion::arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::common::ScalarValue;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::logical_expr::LogicalPlan;
use futures::{Stream, StreamExt, TryStreamExt};
use tonic::{Request, Response, Status};

use super::{status, DataStream};
use crate::admission::{Admission, Admitted, Stopped};

/// The rows a command reports writing (its `count` column), read to the end.
pub(super) async fn rows_written(mut rows: SendableRecordBatchStream) -> Result<i64, Status> {
    let mut count = 0i64;
    while let Some(batch) = rows.next().await {
        let batch = batch.map_err(|e| status(&e))?;
        if let Some(column) = batch
            .column_by_name("count")
            .and_then(|c| c.as_any().downcast_ref::<UInt64Array>())
        {
            count += column.iter().flatten().sum::<u64>() as i64;
        }
    }
    Ok(count)
}

/// `Basic base64(user:password)`; padded or not (Arrow's Go client, behind ADBC, sends it
/// without padding).
pub(super) fn basic_credentials(header: &str) -> Option<(String, String)> {
    use base64::engine::{general_purpose, DecodePaddingMode, GeneralPurpose};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        general_purpose::PAD.with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let encoded = header.strip_prefix("Basic ")?;
    let decoded = LENIENT.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Counts and logs a streamed statement once: when its last batch went out, when it
/// failed, or when the client went away (a cancel) before the end.
pub(super) struct Outcome {
    admission: Arc<Admission>,
    user: String,
    queued: Instant,
    recorded: bool,
}

impl Outcome {
    fn record(&mut self, error: Option<&str>) {
        if !self.recorded {
            self.recorded = true;
            self.admission
                .record(&self.user, "flight", "duration_ms", self.queued, error);
        }
    }
}

impl Drop for Outcome {
    fn drop(&mut self) {
        self.record(Some("canceled: the client closed the stream"));
    }
}

/// The statement's batches, stopped at its deadline, holding its turn until the end.
pub(super) fn limited(
    rows: SendableRecordBatchStream,
    turn: Admitted,
    admission: Arc<Admission>,
    user: String,
) -> impl Stream<Item = Result<RecordBatch, FlightError>> + Send {
    let outcome = Outcome {
        admission,
        user,
        queued: turn.queued,
        recorded: false,
    };
    let sleep = Box::pin(tokio::time::sleep_until(turn.deadline_instant()));
    futures::stream::unfold(
        (rows, sleep, turn, outcome, false),
        |(mut rows, mut sleep, turn, mut outcome, stopped)| async move {
            if stopped {
                return None;
            }
            let next = tokio::select! {
                biased;
                _ = &mut sleep => {
                    let why = turn.deadline.map(|(_, limit)| Stopped::TimedOut(limit));
                    Some(Err(Status::from(why.unwrap_or(Stopped::ShuttingDown))))
                }
                item = rows.next() => item.map(|r| r.map_err(|e| status(&e))),
            };
            match next {
                None => {
                    outcome.record(None);
                    None
                }
                Some(Ok(batch)) => Some((Ok(batch), (rows, sleep, turn, outcome, false))),
                Some(Err(e)) => {
                    outcome.record(Some(e.message()));
                    Some((
                        Err(FlightError::Tonic(Box::new(e))),
                        (rows, sleep, turn, outcome, true),
                    ))
                }
            }
        },
    )
}

/// A batch of metadata rows as a Flight stream.
pub(super) fn one_batch(batch: RecordBatch) -> Response<DataStream> {
    let schema = batch.schema();
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async { Ok::<_, FlightError>(batch) }))
        .map_err(Status::from);
    Response::new(Box::pin(stream))
}

/// The parameter batches a client sent with DoPut.
pub(super) async fn parameter_batches(
    request: Request<PeekableFlightDataStream>,
) -> Result<Vec<RecordBatch>, Status> {
    let data = request.into_inner().map_err(FlightError::from);
    arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(data)
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("cannot read the parameters: {e}")))
}

/// The values of a parameter batch's one row, in column order ($1, $2, ...).
pub(super) fn parameter_row(batches: &[RecordBatch]) -> Result<Vec<ScalarValue>, Status> {
    let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
    if rows != 1 {
        return Err(Status::invalid_argument(format!(
            "a prepared query takes one set of parameters, not {rows}"
        )));
    }
    let Some(batch) = batches.iter().find(|b| b.num_rows() == 1) else {
        return Err(Status::invalid_argument("no parameters were sent"));
    };
    batch
        .columns()
        .iter()
        .map(|column| ScalarValue::try_from_array(column.as_ref(), 0).map_err(|e| status(&e)))
        .collect()
}

/// `$1`, `$2`, ... as Arrow fields, in order, typed where the plan says.
pub(super) fn parameter_schema(plan: &LogicalPlan) -> Result<Schema, Status> {
    let types = plan.get_parameter_types().map_err(|e| status(&e))?;
    let mut named: Vec<(usize, String, Option<DataType>)> = types
        .into_iter()
        .map(|(name, field)| {
            let position = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
            (position, name, field)
        })
        .collect();
    named.sort();
    Ok(Schema::new(
        named
            .into_iter()
            .map(|(_, name, data_type)| Field::new(name, data_type.unwrap_or(DataType::Null), true))
            .collect::<Vec<_>>(),
    ))
}

pub(super) fn schema_bytes(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let message: IpcMessage = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: datafusion::arrow::error::ArrowError| {
            Status::internal(format!("cannot encode the schema: {e}"))
        })?;
    Ok(message.0)
}
