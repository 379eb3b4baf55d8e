//! sluice's own engine settings, next to DataFusion's: `SET sluice.dedup = 'hash'`.

use datafusion::common::config::ConfigExtension;
use datafusion::common::extensions_options;

extensions_options! {
    /// Settings of sluice's planner additions (`SET sluice.dedup = ...` in the shell or a script).
    pub struct SluiceOptions {
        /// How `row_number() = 1` runs over input that is not sorted by its key: `sort`
        /// (DataFusion sorts, then one streaming pass keeps each key's first row) or `hash`
        /// (a hash table keeps each key's best row, no sort; holds every buffered row that
        /// still wins, so it needs more memory). Default: `sort`, or $SLUICE_DEDUP.
        pub dedup: String, default = std::env::var("SLUICE_DEDUP").unwrap_or_else(|_| "sort".to_string())
    }
}

impl ConfigExtension for SluiceOptions {
    const PREFIX: &'static str = "sluice";
}

impl SluiceOptions {
    /// Whether the hash dedup is chosen (anything but `hash` keeps the sort).
    pub fn dedup_by_hash(config: &datafusion::common::config::ConfigOptions) -> bool {
        config
            .extensions
            .get::<SluiceOptions>()
            .is_some_and(|o| o.dedup.eq_ignore_ascii_case("hash"))
    }
}
