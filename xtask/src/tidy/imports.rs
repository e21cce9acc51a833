//! `import-cycle`: no circle between the files (modules) of one crate.
//!
//! A file is a node: `src/lib.rs`/`src/main.rs` is the crate root, `src/a.rs` and
//! `src/a/mod.rs` are module `a`, `src/a/b.rs` is `a::b`; inline modules belong to their file.
//! Edges come from non-test code: every path that starts with `crate::`, `super::` or
//! `self::`, in `use` items (brace trees expanded) and in code, resolved to the longest module
//! prefix that is a file. A module's paths into its own descendants are not edges: declaring
//! children and re-exporting their items is what a parent module is for, so the crate root
//! and every `mod.rs` may re-export. A path to an ancestor (`crate::Error`, `super::helper`)
//! or a sibling is an edge, and a circle of such edges fails, printed file by file.

use proc_macro2::{Delimiter, Spacing, TokenStream, TokenTree};
use quote::ToTokens;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::source::{self, Source};
use super::Problem;

/// A module path from its crate root (`[]` is the root).
type ModPath = Vec<String>;

/// The crate directory (`crates/x` or `xtask`) and module path of a source file, or `None`
/// for files outside a crate's `src/` (and for `src/bin/`).
pub(super) fn module_of(rel: &str) -> Option<(String, ModPath)> {
    let (krate, inner) = rel.split_once("/src/")?;
    let inner = inner.strip_suffix(".rs")?;
    let mut parts: Vec<String> = inner.split('/').map(str::to_string).collect();
    if parts.first().is_some_and(|p| p == "bin") {
        return None;
    }
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        parts.clear();
    } else if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some((krate.to_string(), parts))
}

/// Whether `toks[i..]` starts with `::`.
fn is_path_sep(toks: &[TokenTree], i: usize) -> bool {
    matches!((toks.get(i), toks.get(i + 1)),
        (Some(TokenTree::Punct(a)), Some(TokenTree::Punct(b)))
            if a.as_char() == ':' && a.spacing() == Spacing::Joint && b.as_char() == ':')
}

/// A relative path found in code, with its line.
struct Found {
    segments: Vec<String>,
    line: usize,
}

/// Reads `a::b::{c, d::e}` from `toks[i..]` (just after a `::`) onto `prefix`.
fn read_tail(
    toks: &[TokenTree],
    mut i: usize,
    prefix: Vec<String>,
    line: usize,
    out: &mut Vec<Found>,
) -> usize {
    let mut segments = prefix;
    loop {
        match toks.get(i) {
            Some(TokenTree::Ident(id)) => {
                segments.push(id.to_string());
                i += 1;
                if !is_path_sep(toks, i) {
                    break;
                }
                i += 2;
            }
            Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                for part in inner.split(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','))
                {
                    if !part.is_empty() {
                        read_tail(part, 0, segments.clone(), line, out);
                    }
                }
                return i + 1;
            }
            _ => break,
        }
    }
    out.push(Found { segments, line });
    i
}

/// Every path in `tokens` that starts with `crate::`, `super::` or `self::`.
fn relative_paths(tokens: TokenStream, out: &mut Vec<Found>) {
    let toks: Vec<TokenTree> = tokens.into_iter().collect();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i] {
            TokenTree::Group(g) => {
                relative_paths(g.stream(), out);
                i += 1;
            }
            TokenTree::Ident(id)
                if (id == "crate" || id == "super" || id == "self")
                    && is_path_sep(&toks, i + 1) =>
            {
                let line = id.span().start().line;
                i = read_tail(&toks, i + 3, vec![id.to_string()], line, out);
            }
            _ => i += 1,
        }
    }
}

/// The module a path written in module `at` names (before its item), or `None`.
fn resolve(at: &[String], segments: &[String]) -> ModPath {
    let mut cur: ModPath = at.to_vec();
    for (n, s) in segments.iter().enumerate() {
        match s.as_str() {
            "crate" if n == 0 => cur.clear(),
            "super" => {
                cur.pop();
            }
            "self" => {}
            _ => cur.push(s.clone()),
        }
    }
    cur
}

/// The file edges of one crate: `from file -> to file -> first line`.
type Graph = BTreeMap<String, BTreeMap<String, usize>>;

fn crate_graphs(files: &[Source]) -> BTreeMap<String, Graph> {
    let mut modules: BTreeMap<String, BTreeMap<ModPath, String>> = BTreeMap::new();
    for f in files.iter().filter(|f| !f.test && f.ast.is_some()) {
        if let Some((krate, m)) = module_of(&f.rel) {
            modules.entry(krate).or_default().insert(m, f.rel.clone());
        }
    }
    let mut graphs: BTreeMap<String, Graph> = BTreeMap::new();
    for f in files.iter().filter(|f| !f.test) {
        let (Some(ast), Some((krate, here))) = (&f.ast, module_of(&f.rel)) else {
            continue;
        };
        let Some(known) = modules.get(&krate) else {
            continue;
        };
        let graph = graphs.entry(krate.clone()).or_default();
        let edges = graph.entry(f.rel.clone()).or_default();
        source::each_item(&ast.items, &mut Vec::new(), &mut |mods, item| {
            let mut at = here.clone();
            at.extend(mods.iter().cloned());
            let mut found = Vec::new();
            relative_paths(item.to_token_stream(), &mut found);
            for p in found {
                let mut target = resolve(&at, &p.segments);
                while !known.contains_key(&target) && target.pop().is_some() {}
                if target.starts_with(&here) {
                    continue; // itself or a descendant
                }
                if let Some(to) = known.get(&target) {
                    edges.entry(to.clone()).or_insert(p.line);
                }
            }
        });
    }
    graphs
}

