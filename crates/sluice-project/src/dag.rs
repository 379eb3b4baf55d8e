//! Dependencies between models, inferred from the tables each model's SQL reads, and the
//! order they run in. Unknown tables and cycles are reported before anything runs.

use std::collections::{BTreeSet, HashMap};

use datafusion::sql::parser::DFParser;
use datafusion::sql::resolve::resolve_table_references;

use super::model::Model;
use crate::error::{Result, SluiceError};

/// Table names a model reads: what its SQL reads (`sql_reads`) and relationship checks.
pub fn reads(model: &Model, sql: &str) -> Result<BTreeSet<String>> {
    let mut names = sql_reads(model, sql)?;
    for check in &model.checks {
        if let Some(t) = check.reads() {
            names.insert(t.to_string());
        }
    }
    names.remove(&model.name);
    Ok(names)
}

/// Table names a model's SQL reads: FROM/JOIN references (CTE names excluded), tables
/// named in `resolve_identities(...)`, and its erasure list.
pub fn sql_reads(model: &Model, sql: &str) -> Result<BTreeSet<String>> {
    let statements = DFParser::parse_sql(sql).map_err(|e| model.datafusion_error(&e, 0))?;
    if statements.len() != 1 {
        return Err(model.error(format!(
            "a model is one SELECT statement, found {}",
            statements.len()
        )));
    }
    let (tables, _ctes) = resolve_table_references(&statements[0], true)
        .map_err(|e| model.error(crate::error::describe_datafusion_error(&e)))?;
    let mut names: BTreeSet<String> = tables
        .iter()
        .map(|t| t.table().to_string())
        // Files queried by path are not project tables.
        .filter(|n| !n.contains('/') && !n.contains("://"))
        // Table functions (`resolve_identities(...)`) are not tables either.
        .filter(|n| !is_called(sql, n))
        .collect();
    let call = regex::Regex::new(
        r"(?i)resolve_identities\s*\(\s*'([^']+)'(?:\s*,\s*'[^']*'){2}(?:\s*,\s*'([^']+)')?",
    )
    .map_err(|e| model.error(e.to_string()))?;
    for c in call.captures_iter(sql) {
        names.extend(c.iter().skip(1).flatten().map(|m| m.as_str().to_string()));
    }
    if let Some(e) = &model.erasure {
        names.insert(e.list.clone());
    }
    names.remove(&model.name);
    Ok(names)
}

fn is_called(sql: &str, name: &str) -> bool {
    regex::Regex::new(&format!(r"(?i)\b{}\s*\(", regex::escape(name)))
        .map(|re| re.is_match(sql))
        .unwrap_or(false)
}

/// Models in dependency order. `deps[i]` are the model indices model i reads.
pub fn order(models: &[Model], deps: &[Vec<usize>]) -> Result<Vec<usize>> {
    let n = models.len();
    let mut indegree: Vec<usize> = deps.iter().map(|d| d.len()).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, d) in deps.iter().enumerate() {
        for &j in d {
            dependents[j].push(i);
        }
    }
    let mut ready: BTreeSet<(String, usize)> = (0..n)
        .filter(|&i| indegree[i] == 0)
        .map(|i| (models[i].name.clone(), i))
        .collect();
    let mut out = Vec::with_capacity(n);
    while let Some(first) = ready.iter().next().cloned() {
        ready.remove(&first);
        let i = first.1;
        out.push(i);
        for &k in &dependents[i] {
            indegree[k] -= 1;
            if indegree[k] == 0 {
                ready.insert((models[k].name.clone(), k));
            }
        }
    }
    if out.len() < n {
        let cycle = find_cycle(models, deps, &indegree);
        return Err(SluiceError::Config {
            file: models[cycle[0]].file.clone(),
            line: None,
            key: None,
            message: format!(
                "models form a cycle: {}",
                cycle
                    .iter()
                    .map(|&i| models[i].name.as_str())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            ),
        });
    }
    Ok(out)
}

fn find_cycle(models: &[Model], deps: &[Vec<usize>], indegree: &[usize]) -> Vec<usize> {
    let start = (0..models.len()).find(|&i| indegree[i] > 0).unwrap_or(0);
    let mut path = vec![start];
    let mut seen: HashMap<usize, usize> = HashMap::from([(start, 0)]);
    let mut cur = start;
    loop {
        let Some(&next) = deps[cur].iter().find(|&&d| indegree[d] > 0) else {
            return path;
        };
        if let Some(&pos) = seen.get(&next) {
            let mut cycle: Vec<usize> = path[pos..].to_vec();
            cycle.reverse();
            cycle.push(cycle[0]);
            return cycle;
        }
        seen.insert(next, path.len());
        path.push(next);
        cur = next;
    }
}
