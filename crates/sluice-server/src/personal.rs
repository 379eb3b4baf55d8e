//! Personal data in `serve`: with `[server.users]`, only users with `personal = true` read
//! personal columns unhashed. For everyone else a statement whose output carries a personal
//! column's values (followed through views and expressions, as `run` follows them) is
//! refused, on every listener, decided from the plan; hashed and counted outputs pass.
//! Without users (a loopback server for one person) nothing is refused.

use std::collections::HashSet;

use datafusion::logical_expr::LogicalPlan;

use crate::session::engine::column_feeds::{Mode, Tracer};
use crate::statement_kind::{kind_of, Kind};

#[derive(Debug, Default)]
pub struct PersonalAccess {
    /// `table.column`s holding personal data: sources' `personal` columns, and the columns
    /// published models carry unhashed (`allow_personal`).
    columns: HashSet<String>,
    /// Users who may read them.
    readers: HashSet<String>,
    /// Without users nobody is told apart.
    users_configured: bool,
}

impl PersonalAccess {
    pub fn new(
        columns: impl IntoIterator<Item = String>,
        readers: impl IntoIterator<Item = String>,
        users_configured: bool,
    ) -> Self {
        PersonalAccess {
            columns: columns.into_iter().collect(),
            readers: readers.into_iter().collect(),
            users_configured,
        }
    }

    /// Why `user` may not run `plan`; None when it may.
    pub fn refusal(&self, plan: &LogicalPlan, user: &str) -> Option<String> {
        if self.columns.is_empty() || !self.users_configured || self.readers.contains(user) {
            return None;
        }
        // EXPLAIN, DESCRIBE and commands return no rows of the tables.
        if !matches!(kind_of(plan), Kind::Query)
            || matches!(
                plan,
                LogicalPlan::Explain(_) | LogicalPlan::Analyze(_) | LogicalPlan::DescribeTable(_)
            )
        {
            return None;
        }
        let tracer = Tracer {
            mode: Mode::Raw,
            scans: &|_| None,
        };
        let feeds = tracer.trace(plan);
        plan.schema()
            .fields()
            .iter()
            .zip(feeds)
            .find_map(|(field, feeds)| {
                let personal = feeds.iter().find(|f| self.columns.contains(*f))?;
                Some(format!(
                    "column `{c}` is personal data (from `{personal}`), which user `{user}` may not read; \
                     select it hashed, e.g. hash_pii({c}, 'email'), or counted",
                    c = field.name()
                ))
            })
    }
}
