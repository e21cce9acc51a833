//! The negative control: a small sabotaged workspace, generated in a temporary directory, with
//! one violation of each kind (and, beside them, marked or test-only code that must pass).

use anyhow::{bail, Context, Result};
use std::fs;
use std::path::Path;

use super::Problem;

/// Each check and how many problems it must report on the sabotaged tree.
pub(super) const EXPECTED: &[(&str, usize)] = &[
    ("deps", 1),
    ("too-many-arguments", 1),
    ("debug-as-data", 1),
    ("crate-docs", 1),
    ("cast-lints", 3),
    ("missing-docs", 1),
    ("long-file", 1),
    ("long-fn", 1),
    ("import-cycle", 1),
    ("ids", 1),
    ("parse", 1),
];

/// A function of `lines` lines (from `fn` to `}`) named `name`.
fn long_fn(name: &str, lines: usize) -> String {
    let mut s = format!("pub fn {name}() -> u32 {{\n    let mut n = 0;\n");
    for i in 0..lines - 4 {
        s.push_str(&format!("    n += {i};\n"));
    }
    s.push_str("    n\n}\n");
    s
}

/// Lines of padding (constants) to make a file long.
fn padding(lines: usize) -> String {
    (0..lines)
        .map(|i| format!("const P{i}: u32 = {i};\n"))
        .collect()
}

/// Writes the sabotaged workspace into `dir`.
pub(super) fn write_tree(dir: &Path) -> Result<()> {
    let too_many = format!("#[allow(clippy::{}_{}_{})]\n", "too", "many", "arguments");
    let files: Vec<(&str, String)> = vec![
        ("Cargo.toml", "[workspace]\nmembers = [\"crates/blockio\", \"crates/plan\"]\nresolver = \"2\"\n".into()),
        ("ARCHITECTURE.md", "# A\n\n## Dependencies\n\n| crate | depends on |\n|---|---|\n| `imgbuild-blockio` | — |\n| `imgbuild-plan` | — |\n".into()),
        ("crates/blockio/Cargo.toml", "[package]\nname = \"imgbuild-blockio\"\nversion = \"0.1.0\"\nedition = \"2021\"\n".into()),
        ("crates/plan/Cargo.toml", "[package]\nname = \"imgbuild-plan\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nimgbuild-blockio = { path = \"../blockio\" }\n".into()),
        // No crate docs, no missing_docs, no cast lints.
        ("crates/blockio/src/lib.rs", format!(
            "mod a;\nmod b;\nmod long;\nmod marked;\nmod broken;\n\n{too_many}pub fn f(x: u32) -> String {{\n    format!(\"{{x:?}}\")\n}}\n"
        )),
        ("crates/blockio/src/a.rs", "use crate::b::B;\npub struct A(pub B);\n".into()),
        ("crates/blockio/src/b.rs", "pub struct B;\npub fn make() -> super::a::A {\n    super::a::A(B)\n}\n".into()),
        ("crates/blockio/src/broken.rs", "pub fn f( {\n".into()),
        ("crates/blockio/src/long.rs", format!(
            "//! Too long, with one too long function.\n{}{}\n#[cfg(test)]\nmod tests {{\n{}}}\n",
            long_fn("too_long", 101),
            padding(400),
            long_fn("long_but_test", 150),
        )),
        ("crates/blockio/src/marked.rs", format!(
            "//! Long, and says why.\n// tidy:long-file: a table of data\n\n// tidy:long-fn: a table of data\n/// Docs.\n#[inline]\n{}{}",
            long_fn("marked", 150),
            padding(500),
        )),
        ("crates/blockio/src/tests.rs", format!("{}{}", long_fn("in_a_test_file", 150), padding(600))),
        ("crates/plan/src/lib.rs", "//! Plan.\n#![warn(missing_docs)]\n#![warn(clippy::cast_possible_truncation)]\nmod ids;\n\n/// An id.\npub fn disk() -> [u8; 16] {\n    ids::derive_id(b\"seed\", \"disk\")\n}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {\n        super::ids::derive_id(b\"s\", \"t\");\n    }\n}\n".into()),
        ("crates/plan/src/ids.rs", "pub fn derive_id(seed: &[u8], what: &str) -> [u8; 16] {\n    let _ = (seed, what);\n    [0; 16]\n}\npub fn gpt() -> [u8; 16] {\n    derive_id(b\"s\", \"gpt\")\n}\n".into()),
    ];
    for (rel, text) in files {
        let p = dir.join(rel);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Whether `problems` are exactly what the sabotaged tree must give; the list of what is
/// wrong otherwise.
pub(super) fn verify(problems: &[Problem]) -> Vec<String> {
    let mut wrong = Vec::new();
    for (check, want) in EXPECTED {
        let got = problems.iter().filter(|p| p.check == *check).count();
        if got != *want {
            wrong.push(format!(
                "`{check}` reported {got} problems, expected {want}"
            ));
        }
    }
    for p in problems {
        if !EXPECTED.iter().any(|(c, _)| *c == p.check) {
            wrong.push(format!("unexpected check `{}`", p.check));
        }
        let innocent = ["marked", "long_but_test", "in_a_test_file", "src/tests.rs"]
            .iter()
            .any(|i| p.msg.contains(i));
        if innocent || p.msg.starts_with("crates/plan/src/ids.rs") {
            wrong.push(format!("reported marked or test code: {p}"));
        }
    }
    wrong
}

/// Runs tidy on a freshly sabotaged tree; fails unless every check reports its violation.
/// Returns the checks that fired.
pub(super) fn run() -> Result<String> {
    let dir = tempfile::tempdir().context("a temporary directory")?;
    write_tree(dir.path())?;
    let report = super::check(dir.path())?;
    let wrong = verify(&report.problems);
    if !wrong.is_empty() {
        for p in &report.problems {
            eprintln!("xtask tidy: negative control: {p}");
        }
        bail!("negative control: {}", wrong.join("; "));
    }
    Ok(EXPECTED
        .iter()
        .map(|(c, _)| *c)
        .collect::<Vec<_>>()
        .join(", "))
}
