use super::*;

#[test]
fn debug_as_data_is_a_lone_debug_template() {
    assert!(lines::debug_as_data(
        r#"    seed.extend(format!("{:?}", meta).as_bytes());"#
    ));
    assert!(lines::debug_as_data(r#"let s = format!("{meta:?}");"#));
    assert!(!lines::debug_as_data(
        r#"format!("character {c:?} is not allowed")"#
    ));
    assert!(!lines::debug_as_data(r#"format!("{a}: {b:?}")"#));
    assert!(!lines::debug_as_data(r#"format!("{x}")"#));
}

#[test]
fn the_dependency_table_is_read_both_ways() {
    let md = "# A\n\n## Dependencies\n\ntext\n\n| crate | depends on |\n|---|---|\n\
              | `a` | — |\n| `b` (cli) | `a`, `c` |\n\n## Invariants\n| `x` | `y` |\n";
    let d = deps::documented_deps(md).unwrap();
    assert_eq!(d.len(), 2);
    assert!(d["a"].is_empty());
    assert_eq!(
        d["b"].iter().cloned().collect::<Vec<_>>(),
        ["a".to_string(), "c".to_string()]
    );
}

#[test]
fn test_code_is_told_apart() {
    for t in [
        "tests/e2e/x.rs",
        "crates/a/tests/y.rs",
        "crates/a/src/tests.rs",
        "crates/a/src/fs/tests_ext4.rs",
        "crates/a/benches/b.rs",
        "crates/a/examples/e.rs",
    ] {
        assert!(source::is_test_path(t), "{t}");
    }
    for t in [
        "crates/a/src/lib.rs",
        "crates/a/src/testsuite.rs",
        "xtask/src/fuzz/mod.rs",
    ] {
        assert!(!source::is_test_path(t), "{t}");
    }
    let f: syn::File =
        syn::parse_str("#[cfg(test)] mod a {} #[test] fn b() {} #[cfg(all(test, unix))] fn c() {} #[cfg(not(test))] fn d() {}")
            .unwrap();
    let test: Vec<bool> = f
        .items
        .iter()
        .map(|i| source::is_test_item(source::item_attrs(i)))
        .collect();
    assert_eq!(test, [true, true, true, false]);
}

#[test]
fn missing_docs_lint_is_found_in_any_form() {
    assert!(lines::has_missing_docs_lint(
        "//! x\n#![warn(missing_docs)]\n"
    ));
    assert!(lines::has_missing_docs_lint(
        "#![deny(unsafe_code, missing_docs)]"
    ));
    assert!(!lines::has_missing_docs_lint("//! mentions missing_docs\n"));
}

/// The negative control: every check reports its planted violation on a sabotaged tree, and
/// nothing on the marked or test code beside them.
#[test]
fn every_check_fires_on_a_sabotaged_tree() {
    let dir = tempfile::tempdir().unwrap();
    control::write_tree(dir.path()).unwrap();
    let report = check(dir.path()).unwrap();
    let wrong = control::verify(&report.problems);
    let all: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        wrong.is_empty(),
        "{wrong:#?}\nreported:\n{}",
        all.join("\n")
    );
    assert!(
        all.iter()
            .any(|p| p.contains("a.rs -> crates/blockio/src/b.rs")),
        "{all:#?}"
    );
    assert!(
        all.iter().any(|p| p.contains("fn too_long has 101 lines")),
        "{all:#?}"
    );
}

/// Tidy on this repository, so that `cargo test` catches drift, not only `cargo xtask ci`.
#[test]
fn the_repository_is_tidy() {
    let report = check(&crate::util::repo_root()).unwrap();
    let all: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
    assert!(
        all.is_empty(),
        "{} tidy problems:\n{}",
        all.len(),
        all.join("\n")
    );
}
