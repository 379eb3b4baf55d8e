//! `resolve_identities` against a plain union-find written here: long chains, a giant
//! component, stars, pairs, self-loops, duplicate edges, NULL and empty endpoints, Unicode
//! ids, and previous mappings whose groups merge, in random order. In memory, spilling
//! under a small memory limit, and refused with a clear error under one too small.

mod common;
use common::*;

use std::collections::{BTreeMap, HashMap};

type Edge = (Option<String>, Option<String>);

/// The mapping as SPEC section 4 defines it: per id (sorted), its group's shared id, the
/// group's size and the id's previous shared id.
fn expected(edges: &[Edge], previous: &[(String, String)]) -> String {
    let mut index: BTreeMap<String, usize> = BTreeMap::new();
    for (l, r) in edges {
        for id in [l, r].into_iter().flatten().filter(|s| !s.is_empty()) {
            let n = index.len();
            index.entry(id.clone()).or_insert(n);
        }
    }
    let mut parent: Vec<usize> = (0..index.len()).collect();
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    for (l, r) in edges {
        if let (Some(l), Some(r)) = (l, r) {
            if let (Some(&a), Some(&b)) = (index.get(l), index.get(r)) {
                let (ra, rb) = (root(&mut parent, a), root(&mut parent, b));
                parent[ra] = rb;
            }
        }
    }
    let prev: HashMap<&str, &str> = previous
        .iter()
        .map(|(i, s)| (i.as_str(), s.as_str()))
        .collect();
    let mut size: HashMap<usize, usize> = HashMap::new();
    let mut smallest: HashMap<usize, &str> = HashMap::new();
    let mut sticky: HashMap<usize, &str> = HashMap::new();
    for (id, &i) in &index {
        let r = root(&mut parent, i);
        *size.entry(r).or_default() += 1;
        smallest.entry(r).or_insert(id.as_str());
        if let Some(&p) = prev.get(id.as_str()) {
            let s = sticky.entry(r).or_insert(p);
            if p < *s {
                *s = p;
            }
        }
    }
    let ns = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_DNS, b"sluice.identity");
    let mut out = String::from("id,shared_id,group_size,previous_shared_id\n");
    for (id, &i) in &index {
        let r = root(&mut parent, i);
        let shared = match sticky.get(&r) {
            Some(s) => s.to_string(),
            None => uuid::Uuid::new_v5(&ns, smallest[&r].as_bytes()).to_string(),
        };
        let p = prev.get(id.as_str()).copied().unwrap_or("");
        out.push_str(&format!("{id},{shared},{},{p}\n", size[&r]));
    }
    out
}

/// About `scale` * 9 edges of every shape, shuffled; and a previous mapping.
fn graph(scale: usize, seed: u64) -> (Vec<Edge>, Vec<(String, String)>) {
    let mut next = lcg(seed);
    let mut edges: Vec<Edge> = Vec::new();
    // A long chain, numbered so that text order is not number order.
    for i in 0..scale * 2 {
        edges.push((Some(format!("c{i}")), Some(format!("c{}", i + 1))));
    }
    // A giant component: random edges among `scale` ids, bridged to the chain.
    for _ in 0..scale * 3 / 2 {
        let (a, b) = (next() as usize % scale, next() as usize % scale);
        edges.push((Some(format!("g{a}")), Some(format!("g{b}"))));
    }
    edges.push((Some(format!("c{scale}")), Some("g17".to_string())));
    // Stars of four, pairs, self-loops, Unicode ids.
    for i in 0..scale / 4 {
        for j in 0..4 {
            edges.push((Some(format!("h{i}")), Some(format!("l{i}_{j}"))));
        }
    }
    for i in 0..scale {
        edges.push((Some(format!("p{i}")), Some(format!("q{i}"))));
    }
    for i in 0..scale / 20 {
        edges.push((Some(format!("s{i}")), Some(format!("s{i}"))));
        edges.push((Some(format!("ü{i}")), Some(format!("é{i}"))));
    }
    // Duplicates of earlier edges; NULL and empty endpoints.
    for _ in 0..scale / 5 {
        let e = edges[next() as usize % edges.len()].clone();
        edges.push(e);
    }
    for i in 0..scale / 50 {
        edges.push((Some(format!("n{i}")), None));
        edges.push((None, Some(format!("m{i}"))));
        edges.push((None, None));
        edges.push((Some(String::new()), Some(format!("o{i}"))));
    }
    for i in (1..edges.len()).rev() {
        edges.swap(i, next() as usize % (i + 1));
    }
    let uuid =
        |n: usize| uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, &n.to_le_bytes()).to_string();
    let mut previous = vec![
        // The chain's two ends had different shared ids; now one group, the smaller wins.
        ("c10".to_string(), "prev-b".to_string()),
        (format!("c{}", scale * 2 - 3), "prev-a".to_string()),
        // A canonical UUID against text in one group.
        ("p1".into(), uuid(1)),
        ("q1".into(), "0-text".into()),
        // Not in the graph: ignored.
        ("gone".into(), "prev-gone".into()),
    ];
    for i in 0..scale / 4 {
        if i % 3 == 0 {
            previous.push((format!("h{i}"), uuid(i * 7)));
        }
        if i % 5 == 0 {
            previous.push((format!("l{i}_2"), uuid(i * 7 + 1)));
        }
    }
    (edges, previous)
}

