//! Projects of SQL models: discovery, the plan (order, resolved SQL, inputs, outputs), and
//! `run`: execute each model, write it to staging, check it, then publish it.

// The crates below, under the names the modules use; `crate::project::` names this crate.
extern crate self as project;
use sluice_core::{config, diagnostic, error, sources, store_fault};
use sluice_functions as functions;
use sluice_session as session;

pub mod checks;
pub mod dag;
pub mod diff;
pub mod docs;
pub mod erase;
pub mod junit;
pub mod leaks;
pub mod lineage;
pub mod model;
pub mod notify;
pub mod openlineage;
pub mod parquet;
pub mod policy;
pub mod progress;
pub mod publish;
mod query;
pub mod results;
pub mod unit;
pub mod vacuum;

mod build;
mod build_model;
mod charts;
mod html;
mod partitioned_parquet;
mod personal;
mod plan;
mod recheck;
mod run;
mod tables;
mod to_database;

pub use build::RunOptions;
pub use plan::{build_plan, ProjectPlan};
pub use recheck::test;
pub use run::run;
pub use tables::{declare_models, model_tables};
