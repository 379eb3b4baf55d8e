//! Delta Lake sources: the table's latest version, or the one a source pins with
//! `version = N` or `timestamp = "..."`, read through the Delta log.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::error::Result as DFResult;
use datafusion::execution::context::SessionState;

use super::SourceDef;

pub(super) async fn open(
    state: &SessionState,
    def: &SourceDef,
) -> DFResult<Arc<dyn TableProvider>> {
    let at = version_of(def).map_err(|e| def.error(e))?;
    let location = def.location.trim_end_matches('/');
    let table_location = sluice_delta::Location::new(state, location).map_err(|e| def.error(e))?;
    let table = table_location
        .load(at)
        .await
        .map_err(|e| def.error(crate::storage::explain(location, &e).unwrap_or(e)))?;
    sluice_delta::table_provider(state, &table)
        .await
        .map_err(|e| def.error(e))
}

/// The version a source asks for.
fn version_of(def: &SourceDef) -> Result<sluice_delta::At, String> {
    match (def.config.version, &def.config.timestamp) {
        (Some(_), Some(_)) => Err("give `version` or `timestamp`, not both".into()),
        (Some(v), None) => u64::try_from(v)
            .map(sluice_delta::At::Version)
            .map_err(|_| format!("version {v}: versions start at 0")),
        (None, Some(t)) => parse_time(t).map(sluice_delta::At::Timestamp),
        (None, None) => Ok(sluice_delta::At::Latest),
    }
}

/// RFC 3339 (`2026-11-29T10:00:00Z`), `2026-11-29 10:00:00` (UTC) or a date (its start, UTC).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        return Ok(Utc.from_utc_datetime(&t));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).unwrap_or_default()));
    }
    Err(format!(
        "timestamp `{text}`: expected RFC 3339 (2026-11-29T10:00:00Z), `2026-11-29 10:00:00` or a date"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_a_source_may_pin() {
        assert_eq!(
            parse_time("2026-11-29T10:00:00+01:00")
                .unwrap()
                .to_rfc3339(),
            "2026-11-29T09:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-29 10:00:00").unwrap().to_rfc3339(),
            "2026-11-29T10:00:00+00:00"
        );
        assert_eq!(
            parse_time("2026-11-29").unwrap().to_rfc3339(),
            "2026-11-29T00:00:00+00:00"
        );
        assert!(parse_time("yesterday")
            .unwrap_err()
            .starts_with("timestamp `yesterday`"));
    }
}