/// The nodes reachable from `from`, each with the node it was reached from.
fn reach(graph: &Graph, from: &str) -> BTreeMap<String, String> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = VecDeque::from([from.to_string()]);
    while let Some(n) = queue.pop_front() {
        for next in graph.get(&n).into_iter().flat_map(|e| e.keys()) {
            if !seen.contains_key(next) {
                seen.insert(next.clone(), n.clone());
                queue.push_back(next.clone());
            }
        }
    }
    seen
}

/// One shortest circle through `node`, as `a -> b (line) -> … -> a (line)`.
fn circle(graph: &Graph, node: &str) -> Option<String> {
    let back = reach(graph, node);
    back.get(node)?;
    let mut path = vec![node.to_string()];
    let mut cur = back.get(node)?.clone();
    while cur != node {
        path.push(cur.clone());
        cur = back.get(&cur)?.clone();
    }
    path.push(node.to_string());
    path.reverse();
    let mut text = path[0].clone();
    for w in path.windows(2) {
        let line = graph
            .get(&w[0])
            .and_then(|e| e.get(&w[1]))
            .copied()
            .unwrap_or(0);
        text.push_str(&format!(" -> {} (line {line} of the former)", w[1]));
    }
    Some(text)
}

/// Every circle of imports between the files of a crate, one per strongly connected group.
pub(super) fn check(files: &[Source], out: &mut Vec<Problem>) {
    for graph in crate_graphs(files).values() {
        let mut reported: BTreeSet<String> = BTreeSet::new();
        for node in graph.keys() {
            if reported.contains(node) {
                continue;
            }
            let Some(text) = circle(graph, node) else {
                continue;
            };
            let from_node = reach(graph, node);
            for other in from_node.keys() {
                if reach(graph, other).contains_key(node.as_str()) {
                    reported.insert(other.clone());
                }
            }
            out.push(Problem::new("import-cycle", text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(code: &str) -> Vec<String> {
        let mut found = Vec::new();
        relative_paths(code.parse().unwrap(), &mut found);
        found.iter().map(|f| f.segments.join("::")).collect()
    }

    #[test]
    fn relative_paths_are_read_with_their_use_trees() {
        assert_eq!(
            paths("use crate::{a::X, b::{c, d as e}}; fn f() { super::g::h(); self::i::J; }"),
            [
                "crate::a::X",
                "crate::b::c",
                "crate::b::d",
                "super::g::h",
                "self::i::J"
            ]
        );
        assert!(paths("pub(crate) fn f() {} use std::io;").is_empty());
    }

    #[test]
    fn files_are_modules() {
        assert_eq!(
            module_of("crates/x/src/lib.rs"),
            Some(("crates/x".into(), vec![]))
        );
        assert_eq!(
            module_of("crates/x/src/a/mod.rs"),
            Some(("crates/x".into(), vec!["a".to_string()]))
        );
        assert_eq!(
            module_of("xtask/src/fuzz/worker.rs"),
            Some((
                "xtask".into(),
                vec!["fuzz".to_string(), "worker".to_string()]
            ))
        );
        assert_eq!(module_of("crates/x/src/bin/y.rs"), None);
        assert_eq!(
            resolve(
                &["a".into(), "b".into()],
                &["super".into(), "c".into(), "D".into()]
            ),
            ["a", "c", "D"]
        );
    }

    fn source(rel: &str, text: &str) -> Source {
        Source {
            rel: rel.to_string(),
            text: text.to_string(),
            test: false,
            ast: Some(syn::parse_file(text).unwrap()),
        }
    }

    #[test]
    fn a_circle_of_three_is_found_and_re_exports_are_not_circles() {
        let files = [
            source(
                "crates/x/src/lib.rs",
                "mod a; mod b; mod c; mod d; pub use crate::a::A; pub struct Root;",
            ),
            source(
                "crates/x/src/a.rs",
                "use crate::b::B; pub struct A(crate::Root);",
            ),
            source(
                "crates/x/src/b.rs",
                "pub struct B; pub fn g() { crate::c::h(); }",
            ),
            source("crates/x/src/c.rs", "pub fn h() { let _ = crate::a::A; }"),
            source(
                "crates/x/src/d/mod.rs",
                "mod e; pub use self::e::E; pub fn helper() {}",
            ),
            source("crates/x/src/d/e.rs", "use super::helper; pub struct E;"),
        ];
        let mut out = Vec::new();
        check(&files, &mut out);
        let all: Vec<String> = out.iter().map(ToString::to_string).collect();
        assert_eq!(all.len(), 1, "{all:#?}");
        for f in ["a.rs", "b.rs", "c.rs"] {
            assert!(all[0].contains(&format!("crates/x/src/{f}")), "{all:#?}");
        }
        assert!(
            !all[0].contains("lib.rs") && !all[0].contains("/d/"),
            "{all:#?}"
        );
    }
}
