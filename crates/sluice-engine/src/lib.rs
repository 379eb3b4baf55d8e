//! sluice's additions to DataFusion's planner and operators, installed by the session
//! builder so the shell, the server and `run` plan the same way.

pub mod best_row;
pub mod column_feeds;
pub mod distinct_counts;
pub mod first_row;
pub mod join_sides;
mod key_runs;
mod leaf_bytes;
pub mod lookup_join;
pub mod one_shot;
pub mod options;
mod prefetch;
pub mod progress;
