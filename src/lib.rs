//! sluice: a SQL engine for marketing and analytics delivery pipelines, on Apache DataFusion.
//!
//! Front ends (shell, run, serve, cluster) parse what the user said; all of them get their
//! DataFusion session from [`session::build_session`]; results leave through one sink per
//! front end (the shell's printer, the publisher).

pub mod cli;
pub mod cluster;
pub mod cluster_client;
pub mod config;
pub mod diagnostic;
pub mod engine;
pub mod error;
pub mod functions;
pub mod gen;
pub mod project;
pub mod server;
pub mod session;
pub mod shell;
pub mod sources;
pub mod storage;
