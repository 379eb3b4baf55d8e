//! What the personal-data policy finds, as plain data: the output columns that would carry
//! a personal column's raw values, per model. `policy` finds them; `plan` and `docs` show
//! them.

use std::collections::{BTreeMap, BTreeSet};

/// An output column that would carry a personal column's raw values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leak {
    pub model: String,
    pub column: String,
    /// The personal column: `source.column`, or `model.column` marked `pii = true`.
    pub personal: String,
    /// The columns of views and models in between, from the personal column down.
    pub through: Vec<String>,
}

impl Leak {
    pub fn describe(&self) -> String {
        let through = if self.through.is_empty() {
            String::new()
        } else {
            format!(" through {}", self.through.join(" -> "))
        };
        format!(
            "column `{}` carries personal data from `{}`{through} without hashing it; \
             hash it (hash_pii, hmac_sha256, sha256_hex, sha2), count it, drop it, or allow it \
             with allow_personal = [\"{}\"]",
            self.column, self.personal, self.column
        )
    }
}

/// What the policy says about each published model: the raw personal columns it would
/// publish (refused), and those it allows (`allow_personal`), by model index.
#[derive(Debug, Default)]
pub struct PersonalData {
    pub leaks: BTreeMap<usize, Vec<Leak>>,
    pub allowed: BTreeMap<usize, Vec<Leak>>,
    /// Every `model.column` (views too) carrying a personal column's values unhashed.
    pub carried: BTreeSet<String>,
}
