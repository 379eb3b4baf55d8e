//! Charts of the docs site as inline SVG (no scripts, nothing fetched): a model's published
//! rows over its recorded runs with each run's check outcome, and a funnel model's steps.

use std::fmt::Write;

use super::html::esc;
use super::results::RecordedRun;

/// Runs drawn at most (the most recent).
const RUNS_SHOWN: usize = 30;

/// Bars of the rows each run published (or would have, where its checks failed), and under
/// them one square per run: green when every check passed, red when one failed. A run whose
/// volume check failed carries a red ring over its bar. Each bar's tooltip tells the run.
pub fn run_history_svg(model: &str, runs: &[RecordedRun]) -> String {
    const WIDTH: f64 = 560.0;
    const LEFT: f64 = 70.0;
    const TOP: f64 = 22.0;
    const PLOT: f64 = 110.0;
    let runs = &runs[runs.len().saturating_sub(RUNS_SHOWN)..];
    if runs.is_empty() {
        return String::new();
    }
    let most = runs.iter().filter_map(|r| r.rows).max().unwrap_or(0).max(1);
    let slot = ((WIDTH - LEFT - 10.0) / runs.len() as f64).min(28.0);
    let bar = (slot * 0.7).max(2.0);
    let height = TOP + PLOT + 52.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<figure class=\"run-history\"><figcaption>Published rows and checks over the last {n} run{plural}</figcaption>\n\
         <svg class=\"run-history\" data-model=\"{model}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"Run history of {model}\">",
        n = runs.len(),
        plural = if runs.len() == 1 { "" } else { "s" },
        model = esc(model),
    );
    let base = TOP + PLOT;
    let _ = writeln!(
        s,
        "<text x=\"{x}\" y=\"{y}\" class=\"axis\" text-anchor=\"end\">{most}</text>\
         <text x=\"{x}\" y=\"{base}\" class=\"axis\" text-anchor=\"end\">0</text>\
         <line x1=\"{LEFT}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\" class=\"axis\"/>",
        x = LEFT - 6.0,
        y = TOP + 4.0,
        right = WIDTH - 6.0,
    );
    for (k, run) in runs.iter().enumerate() {
        let x = LEFT + slot * k as f64 + (slot - bar) / 2.0;
        let rows = run.rows.unwrap_or(0);
        let h = (rows as f64 / most as f64 * PLOT).max(1.0);
        let volume_failed = run.failed_checks.iter().any(|c| c == "volume");
        let class = match (run.published, volume_failed) {
            (true, _) => "run published",
            (false, false) => "run failed",
            (false, true) => "run failed volume-failed",
        };
        let outcome = if run.published {
            "published, every check passed".to_string()
        } else {
            format!("not published: {} failed", run.failed_checks.join(", "))
        };
        let rows_text = run
            .rows
            .map(|r| format!("{r} rows"))
            .unwrap_or_else(|| "rows not counted".into());
        let _ = writeln!(
            s,
            "<g class=\"{class}\" data-run=\"{run_id}\"><title>{run_id} · {at} · {rows_text} · {outcome}</title>\
             <rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{bar:.1}\" height=\"{h:.1}\"/>\
             <rect class=\"check\" x=\"{x:.1}\" y=\"{cy:.1}\" width=\"{bar:.1}\" height=\"10\"/>",
            run_id = esc(&run.run_id),
            at = esc(&run.finished_at),
            y = base - h,
            cy = base + 8.0,
            outcome = esc(&outcome),
        );
        if volume_failed {
            let _ = write!(
                s,
                "<circle class=\"volume-mark\" cx=\"{cx:.1}\" cy=\"{cy:.1}\" r=\"{r:.1}\"/>",
                cx = x + bar / 2.0,
                cy = base - h - 8.0,
                r = (bar / 2.0).clamp(3.0, 6.0),
            );
        }
        s.push_str("</g>\n");
    }
    let first = runs
        .first()
        .map(|r| day(&r.finished_at))
        .unwrap_or_default();
    let last = runs.last().map(|r| day(&r.finished_at)).unwrap_or_default();
    let _ = writeln!(
        s,
        "<text x=\"{LEFT}\" y=\"{y}\" class=\"axis\">{first}</text>\
         <text x=\"{right}\" y=\"{y}\" class=\"axis\" text-anchor=\"end\">{last}</text>\
         <text x=\"{label_x}\" y=\"{cy}\" class=\"axis\" text-anchor=\"end\">checks</text>\
         </svg></figure>",
        y = base + 36.0,
        right = WIDTH - 6.0,
        label_x = LEFT - 6.0,
        cy = base + 17.0,
        first = esc(&first),
        last = esc(&last),
    );
    s
}

/// A funnel: one centred band per step, as wide as the share of users who reached it (at
/// least that step), labelled with the count and the share of the first step.
pub fn funnel_svg(model: &str, column: &str, reached: &[(i64, u64)]) -> String {
    const WIDTH: f64 = 560.0;
    const BAND: f64 = 34.0;
    const GAP: f64 = 4.0;
    let Some(&(_, first)) = reached.first() else {
        return String::new();
    };
    let first = first.max(1);
    let height = reached.len() as f64 * (BAND + GAP) + 8.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<figure class=\"funnel\"><figcaption>Users by deepest <code>{column}</code> reached</figcaption>\n\
         <svg class=\"funnel\" data-model=\"{model}\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" aria-label=\"Funnel of {model}\">",
        column = esc(column),
        model = esc(model),
    );
    let widest = WIDTH - 160.0;
    for (k, &(step, users)) in reached.iter().enumerate() {
        let share = users as f64 / first as f64;
        let w = (widest * share).max(2.0);
        let next = reached
            .get(k + 1)
            .map(|&(_, n)| (widest * n as f64 / first as f64).max(2.0))
            .unwrap_or(w);
        let (cx, y) = (widest / 2.0 + 4.0, k as f64 * (BAND + GAP) + 4.0);
        // A trapezoid narrowing to the next step's width.
        let _ = writeln!(
            s,
            "<g class=\"step\" data-step=\"{step}\" data-users=\"{users}\"><title>step {step}: {users} users ({pct:.1}%)</title>\
             <polygon points=\"{x1:.1},{y:.1} {x2:.1},{y:.1} {x3:.1},{yb:.1} {x4:.1},{yb:.1}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty:.1}\" class=\"axis\">step {step}: {users} ({pct:.1}%)</text></g>",
            pct = share * 100.0,
            x1 = cx - w / 2.0,
            x2 = cx + w / 2.0,
            x3 = cx + next / 2.0,
            x4 = cx - next / 2.0,
            yb = y + BAND,
            tx = widest + 12.0,
            ty = y + BAND / 2.0 + 4.0,
        );
    }
    s.push_str("</svg></figure>\n");
    s
}

fn day(timestamp: &str) -> String {
    timestamp.get(..10).unwrap_or(timestamp).to_string()
}
