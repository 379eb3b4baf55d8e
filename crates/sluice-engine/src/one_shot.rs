//! A stream already running, offered once as the partition of a plan: so that rows read
//! ahead (to sample them, or to try a faster path first) can still flow through DataFusion
//! operators and writers as if nothing had been read.

use std::fmt;
use std::sync::Mutex;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;

pub struct OneShot {
    schema: SchemaRef,
    stream: Mutex<Option<SendableRecordBatchStream>>,
}

impl OneShot {
    pub fn new(stream: SendableRecordBatchStream) -> Self {
        OneShot {
            schema: stream.schema(),
            stream: Mutex::new(Some(stream)),
        }
    }
}

impl fmt::Debug for OneShot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("OneShot")
    }
}

impl PartitionStream for OneShot {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: std::sync::Arc<TaskContext>) -> SendableRecordBatchStream {
        match self.stream.lock().ok().and_then(|mut s| s.take()) {
            Some(stream) => stream,
            // A plan is executed once; a second execution has no rows left to give.
            None => {
                let error =
                    DataFusionError::Internal("a one-shot stream was executed twice".into());
                Box::pin(RecordBatchStreamAdapter::new(
                    self.schema.clone(),
                    futures::stream::once(async { Err(error) }),
                ))
            }
        }
    }
}
