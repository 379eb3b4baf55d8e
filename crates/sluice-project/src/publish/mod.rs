//! Publishing a model's output: where it goes (a local folder, an S3 prefix, a Delta table), the stage
//! it is written and checked in, and the step that makes it visible to readers at once.
//! `stage` holds the local and S3 halves, `delta` the Delta log's; `local` the filesystem protocol (exchange or
//! pointer swap, with a journal for recovery).

pub mod delta;
mod local;
mod stage;

pub use local::*;
pub use stage::*;