fn project_of(edges: &[Edge], previous: &[(String, String)]) -> tempfile::TempDir {
    let mut csv = String::from("l,r\n");
    for (l, r) in edges {
        csv.push_str(&format!(
            "{},{}\n",
            l.as_deref().unwrap_or(""),
            r.as_deref().unwrap_or("")
        ));
    }
    let mut prev = String::from("id,shared_id\n");
    for (id, sid) in previous {
        prev.push_str(&format!("{id},{sid}\n"));
    }
    project(&[
        (
            "sluice.toml",
            "[sources.edges]\nlocation = \"edges.csv\"\n[sources.previous]\nlocation = \"previous.csv\"\n",
        ),
        ("edges.csv", &csv),
        ("previous.csv", &prev),
    ])
}

const MAPPING: &str = "SELECT id, shared_id, group_size, previous_shared_id FROM resolve_identities('edges', 'l', 'r', 'previous') ORDER BY id";

fn mapping(p: &std::path::Path, memory_limit: &str) -> Run {
    let mut args = vec!["shell", "--format", "csv", "-c", MAPPING];
    if !memory_limit.is_empty() {
        args = [&["--memory-limit", memory_limit][..], &args].concat();
    }
    run(p, &args)
}

#[test]
fn every_shape_of_graph_gives_the_plain_union_find_answer() {
    for seed in [1, 2] {
        let (edges, previous) = graph(400, seed);
        let p = project_of(&edges, &previous);
        let r = mapping(p.path(), "");
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(r.stdout, expected(&edges, &previous), "seed {seed}");
    }
}

#[test]
fn spilling_under_a_small_memory_limit_gives_the_same_groups() {
    let (edges, previous) = graph(40_000, 7);
    let p = project_of(&edges, &previous);
    let want = expected(&edges, &previous);
    let r = mapping(p.path(), "24M");
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout == want,
        "spilled mapping differs from the plain union-find"
    );
    let plan = query_csv(
        p.path(),
        "EXPLAIN ANALYZE SELECT count(*) FROM resolve_identities('edges', 'l', 'r', 'previous')",
    );
    assert_eq!(identity_spills(&plan), 0, "{plan}");
    let r = run(
        p.path(),
        &[
            "--memory-limit",
            "24M",
            "shell",
            "--format",
            "csv",
            "-c",
            "EXPLAIN ANALYZE SELECT count(*) FROM resolve_identities('edges', 'l', 'r', 'previous')",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(identity_spills(&r.stdout) > 0, "{}", r.stdout);
}

/// The spill count EXPLAIN ANALYZE shows for the IdentityExec.
fn identity_spills(plan: &str) -> u64 {
    plan.lines()
        .find(|l| l.contains("IdentityExec"))
        .and_then(|l| l.split("spill_count=").nth(1))
        .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no IdentityExec spill count in {plan}"))
}

#[test]
fn a_memory_limit_too_small_even_for_spilling_is_a_clear_error() {
    let (edges, previous) = graph(40_000, 3);
    let p = project_of(&edges, &previous);
    let r = mapping(p.path(), "2M");
    assert_eq!(r.code, 1, "{}", r.stdout);
    assert!(
        r.stderr.contains("resolve_identities: ")
            && r.stderr.contains("even when spilling")
            && r.stderr.contains("raise --memory-limit"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}
