//! What every part of sluice shares: the project's configuration (`sluice.toml`), errors
//! that name the file, line and column, the object stores (local folders and S3), and the
//! project's source tables with their file listings.

pub mod config;
pub mod diagnostic;
pub mod error;
pub mod sources;
pub mod storage;
pub mod store_fault;
