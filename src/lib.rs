//! sluice: a SQL engine for marketing and analytics delivery pipelines, on Apache DataFusion.
//!
//! Front ends (shell, run, serve, cluster) parse what the user said; all of them get their
//! DataFusion session from [`session::build_session`]; results leave through one sink per
//! front end (the shell's printer, the publisher).

pub mod cli;
pub mod cluster;
pub mod cluster_client;
pub mod gen;
pub mod project;
pub mod server;
pub mod session;
pub mod shell;

// Crates of their own (crates/): the shared core, and the functions and engine rules that
// any DataFusion program can use. Their paths under `sluice::` stay valid.
pub use sluice_core::{config, diagnostic, error, sources, storage};
pub use sluice_engine as engine;
pub use sluice_functions as functions;
