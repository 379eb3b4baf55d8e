//! Expected rows against returned rows, on the columns the expectation lists, as a
//! multiset (or in order), and the row diff a failing test prints.

use std::collections::HashMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

/// Rows as text, one cell per listed column (`NULL` for nulls).
pub type Rows = Vec<Vec<String>>;

/// The cells of `batches` in `columns` (which the batches hold), formatted as the shell
/// prints them.
pub fn cells(batches: &[RecordBatch], columns: &[String]) -> Result<Rows, String> {
    let options = FormatOptions::default().with_null("NULL");
    let mut rows = Vec::new();
    for batch in batches {
        let formatters = columns
            .iter()
            .map(|c| {
                let array = batch
                    .column_by_name(c)
                    .ok_or_else(|| format!("no column `{c}`"))?;
                ArrayFormatter::try_new(array.as_ref(), &options).map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, String>>()?;
        for i in 0..batch.num_rows() {
            rows.push(formatters.iter().map(|f| f.value(i).to_string()).collect());
        }
    }
    Ok(rows)
}

/// None when `actual` holds the rows of `expected` (in the same order when `ordered`);
/// otherwise the diff: changed cells of rows whose first column matches, then rows
/// missing and rows not expected.
pub fn diff(columns: &[String], expected: &Rows, actual: &Rows, ordered: bool) -> Option<String> {
    let (want, got) = (counts(expected), counts(actual));
    let mut missing: Vec<&Vec<String>> = Vec::new();
    for r in expected {
        let extra = want[r].saturating_sub(got.get(r).copied().unwrap_or(0));
        if extra > 0 && missing.iter().filter(|m| **m == r).count() < extra {
            missing.push(r);
        }
    }
    let mut unexpected: Vec<&Vec<String>> = Vec::new();
    for r in actual {
        let extra = got[r].saturating_sub(want.get(r).copied().unwrap_or(0));
        if extra > 0 && unexpected.iter().filter(|u| **u == r).count() < extra {
            unexpected.push(r);
        }
    }
    let mut out = Vec::new();
    if missing.is_empty() && unexpected.is_empty() {
        if !ordered || expected == actual {
            return None;
        }
        let at = expected.iter().zip(actual).position(|(a, b)| a != b)?;
        return Some(format!(
            "the same rows in another order: row {} expected {}, got {}",
            at + 1,
            render(columns, &expected[at]),
            render(columns, &actual[at])
        ));
    }
    out.push(format!(
        "expected {}, got {} (compared on {})",
        plural(expected.len()),
        plural(actual.len()),
        columns.join(", ")
    ));
    let mut paired = vec![false; unexpected.len()];
    let mut only_missing = Vec::new();
    for m in missing {
        let partner = unexpected
            .iter()
            .enumerate()
            .position(|(j, u)| !paired[j] && !columns.is_empty() && u[0] == m[0]);
        match partner {
            Some(j) => {
                paired[j] = true;
                let u = unexpected[j];
                let changes: Vec<String> = columns
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| m[*k] != u[*k])
                    .map(|(k, c)| format!("{c} expected {}, got {}", show(&m[k]), show(&u[k])))
                    .collect();
                out.push(format!(
                    "changed    {}={}: {}",
                    columns[0],
                    show(&m[0]),
                    changes.join("; ")
                ));
            }
            None => only_missing.push(m),
        }
    }
    for m in only_missing {
        out.push(format!("missing    {}", render(columns, m)));
    }
    for (j, u) in unexpected.iter().enumerate() {
        if !paired[j] {
            out.push(format!("unexpected {}", render(columns, u)));
        }
    }
    Some(out.join("\n"))
}

fn counts(rows: &Rows) -> HashMap<&Vec<String>, usize> {
    let mut m: HashMap<&Vec<String>, usize> = HashMap::new();
    for r in rows {
        *m.entry(r).or_default() += 1;
    }
    m
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 row".into()
    } else {
        format!("{n} rows")
    }
}

fn render(columns: &[String], row: &[String]) -> String {
    columns
        .iter()
        .zip(row)
        .map(|(c, v)| format!("{c}={}", show(v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A cell as written in a diff: quoted when spaces at its ends, commas or nothing would
/// make it ambiguous.
fn show(v: &str) -> String {
    if v.is_empty() || v.trim() != v || v.contains([',', '=', ';']) {
        format!("{v:?}")
    } else {
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(r: &[&[&str]]) -> Rows {
        r.iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn multisets_and_order() {
        let cols = vec!["id".to_string(), "v".to_string()];
        let a = rows(&[&["1", "x"], &["2", "y"]]);
        let b = rows(&[&["2", "y"], &["1", "x"]]);
        assert_eq!(diff(&cols, &a, &b, false), None);
        assert_eq!(
            diff(&cols, &a, &b, true).unwrap(),
            "the same rows in another order: row 1 expected id=1, v=x, got id=2, v=y"
        );
        let c = rows(&[&["1", "z"], &["3", " y"], &["3", " y"]]);
        assert_eq!(
            diff(&cols, &a, &c, false).unwrap(),
            "expected 2 rows, got 3 rows (compared on id, v)\nchanged    id=1: v expected x, got z\nmissing    id=2, v=y\nunexpected id=3, v=\" y\"\nunexpected id=3, v=\" y\""
        );
    }
}
