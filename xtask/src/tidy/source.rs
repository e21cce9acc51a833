//! The source files tidy reads, each parsed once, with its test code told apart.

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

use super::Problem;

/// One `.rs` file below `crates/`, `xtask/` or `tests/`.
pub(super) struct Source {
    /// The path from the repository root, `/`-separated.
    pub rel: String,
    /// The whole text.
    pub text: String,
    /// Test code as a whole file (see [`is_test_path`]).
    pub test: bool,
    /// The syntax tree, for non-test files that parse.
    pub ast: Option<syn::File>,
}

/// Whether the file at `rel` is test code as a whole: below a `tests/`, `benches/` or
/// `examples/` directory, or named `tests.rs` / `tests_*.rs` (a `#[cfg(test)] mod tests;`).
pub(super) fn is_test_path(rel: &str) -> bool {
    let mut parts: Vec<&str> = rel.split('/').collect();
    let name = parts.pop().unwrap_or_default();
    parts
        .iter()
        .any(|d| matches!(*d, "tests" | "benches" | "examples"))
        || name == "tests.rs"
        || (name.starts_with("tests_") && name.ends_with(".rs"))
}

/// Whether attributes mark an item as test code: `#[test]` (any path ending in `test`) or
/// `#[cfg(test)]` / `#[cfg(all(test, …))]`.
pub(super) fn is_test_item(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        let path = a.path();
        if path.segments.last().is_some_and(|s| s.ident == "test") {
            return true;
        }
        if !path.is_ident("cfg") {
            return false;
        }
        let syn::Meta::List(list) = &a.meta else {
            return false;
        };
        mentions_test(list.tokens.clone(), true)
    })
}

/// `test` at the top of a cfg predicate, or inside `all(…)`, not inside `not(…)`/`any(…)`.
fn mentions_test(tokens: proc_macro2::TokenStream, top: bool) -> bool {
    let toks: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
    toks.iter().enumerate().any(|(i, t)| match t {
        proc_macro2::TokenTree::Ident(id) if id == "test" => top,
        proc_macro2::TokenTree::Group(g) => {
            let all =
                i > 0 && matches!(&toks[i - 1], proc_macro2::TokenTree::Ident(id) if id == "all");
            all && mentions_test(g.stream(), true)
        }
        _ => false,
    })
}

/// Every `.rs` file below `dir` (no `target`, `.git` or `vendor` directories).
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    if !dir.is_dir() {
        return Ok(());
    }
    for e in fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            if p.file_name()
                .is_some_and(|n| n == "target" || n == ".git" || n == "vendor")
            {
                continue;
            }
            rust_files(&p, out)?;
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    Ok(())
}

/// Reads and parses every source file below `root`'s `crates/`, `xtask/` and `tests/`; a
/// non-test file that does not parse is a `parse` problem.
pub(super) fn load(root: &Path, problems: &mut Vec<Problem>) -> Result<Vec<Source>> {
    let mut paths = Vec::new();
    for dir in ["crates", "xtask", "tests"] {
        rust_files(&root.join(dir), &mut paths)?;
    }
    paths.sort();
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let text = fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
        let rel = p
            .strip_prefix(root)
            .unwrap_or(&p)
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/");
        let test = is_test_path(&rel);
        let ast = if test {
            None
        } else {
            match syn::parse_file(&text) {
                Ok(f) => Some(f),
                Err(e) => {
                    let at = e.span().start();
                    problems.push(Problem::new(
                        "parse",
                        format!("{rel}:{}: does not parse: {e}", at.line),
                    ));
                    None
                }
            }
        };
        files.push(Source {
            rel,
            text,
            test,
            ast,
        });
    }
    Ok(files)
}

/// The attributes of an item (empty for the kinds tidy does not look into).
pub(super) fn item_attrs(item: &syn::Item) -> &[syn::Attribute] {
    match item {
        syn::Item::Fn(i) => &i.attrs,
        syn::Item::Impl(i) => &i.attrs,
        syn::Item::Mod(i) => &i.attrs,
        syn::Item::Use(i) => &i.attrs,
        syn::Item::Const(i) => &i.attrs,
        syn::Item::Static(i) => &i.attrs,
        syn::Item::Struct(i) => &i.attrs,
        syn::Item::Enum(i) => &i.attrs,
        syn::Item::Trait(i) => &i.attrs,
        syn::Item::Macro(i) => &i.attrs,
        syn::Item::Type(i) => &i.attrs,
        syn::Item::Union(i) => &i.attrs,
        _ => &[],
    }
}

/// Calls `f` with every non-test item of `items` and the inline modules it sits in (`mods`,
/// outermost first); inline non-test modules are entered, not passed to `f`.
pub(super) fn each_item(
    items: &[syn::Item],
    mods: &mut Vec<String>,
    f: &mut dyn FnMut(&[String], &syn::Item),
) {
    for item in items {
        if is_test_item(item_attrs(item)) {
            continue;
        }
        match item {
            syn::Item::Mod(m) if m.content.is_some() => {
                let Some((_, inner)) = &m.content else {
                    continue;
                };
                mods.push(m.ident.to_string());
                each_item(inner, mods, f);
                mods.pop();
            }
            _ => f(mods, item),
        }
    }
}
