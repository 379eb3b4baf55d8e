//! Unit test files: `tests/**/*.toml` in the project, each holding `[test.NAME]` tables.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::config::{toml_error, var_text};
use crate::error::{Result, SluiceError};

/// One `[test.NAME]`: a model run on fixed inputs, and the rows it must return.
#[derive(Debug)]
pub struct UnitTest {
    pub name: String,
    pub file: PathBuf,
    pub model: String,
    pub inputs: IndexMap<String, Fixture>,
    pub expect: Expectation,
    /// Expected rows of the model's CTEs, by CTE name.
    pub expect_cte: IndexMap<String, Expectation>,
    pub vars: BTreeMap<String, String>,
    pub secrets: BTreeMap<String, String>,
}

/// Rows standing in for a source or an upstream model.
#[derive(Debug)]
pub enum Fixture {
    Rows(Vec<toml::Table>),
    /// A CSV file with a header, relative to the test file's folder.
    Csv(PathBuf),
    Sql(String),
}

#[derive(Debug)]
pub struct Expectation {
    pub rows: Vec<toml::Table>,
    /// Compare the order of the rows too (by default they are compared as a multiset).
    pub ordered: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    test: IndexMap<String, TestSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestSpec {
    model: String,
    #[serde(default)]
    inputs: IndexMap<String, FixtureSpec>,
    expect: ExpectSpec,
    #[serde(default)]
    expect_cte: IndexMap<String, ExpectSpec>,
    #[serde(default)]
    vars: BTreeMap<String, toml::Value>,
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureSpec {
    rows: Option<Vec<toml::Table>>,
    csv: Option<String>,
    sql: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectSpec {
    rows: Vec<toml::Table>,
    #[serde(default)]
    ordered: bool,
}

impl ExpectSpec {
    fn into_expectation(self) -> Expectation {
        Expectation {
            rows: self.rows,
            ordered: self.ordered,
        }
    }
}

/// Every unit test of the project, in file order then in the order written.
pub fn discover(root: &Path) -> Result<Vec<UnitTest>> {
    let dir = root.join("tests");
    let mut files = Vec::new();
    collect_toml(&dir, &mut files)?;
    files.sort();
    let mut tests = Vec::new();
    for file in files {
        tests.extend(parse_file(&file)?);
    }
    Ok(tests)
}

fn collect_toml(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(SluiceError::io(dir, e)),
    };
    for entry in entries {
        let path = entry.map_err(|e| SluiceError::io(dir, e))?.path();
        if path.is_dir() {
            collect_toml(&path, out)?;
        } else if path.extension().is_some_and(|x| x == "toml") {
            out.push(path);
        }
    }
    Ok(())
}

fn parse_file(path: &Path) -> Result<Vec<UnitTest>> {
    let text = std::fs::read_to_string(path).map_err(|e| SluiceError::io(path, e))?;
    let file: TestFile = toml::from_str(&text).map_err(|e| toml_error(path, &text, &e))?;
    let folder = path.parent().unwrap_or(Path::new("."));
    let mut tests = Vec::new();
    for (name, spec) in file.test {
        let key = |k: &str| format!("test.{name}.{k}");
        let mut inputs = IndexMap::new();
        for (input, f) in spec.inputs {
            let fixture = match (f.rows, f.csv, f.sql) {
                (Some(rows), None, None) => Fixture::Rows(rows),
                (None, Some(csv), None) => Fixture::Csv(folder.join(csv)),
                (None, None, Some(sql)) => Fixture::Sql(sql),
                _ => {
                    return Err(SluiceError::config(
                        path,
                        key(&format!("inputs.{input}")),
                        "give exactly one of `rows`, `csv` or `sql`",
                    ))
                }
            };
            inputs.insert(input, fixture);
        }
        let vars = spec
            .vars
            .into_iter()
            .map(|(k, v)| (k, var_text(&v)))
            .collect();
        tests.push(UnitTest {
            name,
            file: path.to_path_buf(),
            model: spec.model,
            inputs,
            expect: spec.expect.into_expectation(),
            expect_cte: spec
                .expect_cte
                .into_iter()
                .map(|(k, v)| (k, v.into_expectation()))
                .collect(),
            vars,
            secrets: spec.secrets,
        });
    }
    Ok(tests)
}
