//! Publishing a model's output: where it goes (a local folder or an S3 prefix), the stage
//! it is written and checked in, and the step that makes it visible to readers at once.
//! `stage` holds both halves (local and S3); `local` the filesystem protocol (exchange or
//! pointer swap, with a journal for recovery).

mod local;
mod stage;

pub use local::*;
pub use stage::*;
