//! sluice's own engine settings, next to DataFusion's: `SET sluice.dedup = 'sort'`.

use datafusion::common::config::{ConfigExtension, ConfigOptions};
use datafusion::common::{extensions_options, plan_err, Result};

extensions_options! {
    /// Settings of sluice's planner additions (`SET sluice.dedup = ...` in the shell or a script).
    pub struct SluiceOptions {
        /// How `row_number() = 1` runs over input that is not sorted by its key: `hash`
        /// (a hash table keeps each key's best row, no sort; when the memory pool is full
        /// it falls back to the sort, which spills) or `sort` (DataFusion sorts, then one
        /// streaming pass keeps each key's first row). `hash` shares one table among the
        /// scan's partitions where it can; `split` keeps DataFusion's hash repartition in front
        /// of a table per partition. Default: `hash`, or $SLUICE_DEDUP.
        pub dedup: String, default = std::env::var("SLUICE_DEDUP").unwrap_or_else(|_| "hash".to_string())
        /// Whether hash joins against a collected build side run as lookups that pass the
        /// probe side's columns on without copying them (see `lookup_join`). Default: true,
        /// or false when $SLUICE_LOOKUP_JOINS is `false`.
        pub lookup_joins: bool, default = std::env::var("SLUICE_LOOKUP_JOINS").map_or(true, |v| v.trim() != "false")
    }
}

impl ConfigExtension for SluiceOptions {
    const PREFIX: &'static str = "sluice";
}

/// The ways `row_number() = 1` over unsorted input can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// The hash table; shared by the scan's partitions where it can be (best_row/shared.rs).
    Hash,
    /// The hash table per partition, behind DataFusion's hash repartition on the key.
    Split,
    Sort,
}

impl SluiceOptions {
    /// The dedup chosen; an unknown value is an error, never a silent default.
    pub fn dedup(config: &ConfigOptions) -> Result<Dedup> {
        let value = config
            .extensions
            .get::<SluiceOptions>()
            .map(|o| o.dedup.trim().to_ascii_lowercase())
            .unwrap_or_else(|| "hash".to_string());
        match value.as_str() {
            "hash" => Ok(Dedup::Hash),
            "split" => Ok(Dedup::Split),
            "sort" => Ok(Dedup::Sort),
            other => plan_err!("sluice.dedup must be 'hash', 'split' or 'sort', not '{other}'"),
        }
    }

    /// Whether hash joins may run as lookups (`SET sluice.lookup_joins = false` keeps
    /// DataFusion's operator).
    pub fn lookup_joins(config: &ConfigOptions) -> bool {
        config
            .extensions
            .get::<SluiceOptions>()
            .is_none_or(|o| o.lookup_joins)
    }
}
