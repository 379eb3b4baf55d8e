//! Publishing a model's output: where it goes (a local folder, an S3 prefix, a Delta
//! table), the stage it is written and checked in, and the step that makes it visible to
//! readers at once. `stage` holds the local and S3 halves and hands Delta tables to `delta`
//! (one log commit); `local` the filesystem protocol (exchange or pointer swap, with a
//! journal for recovery); `objects` the store operations they share; `published` what a
//! published output says about itself; `commit` the step that makes a checked stage visible
//! (one model, or all or nothing).

pub(crate) mod commit;
pub mod delta;
mod local;
mod objects;
pub mod postgres;
mod published;
mod s3;
mod stage;
pub(crate) mod writer_lock;

pub use local::*;
pub use published::PublishedManifest;
pub(crate) use s3::s3_store;
pub use stage::*;
