//! The io-shell's top-level modules (`src/cli/`, `src/kernel/`, ...,
//! `src/sys/`) depend on each other without a cycle, so that each can be
//! read, tested and changed knowing only the ones below it.
//!
//! Reads every source file under `src/` (but `lib.rs` and `main.rs`) and
//! takes each `crate::NAME` path in its code (`use` lines, and paths
//! written inline; comments are left out) as an edge from the file's
//! top-level module to `NAME`. The test fails on a cycle, naming it with a
//! line that makes each of its edges.
//!
//! Also: libc functions are called in `src/sys/` only, one wrapper each.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One reason for an edge: the file and line that names the other module.
type Evidence = (PathBuf, usize, String);

/// Edges between top-level modules, each with its first evidence.
type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

#[test]
fn top_level_modules_form_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let graph = module_graph(&src);
    assert!(
        graph.len() >= 5,
        "found too few modules under {}: {:?}",
        src.display(),
        graph.keys()
    );
    if let Some(cycle) = find_cycle(&graph) {
        let mut text = format!("import cycle: {}\n", cycle.join(" -> "));
        for pair in cycle.windows(2) {
            let (file, line, code) = &graph[&pair[0]][&pair[1]];
            text.push_str(&format!(
                "  {} -> {}: {}:{line}: {}\n",
                pair[0],
                pair[1],
                file.display(),
                code.trim()
            ));
        }
        panic!("{text}");
    }
    // The order a reader can follow, lowest first.
    let mut order = Vec::new();
    let mut left: BTreeSet<&String> = graph.keys().collect();
    while !left.is_empty() {
        let ready: Vec<&String> = left
            .iter()
            .copied()
            .filter(|m| graph[*m].keys().all(|d| !left.contains(d)))
            .collect();
        order.push(
            ready
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(" "),
        );
        for m in ready {
            left.remove(m);
        }
    }
    println!("layers, lowest first: {}", order.join(" | "));
}

/// Every libc function is called through its one wrapper in `src/sys/`
/// (constants and types may be used anywhere).
#[test]
fn libc_is_called_only_in_sys() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut calls = Vec::new();
    for file in rust_files(&src) {
        if file.starts_with(src.join("sys")) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        for (n, line) in text.lines().enumerate() {
            let code = line.split_once("//").map_or(line, |(code, _)| code);
            for (at, _) in code.match_indices("libc::") {
                let name: String = code[at + "libc::".len()..]
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let rest = &code[at + "libc::".len() + name.len()..];
                if name.starts_with(|c: char| c.is_ascii_lowercase()) && rest.starts_with('(') {
                    calls.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        calls.is_empty(),
        "libc called outside src/sys/:\n{}",
        calls.join("\n")
    );
}

/// The test's own check: a planted cycle is found and named.
#[test]
fn a_cycle_is_found() {
    let mut graph = Graph::new();
    let ev = || (PathBuf::from("x.rs"), 1, String::new());
    for (from, to) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        graph
            .entry(from.into())
            .or_default()
            .insert(to.into(), ev());
        graph.entry(to.into()).or_default();
    }
    let cycle = find_cycle(&graph).expect("a -> b -> c -> a");
    assert_eq!(cycle.first(), cycle.last());
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    graph.get_mut("c").unwrap().remove("a");
    assert_eq!(find_cycle(&graph), None);
}

#[test]
fn paths_are_read_from_code_not_comments() {
    let code = "use crate::store::Db;\n\
                // crate::kernel is only mentioned\n\
                use crate::{origin, sys::memory};\n\
                let x = crate::search::MAX; /// crate::cli\n\
                use crate::{\n    exec::daemon::Daemon,\n    pins,\n};\n";
    let names: BTreeSet<String> = crate_paths(code).into_iter().map(|(_, n)| n).collect();
    let want = ["exec", "origin", "pins", "search", "store", "sys"];
    assert_eq!(names, want.iter().map(|s| s.to_string()).collect());
}

/// Every top-level module under `src` and the modules it names.
fn module_graph(src: &Path) -> Graph {
    let mut graph = Graph::new();
    for file in rust_files(src) {
        let rel = file.strip_prefix(src).expect("under src");
        let first = rel.components().next().expect("a path");
        let first = first.as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("readable source");
        let edges = graph.entry(module.clone()).or_default();
        for (line, name) in crate_paths(&text) {
            if name != module && !edges.contains_key(&name) {
                let code = text.lines().nth(line - 1).unwrap_or("").to_owned();
                edges.insert(name, (rel.to_path_buf(), line, code));
            }
        }
    }
    // Names that are not modules (`crate::VERSION`) are no edges.
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|to, _| modules.contains(to));
    }
    graph
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable dir")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|x| x == "rs") {
            out.push(path);
        }
    }
    out
}

/// The first segment after each `crate::` in code, with its line number
/// (1-based). `crate::{a, b::c}` names `a` and `b`, over several lines too.
fn crate_paths(text: &str) -> Vec<(usize, String)> {
    let code: Vec<&str> = text
        .lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect();
    let mut out = Vec::new();
    let joined = code.join("\n");
    let line_of = |at: usize| joined[..at].matches('\n').count() + 1;
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    for (at, _) in joined.match_indices("crate::") {
        if joined[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
        {
            continue; // `musicfs_crate::` or the like
        }
        let rest = &joined[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, at brace depth 0.
            let mut depth = 0;
            let mut start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => start = true,
                    c if start && (c.is_alphanumeric() || c == '_') => {
                        let name = ident(&group[i..]);
                        let offset = at + "crate::{".len() + i;
                        out.push((line_of(offset), name));
                        start = false;
                    }
                    _ => {}
                }
            }
        } else {
            let name = ident(rest);
            if !name.is_empty() {
                out.push((line_of(at), name));
            }
        }
    }
    out
}

/// A cycle as a path that ends where it starts, or `None`.
fn find_cycle(graph: &Graph) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        graph: &Graph,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        marks.insert(node.to_owned(), Mark::Open);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flat_map(|e| e.keys()) {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let from = stack.iter().position(|n| n == next).expect("on the stack");
                    let mut cycle = stack[from..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(Mark::Done) => {}
                None => {
                    if let Some(cycle) = visit(next, graph, marks, stack) {
                        return Some(cycle);
                    }
                }
            }
        }
        stack.pop();
        marks.insert(node.to_owned(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    for node in graph.keys() {
        if !marks.contains_key(node) {
            let mut stack = Vec::new();
            if let Some(cycle) = visit(node, graph, &mut marks, &mut stack) {
                return Some(cycle);
            }
        }
    }
    None
}
