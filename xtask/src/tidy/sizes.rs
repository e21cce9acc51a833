//! `long-file` and `long-fn`: sizes of non-test code, with their markers.

use quote::ToTokens;
use syn::spanned::Spanned;

use super::source::{self, Source};
use super::Problem;

/// Lines a non-test file may have without a `long-file` marker.
pub(crate) const MAX_FILE_LINES: usize = 600;
/// Lines a non-test function may have (from `fn` to its closing brace) without a marker.
pub(crate) const MAX_FN_LINES: usize = 100;
/// How many lines at the top of a file may hold its `long-file` marker.
const FILE_MARKER_LINES: usize = 15;

/// Whether `line` is the marker `// tidy:<what>: <reason>` with a reason.
fn is_marker(line: &str, what: &str) -> bool {
    line.trim_start()
        .strip_prefix("// tidy:")
        .and_then(|r| r.strip_prefix(what))
        .and_then(|r| r.strip_prefix(':'))
        .is_some_and(|reason| !reason.trim().is_empty())
}

/// One function's place in its file.
struct Function {
    /// `Type::name`, `mod::name` or `name`.
    name: String,
    /// The first line of its docs and attributes (or of the `fn` when it has none).
    first: usize,
    /// The line of `fn` (after its modifiers and visibility).
    start: usize,
    /// The line of its closing brace.
    end: usize,
}

fn function(
    prefix: &str,
    attrs: &[syn::Attribute],
    sig: &syn::Signature,
    block: &syn::Block,
) -> Function {
    let start = sig.span().start().line;
    let first = attrs
        .iter()
        .map(|a| a.pound_token.span.start().line)
        .chain([start])
        .min()
        .unwrap_or(start);
    Function {
        name: format!("{prefix}{}", sig.ident),
        first,
        start,
        end: block.brace_token.span.close().end().line,
    }
}

/// The non-test functions with bodies among `item`'s (free, in `impl` and in traits).
fn functions(mods: &[String], item: &syn::Item, out: &mut Vec<Function>) {
    let mut prefix: String = mods.iter().map(|m| format!("{m}::")).collect();
    match item {
        syn::Item::Fn(f) => out.push(function(&prefix, &f.attrs, &f.sig, &f.block)),
        syn::Item::Impl(i) => {
            let ty: String = i.self_ty.to_token_stream().to_string().replace(' ', "");
            prefix.push_str(&format!("{ty}::"));
            for it in &i.items {
                if let syn::ImplItem::Fn(f) = it {
                    if !source::is_test_item(&f.attrs) {
                        out.push(function(&prefix, &f.attrs, &f.sig, &f.block));
                    }
                }
            }
        }
        syn::Item::Trait(t) => {
            prefix.push_str(&format!("{}::", t.ident));
            for it in &t.items {
                if let syn::TraitItem::Fn(f) = it {
                    if let Some(block) = &f.default {
                        out.push(function(&prefix, &f.attrs, &f.sig, block));
                    }
                }
            }
        }
        _ => {}
    }
}

/// Every long file and long function of non-test code without its marker.
pub(super) fn check(files: &[Source], out: &mut Vec<Problem>) {
    for f in files.iter().filter(|f| !f.test) {
        let lines: Vec<&str> = f.text.lines().collect();
        let marked = lines
            .iter()
            .take(FILE_MARKER_LINES)
            .any(|l| is_marker(l, "long-file"));
        if lines.len() > MAX_FILE_LINES && !marked {
            out.push(Problem::new(
                "long-file",
                format!(
                    "{}: {} lines (at most {MAX_FILE_LINES} without a `// tidy:long-file: <reason>` line in its first {FILE_MARKER_LINES})",
                    f.rel,
                    lines.len()
                ),
            ));
        }
        let Some(ast) = &f.ast else { continue };
        let mut fns = Vec::new();
        source::each_item(&ast.items, &mut Vec::new(), &mut |mods, item| {
            functions(mods, item, &mut fns);
        });
        for fun in fns {
            let len = fun.end + 1 - fun.start;
            let above = fun.first.checked_sub(2).and_then(|i| lines.get(i));
            if len > MAX_FN_LINES && !above.is_some_and(|l| is_marker(l, "long-fn")) {
                out.push(Problem::new(
                    "long-fn",
                    format!(
                        "{}:{}: fn {} has {len} lines (at most {MAX_FN_LINES} without `// tidy:long-fn: <reason>` directly above it)",
                        f.rel, fun.start, fun.name
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_marker;

    #[test]
    fn a_marker_needs_its_kind_and_a_reason() {
        assert!(is_marker("    // tidy:long-fn: a table of data", "long-fn"));
        assert!(!is_marker("// tidy:long-fn:", "long-fn"));
        assert!(!is_marker("// tidy:long-fn:   ", "long-fn"));
        assert!(!is_marker("// tidy:long-file: why", "long-fn"));
        assert!(!is_marker("//! tidy:long-fn: why", "long-fn"));
    }
}
