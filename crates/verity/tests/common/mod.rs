//! What the oracle tests share.

use std::process::Command;

/// Whether `tool` runs (`tool --version`). Where it does not, the test is skipped with a line
/// saying why, except in CI (`CI` set), whose .ci/run installs `package`: there a missing tool
/// fails the test.
pub fn have(tool: &str, package: &str) -> bool {
    let found = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{tool} is missing in CI: .ci/run installs {package}"
        );
        eprintln!("skipped: {tool} (Debian package {package}) is not installed");
    }
    found
}
