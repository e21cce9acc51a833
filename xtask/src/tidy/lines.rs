//! The checks that read lines or tokens: too-many-arguments, Debug as data, crate docs, cast
//! lints, missing docs, and ids derived outside `plan/src/ids.rs`.

use proc_macro2::{Delimiter, TokenStream, TokenTree};
use quote::ToTokens;

use super::source::{self, Source};
use super::{Problem, CAST_CHECKED};

/// The one file that derives ids.
pub(super) const IDS_FILE: &str = "crates/plan/src/ids.rs";

/// Whether `line` (inside `format!(` …) is a template that is only one Debug placeholder.
pub(super) fn debug_as_data(line: &str) -> bool {
    let Some(i) = line.find("format!(\"") else {
        return false;
    };
    let rest = &line[i + "format!(\"".len()..];
    let Some(end) = rest.find('"') else {
        return false;
    };
    let template = &rest[..end];
    template.starts_with('{') && template.ends_with(":?}") && template.matches('{').count() == 1
}

/// Test code and test support, where Debug output as data is fine.
fn debug_exempt(rel: &str) -> bool {
    source::is_test_path(rel)
        || rel.ends_with("/testutil.rs")
        || rel.starts_with("crates/testutil/")
}

/// Whether a crate root turns on `missing_docs` (warn, deny or forbid).
pub(super) fn has_missing_docs_lint(text: &str) -> bool {
    text.lines().map(str::trim_start).any(|l| {
        ["#![warn(", "#![deny(", "#![forbid("]
            .iter()
            .any(|p| l.starts_with(p))
            && l.contains("missing_docs")
    })
}

/// too-many-arguments, debug-as-data, crate-docs, cast-lints and missing-docs.
pub(super) fn check(files: &[Source], out: &mut Vec<Problem>) {
    // Spelled in pieces so that this file does not match itself.
    let too_many = format!("allow(clippy::{}_{}_{})", "too", "many", "arguments");
    for f in files {
        let rel = &f.rel;
        let mut in_tests = false;
        for (n, line) in f.text.lines().enumerate() {
            if line.trim_start().starts_with("#[cfg(test)]") {
                in_tests = true;
            }
            if line.contains(&too_many) {
                out.push(Problem::new(
                    "too-many-arguments",
                    format!("{rel}:{}: {too_many}: pass a context struct", n + 1),
                ));
            }
            if !in_tests && !debug_exempt(rel) && debug_as_data(line) {
                out.push(Problem::new(
                    "debug-as-data",
                    format!(
                        "{rel}:{}: Debug formatting used as data (`{}`)",
                        n + 1,
                        line.trim()
                    ),
                ));
            }
        }
        check_crate_root(f, out);
    }
}

/// The checks on a crate's `src/lib.rs` / `src/main.rs`.
fn check_crate_root(f: &Source, out: &mut Vec<Problem>) {
    let rel = &f.rel;
    let Some(dir) = rel
        .strip_suffix("/src/lib.rs")
        .or_else(|| rel.strip_suffix("/src/main.rs"))
    else {
        return;
    };
    if !f.text.trim_start().starts_with("//!") {
        out.push(Problem::new(
            "crate-docs",
            format!("{rel}: the crate has no docs at its top (`//!`)"),
        ));
    }
    if !rel.ends_with("lib.rs") || !dir.starts_with("crates/") {
        return;
    }
    if !has_missing_docs_lint(&f.text) {
        out.push(Problem::new(
            "missing-docs",
            format!("{rel}: a library crate without `#![warn(missing_docs)]`"),
        ));
    }
    if CAST_CHECKED.iter().any(|c| dir == format!("crates/{c}")) {
        for lint in [
            "cast_possible_truncation",
            "cast_sign_loss",
            "cast_possible_wrap",
        ] {
            if !f.text.contains(&format!("clippy::{lint}")) {
                out.push(Problem::new(
                    "cast-lints",
                    format!("{rel}: a crate of CAST_CHECKED without clippy::{lint}"),
                ));
            }
        }
    }
}

/// Lines where `tokens` call `name(…)`.
fn calls_of(tokens: TokenStream, name: &str, lines: &mut Vec<usize>) {
    let toks: Vec<TokenTree> = tokens.into_iter().collect();
    for (i, t) in toks.iter().enumerate() {
        match t {
            TokenTree::Group(g) => calls_of(g.stream(), name, lines),
            TokenTree::Ident(id) if id == name => {
                if let Some(TokenTree::Group(g)) = toks.get(i + 1) {
                    if g.delimiter() == Delimiter::Parenthesis {
                        lines.push(id.span().start().line);
                    }
                }
            }
            _ => {}
        }
    }
}

/// `ids`: no `derive_id(…)` call in non-test code outside [`IDS_FILE`].
pub(super) fn check_ids(files: &[Source], out: &mut Vec<Problem>) {
    for f in files.iter().filter(|f| f.rel != IDS_FILE) {
        let Some(ast) = &f.ast else { continue };
        let mut lines = Vec::new();
        source::each_item(&ast.items, &mut Vec::new(), &mut |_, item| {
            calls_of(item.to_token_stream(), "derive_id", &mut lines);
        });
        for line in lines {
            out.push(Problem::new(
                "ids",
                format!(
                    "{}:{line}: an id derived outside {IDS_FILE}: add a method to `Ids` there",
                    f.rel
                ),
            ));
        }
    }
}
