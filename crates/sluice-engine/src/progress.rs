//! What a running plan has done so far, read from its operators' metrics: the rows and bytes
//! its scans have read, or, while a `resolve_identities` works, its edges, ids, groups and
//! spilled bytes. The shell's spinner and `run`'s live lines show the same words.

use datafusion::physical_plan::ExecutionPlan;

/// One line for a plan in flight, such as "1.2M rows, 35.0 MiB scanned".
pub fn work_line(plan: &dyn ExecutionPlan) -> String {
    match identity_work(plan) {
        Some(line) => line,
        None => {
            let (rows, bytes) = scanned(plan);
            format!("{} rows, {} scanned", human_count(rows), human_bytes(bytes))
        }
    }
}

/// Rows and bytes read so far by the plan's leaves (the scans).
fn scanned(plan: &dyn ExecutionPlan) -> (usize, usize) {
    let children = plan.children();
    if children.is_empty() {
        let metrics = plan.metrics();
        let rows = metrics.as_ref().and_then(|m| m.output_rows()).unwrap_or(0);
        let bytes = metrics
            .as_ref()
            .and_then(|m| m.sum_by_name("bytes_scanned"))
            .map(|v| v.as_usize())
            .unwrap_or(0);
        return (rows, bytes);
    }
    children.iter().fold((0, 0), |(r, b), c| {
        let (cr, cb) = scanned(c.as_ref());
        (r + cr, b + cb)
    })
}

/// What a `resolve_identities` in the plan has done so far: it reads its inputs itself, so
/// the scans below it show nothing while it works.
fn identity_work(plan: &dyn ExecutionPlan) -> Option<String> {
    if plan.name() == "IdentityExec" {
        let metrics = plan.metrics()?;
        let count = |name: &str| metrics.sum_by_name(name).map(|v| v.as_usize()).unwrap_or(0);
        return Some(format!(
            "resolve_identities: {} edges, {} ids, {} groups, {} spilled",
            human_count(count("edges")),
            human_count(count("ids")),
            human_count(count("groups")),
            human_bytes(count("spilled_bytes"))
        ));
    }
    plan.children()
        .into_iter()
        .find_map(|c| identity_work(c.as_ref()))
}

pub fn human_count(n: usize) -> String {
    match n {
        n if n >= 1_000_000_000 => format!("{:.1}B", n as f64 / 1e9),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 1_000 => format!("{:.1}K", n as f64 / 1e3),
        n => n.to_string(),
    }
}

pub fn human_bytes(n: usize) -> String {
    let n = n as f64;
    if n >= (1u64 << 30) as f64 {
        format!("{:.1} GiB", n / (1u64 << 30) as f64)
    } else if n >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", n / (1u64 << 20) as f64)
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_bytes_read_as_people_write_them() {
        assert_eq!(human_count(999), "999");
        assert_eq!(human_count(12_345), "12.3K");
        assert_eq!(human_count(11_909_941), "11.9M");
        assert_eq!(human_count(2_500_000_000), "2.5B");
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(3 << 20), "3.0 MiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
    }
}
