//! sluice: a SQL engine for marketing and analytics delivery pipelines, on Apache DataFusion.
//!
//! Front ends (shell, run, serve, cluster) parse what the user said; all of them get their
//! DataFusion session from [`session::build_session`]; results leave through one sink per
//! front end (the shell's printer, the publisher).

pub mod cli;
pub mod gen;

// Crates of their own (crates/): the shared core; the functions and engine rules that any
// DataFusion program can use; the session builder with the cluster client; the project.
// Their paths under `sluice::` stay valid.
pub use sluice_cluster as cluster;
pub use sluice_core::{config, diagnostic, error, sources, storage};
pub use sluice_engine as engine;
pub use sluice_functions as functions;
pub use sluice_project as project;
pub use sluice_server as server;
pub use sluice_session as session;
pub use sluice_session::cluster_client;
pub use sluice_shell as shell;
