//! JUnit XML (`--junit FILE` on `run` and `test`), the report CI systems read: one
//! `testsuite` per model with one `testcase` per check (a model that did not build is an
//! `error`), and one `testsuite` of the unit tests with a `testcase` each.

use std::fmt::Write as _;
use std::path::Path;

use super::checks::CheckStatus;
use super::results::{ModelStatus, RunResults};
use super::unit::{UnitOutcome, UnitStatus};
use crate::error::{Result, SluiceError};

/// One `testcase`: its name, class, seconds, and a failure or error with its message.
struct Case {
    name: String,
    class: String,
    time: f64,
    outcome: Option<(&'static str, String)>,
}

struct Suite {
    name: String,
    time: f64,
    cases: Vec<Case>,
}

/// Write the report of `results` (model checks) and `units` (unit tests) to `path`.
pub fn write_junit(path: &Path, results: Option<&RunResults>, units: &[UnitOutcome]) -> Result<()> {
    let mut suites = Vec::new();
    if !units.is_empty() {
        suites.push(Suite {
            name: "unit tests".into(),
            time: units.iter().map(|u| u.seconds).sum(),
            cases: units.iter().map(unit_case).collect(),
        });
    }
    for r in results.map(|r| r.results.as_slice()).unwrap_or_default() {
        let class = format!("model.{}", r.name);
        let mut cases: Vec<Case> = r
            .checks
            .iter()
            .map(|c| Case {
                name: c.label(),
                class: class.clone(),
                time: 0.0,
                outcome: (c.status == CheckStatus::Fail).then(|| {
                    let mut text = c.message.clone();
                    if !c.samples.is_empty() {
                        text.push_str("\nfailing values: ");
                        text.push_str(&c.samples.join(", "));
                    }
                    ("failure", text)
                }),
            })
            .collect();
        match r.status {
            ModelStatus::Error => cases.insert(
                0,
                Case {
                    name: "build".into(),
                    class: class.clone(),
                    time: r.execution_time,
                    outcome: Some(("error", r.message.clone())),
                },
            ),
            ModelStatus::Skipped => cases.insert(
                0,
                Case {
                    name: "build".into(),
                    class: class.clone(),
                    time: 0.0,
                    outcome: Some(("skipped", r.message.clone())),
                },
            ),
            _ if cases.is_empty() => cases.push(Case {
                name: "build".into(),
                class: class.clone(),
                time: r.execution_time,
                outcome: None,
            }),
            _ => {}
        }
        suites.push(Suite {
            name: class,
            time: r.execution_time,
            cases,
        });
    }
    let xml = render(&suites);
    let tmp = path.with_extension("xml.tmp");
    std::fs::write(&tmp, xml).map_err(|e| SluiceError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| SluiceError::io(path, e))
}

fn unit_case(u: &UnitOutcome) -> Case {
    Case {
        name: u.test.clone(),
        class: format!("model.{}", u.model),
        time: u.seconds,
        outcome: match u.status {
            UnitStatus::Pass => None,
            UnitStatus::Fail => Some(("failure", u.message.clone())),
            UnitStatus::Error => Some(("error", u.message.clone())),
        },
    }
}

fn count(cases: &[Case], kind: &str) -> usize {
    cases
        .iter()
        .filter(|c| c.outcome.as_ref().is_some_and(|(k, _)| *k == kind))
        .count()
}

fn render(suites: &[Suite]) -> String {
    let all: Vec<&Case> = suites.iter().flat_map(|s| &s.cases).collect();
    let total = |kind: &str| {
        all.iter()
            .filter(|c| c.outcome.as_ref().is_some_and(|(k, _)| *k == kind))
            .count()
    };
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"sluice\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">",
        all.len(),
        total("failure"),
        total("error"),
        suites.iter().map(|s| s.time).sum::<f64>()
    );
    let stamp = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S");
    for (id, s) in suites.iter().enumerate() {
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{stamp}\" id=\"{id}\">",
            escape(&s.name),
            s.cases.len(),
            count(&s.cases, "failure"),
            count(&s.cases, "error"),
            count(&s.cases, "skipped"),
            s.time
        );
        for c in &s.cases {
            let head = format!(
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                escape(&c.name),
                escape(&c.class),
                c.time
            );
            match &c.outcome {
                None => {
                    let _ = writeln!(x, "{head}/>");
                }
                Some((kind, message)) => {
                    let first = message.lines().next().unwrap_or("");
                    let _ = writeln!(
                        x,
                        "{head}>\n      <{kind} message=\"{}\">{}</{kind}>\n    </testcase>",
                        escape(first),
                        escape(message)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}

/// Text for XML attributes and content; characters XML 1.0 cannot hold are dropped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\n' | '\t' | '\r' => out.push(ch),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}
