//! `moddep.lst` and the order in which `grub-mkimage` puts modules into `core.img`.

use std::collections::{BTreeMap, BTreeSet};

use crate::Error;

/// The module dependency list of a GRUB platform directory (`moddep.lst`: one
/// `NAME: DEP DEP...` line per module).
#[derive(Debug, Default, Clone)]
pub struct ModDeps {
    /// Each module's dependencies in the order `grub-mkimage` visits them: the reverse of the
    /// line's order (its reader prepends each name to a list). A name listed twice keeps its
    /// last line, the one `grub-mkimage` finds first.
    deps: BTreeMap<String, Vec<String>>,
}

impl ModDeps {
    /// Parses `moddep.lst`. Every line must have a `:`, as `grub-mkimage` requires.
    pub fn parse(text: &[u8]) -> Result<Self, Error> {
        let text = String::from_utf8_lossy(text);
        let mut deps = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let (name, rest) = line
                .split_once(':')
                .ok_or(Error::ModDepLine { line: i + 1 })?;
            let mut list: Vec<String> = rest.split_whitespace().map(str::to_owned).collect();
            list.reverse();
            deps.insert(name.to_owned(), list);
        }
        Ok(Self { deps })
    }

    fn of(&self, name: &str) -> &[String] {
        self.deps.get(name).map_or(&[], Vec::as_slice)
    }
}

/// The module name `grub-mkimage` derives from an argument: a trailing `.mod` dropped. Paths
/// are refused: every module comes from the platform directory.
fn module_name(arg: &str) -> Result<&str, Error> {
    let name = arg.strip_suffix(".mod").unwrap_or(arg);
    if name.is_empty() || name.contains(['/', '\0']) || name.chars().any(char::is_whitespace) {
        return Err(Error::BadModuleName(arg.to_owned()));
    }
    Ok(name)
}

/// The modules `grub-mkimage` puts into `core.img` for `wanted`, in its order: for each
/// wanted module, depth first, a module's dependencies (each once) before the module.
/// A dependency cycle is an error (`grub-mkimage` would recurse forever).
pub fn resolve(deps: &ModDeps, wanted: &[&str]) -> Result<Vec<String>, Error> {
    let mut added = BTreeSet::new();
    let mut order = Vec::new();
    for arg in wanted {
        let root = module_name(arg)?;
        if added.contains(root) {
            continue;
        }
        // An explicit stack (name, next dependency to visit) instead of recursion: the depth
        // is bounded by the list's size, not by the thread's stack.
        let mut stack: Vec<(&str, usize)> = vec![(root, 0)];
        let mut on_path: BTreeSet<&str> = BTreeSet::from([root]);
        while let Some(top) = stack.last_mut() {
            let (name, next) = *top;
            match deps.of(name).get(next) {
                Some(dep) => {
                    top.1 += 1;
                    let dep = module_name(dep)?;
                    if added.contains(dep) {
                        continue;
                    }
                    if !on_path.insert(dep) {
                        return Err(Error::ModDepCycle(dep.to_owned()));
                    }
                    stack.push((dep, 0));
                }
                None => {
                    stack.pop();
                    on_path.remove(name);
                    added.insert(name.to_owned());
                    order.push(name.to_owned());
                }
            }
        }
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deps(text: &str) -> ModDeps {
        ModDeps::parse(text.as_bytes()).unwrap()
    }

    #[test]
    fn dependencies_first_in_reverse_line_order() {
        let d = deps("normal: crypto boot terminal\ncrypto:\nboot:\nterminal: boot\nfat: fshelp\n");
        let got = resolve(&d, &["normal", "fat", "boot"]).unwrap();
        assert_eq!(
            got,
            ["boot", "terminal", "crypto", "normal", "fshelp", "fat"]
        );
    }

    #[test]
    fn last_line_wins_and_mod_suffix_is_dropped() {
        let d = deps("a: b\na: c\n");
        assert_eq!(resolve(&d, &["a.mod", "a"]).unwrap(), ["c", "a"]);
    }

    #[test]
    fn cycles_bad_lines_and_paths_are_refused() {
        let d = deps("a: b\nb: c\nc: a\n");
        assert!(matches!(resolve(&d, &["a"]), Err(Error::ModDepCycle(n)) if n == "a"));
        assert!(matches!(
            ModDeps::parse(b"a: b\n\n"),
            Err(Error::ModDepLine { line: 2 })
        ));
        assert!(matches!(
            resolve(&d, &["../x"]),
            Err(Error::BadModuleName(_))
        ));
    }
}
