//! Personal data that cannot leak. Before anything is written, every published model's
//! output columns are followed back through views, CTEs and upstream models to the
//! columns whose values they carry (`lineage::Mode::Raw`). A value of a personal column
//! (`personal = [...]` on a source, `pii = true` on an upstream model's column) may reach
//! a table or incremental output only through a pseudonymising function (`hash_pii`,
//! `hmac_sha256`, `sha256_hex`, `sha2`) or a count, unless the model names the column in
//! `allow_personal`. Filters, joins and group keys on personal columns are allowed: only
//! outputs count.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::leaks::{Leak, PersonalData};
use super::lineage::{column_hops, model_plans_then_forget, Mode};
use super::model::{Materialized, Model};
use super::ProjectPlan;
use crate::error::Result;
use crate::session::Session;

/// Follow every table and incremental model's outputs back to the personal columns they
/// carry raw.
pub async fn personal_data(session: &Session, plan: &ProjectPlan) -> Result<PersonalData> {
    let personal_sources: HashSet<String> = session.project.config.personal_columns().collect();
    let mut found = PersonalData::default();
    if personal_sources.is_empty() && plan.models().all(|m| m.pii_columns.is_empty()) {
        return Ok(found);
    }
    let hops: Vec<Vec<(String, BTreeSet<String>)>> =
        model_plans_then_forget(session, plan, |planned| column_hops(planned, Mode::Raw))
            .await?
            .into_iter()
            .map(Option::unwrap_or_default)
            .collect();
    // `model.column` -> the personal columns whose raw values it carries, each with the
    // columns in between.
    let mut carried: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for &i in &plan.order {
        let m = &plan.planned[i].model;
        for (column, feeds) in &hops[i] {
            let mut paths: Vec<(String, Vec<String>)> = Vec::new();
            let mut seen = BTreeSet::new();
            for from in feeds {
                let is_personal = personal_sources.contains(from) || is_marked(plan, from);
                if is_personal && seen.insert(from.clone()) {
                    paths.push((from.clone(), Vec::new()));
                }
                for (origin, through) in carried.get(from).into_iter().flatten() {
                    if seen.insert(origin.clone()) {
                        let mut through = through.clone();
                        through.push(from.clone());
                        paths.push((origin.clone(), through));
                    }
                }
            }
            if !paths.is_empty() {
                found.carried.insert(format!("{}.{column}", m.name));
            }
            carried.insert(format!("{}.{column}", m.name), paths);
        }
        if m.materialized == Materialized::View {
            continue;
        }
        for (column, _) in &hops[i] {
            for (origin, through) in carried
                .get(&format!("{}.{column}", m.name))
                .into_iter()
                .flatten()
            {
                let leak = Leak {
                    model: m.name.clone(),
                    column: column.clone(),
                    personal: origin.clone(),
                    through: through.clone(),
                };
                let list = match m.allow_personal.contains(column) {
                    true => &mut found.allowed,
                    false => &mut found.leaks,
                };
                list.entry(i).or_default().push(leak);
            }
        }
    }
    Ok(found)
}

/// A `model.column` marked `pii = true`.
fn is_marked(plan: &ProjectPlan, column: &str) -> bool {
    column.split_once('.').is_some_and(|(model, c)| {
        plan.models()
            .any(|m| m.name == model && m.pii_columns.iter().any(|p| p == c))
    })
}

/// `run`'s gate: an error naming the first selected model that would publish raw personal
/// data, with every such column; nothing is written.
pub async fn refuse_leaks(
    session: &Session,
    plan: &ProjectPlan,
    selected: &HashSet<usize>,
) -> Result<PersonalData> {
    let found = personal_data(session, plan).await?;
    let mut refused = found.leaks.iter().filter(|(i, _)| selected.contains(i));
    if let Some((&i, leaks)) = refused.next() {
        let m: &Model = &plan.planned[i].model;
        let mut message = leaks
            .iter()
            .map(Leak::describe)
            .collect::<Vec<_>>()
            .join("\n  ");
        for (&j, more) in refused {
            for leak in more {
                message.push_str(&format!(
                    "\n  model `{}`: {}",
                    plan.planned[j].model.name,
                    leak.describe()
                ));
            }
        }
        return Err(m.error(message));
    }
    Ok(found)
}
