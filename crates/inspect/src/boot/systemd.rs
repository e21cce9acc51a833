//! systemd-boot: `loader/loader.conf`, the type 1 entries (boot counting, menu order, the
//! entry it would boot) and the EFI binaries with their version.

use crate::fs::{Filesystem, Kind};
use crate::path::join;

use super::{
    is_file, key_value, read_text, BootEntry, EfiBinary, Signature, SystemdBoot, Uki, UkiSection,
    MAX_EFI, MAX_ENTRIES, MAX_UKI_PREFIX,
};

/// systemd-boot's glob: `*`, `?` and literal characters.
fn glob(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matcher with one backtrack point: linear in practice, quadratic at worst
    // (both strings come from files of at most MAX_CONFIG bytes and names of 255).
    let (mut i, mut j, mut star, mut mark) = (0, 0, None, 0);
    while j < n.len() {
        if i < p.len() && (p[i] == '?' || p[i] == n[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some(i);
            mark = j;
            i += 1;
        } else if let Some(s) = star {
            i = s + 1;
            mark += 1;
            j = mark;
        } else {
            return false;
        }
    }
    while i < p.len() && p[i] == '*' {
        i += 1;
    }
    i == p.len()
}

/// Boot counters of a type 1 entry file name (systemd's automatic boot assessment): `NAME+LEFT.conf`
/// or `NAME+LEFT-DONE.conf` gives (`NAME.conf`, LEFT, DONE or 0). `None` for a name without a
/// well-formed counter (digits only, each fitting a u32).
pub fn boot_counters(file: &str) -> Option<(String, u32, u32)> {
    let stem = file.strip_suffix(".conf")?;
    let (name, counters) = stem.rsplit_once('+')?;
    let (left, done) = match counters.split_once('-') {
        Some((l, d)) => (l, Some(d)),
        None => (counters, None),
    };
    let number = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    let left = number(left)?;
    let done = match done {
        Some(d) => number(d)?,
        None => 0,
    };
    Some((format!("{name}.conf"), left, done))
}

/// Whether `pattern` (loader.conf's `default` / `preferred`) names `entry`: a glob on its id,
/// with or without `.conf`.
fn names(pattern: &str, entry: &BootEntry) -> bool {
    let stem = entry.id.strip_suffix(".conf").unwrap_or(&entry.id);
    glob(pattern, &entry.id) || glob(pattern, stem)
}

/// The entry systemd-boot boots without a choice being made: `preferred` if it names an entry
/// with tries left, else the first entry in menu order that `default` names, else (no
/// `default`, or one naming no entry) the first entry in menu order. Menu order, as
/// systemd-boot's `boot_entry_compare` sorts: entries out of tries last; entries with a
/// `sort-key` before those without; when both have one, by sort-key, then machine-id, then
/// version, newest first; then by id, last first; then, when both count boots, more tries
/// left first, then fewer tries done.
fn selected_entry(sb: &SystemdBoot) -> Option<usize> {
    let bad = |e: &BootEntry| e.tries_left == Some(0);
    let mut order: Vec<usize> = (0..sb.entries.len()).collect();
    order.sort_by(|&a, &b| {
        let (x, y) = (&sb.entries[a], &sb.entries[b]);
        let by_sort_key = || match (&x.sort_key, &y.sort_key) {
            (Some(kx), Some(ky)) => kx
                .cmp(ky)
                .then_with(|| x.machine_id.cmp(&y.machine_id))
                .then_with(|| version_cmp(y.version.as_deref(), x.version.as_deref())),
            _ => std::cmp::Ordering::Equal,
        };
        let by_counters = || match (x.tries_left, y.tries_left) {
            (Some(lx), Some(ly)) => ly.cmp(&lx).then_with(|| x.tries_done.cmp(&y.tries_done)),
            _ => std::cmp::Ordering::Equal,
        };
        bad(x)
            .cmp(&bad(y))
            .then_with(|| x.sort_key.is_none().cmp(&y.sort_key.is_none()))
            .then_with(by_sort_key)
            .then_with(|| version_cmp(Some(&y.id), Some(&x.id)))
            .then_with(by_counters)
    });
    if let Some(p) = &sb.preferred {
        if let Some(&i) = order
            .iter()
            .find(|&&i| !bad(&sb.entries[i]) && names(p, &sb.entries[i]))
        {
            return Some(i);
        }
    }
    sb.default
        .as_ref()
        .and_then(|d| order.iter().copied().find(|&i| names(d, &sb.entries[i])))
        .or_else(|| order.first().copied())
}

/// Version order: runs of digits compare as numbers, everything else byte by byte (the
/// spirit of systemd's `strverscmp_improved`).
pub(crate) fn version_cmp(a: Option<&str>, b: Option<&str>) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (a, b) = match (a, b) {
        (Some(a), Some(b)) => (a.as_bytes(), b.as_bytes()),
        (a, b) => return a.is_some().cmp(&b.is_some()),
    };
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        if a[i].is_ascii_digit() && b[j].is_ascii_digit() {
            let ((x, ni), (y, nj)) = (digit_run(a, i), digit_run(b, j));
            let o = x.len().cmp(&y.len()).then_with(|| x.cmp(y));
            if o != Ordering::Equal {
                return o;
            }
            (i, j) = (ni, nj);
        } else {
            if a[i] != b[j] {
                return a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (a.len() - i).cmp(&(b.len() - j))
}

/// The run of digits of `s` from `k`, without leading zeros, and where it ends.
fn digit_run(s: &[u8], k: usize) -> (&[u8], usize) {
    let end = s[k..]
        .iter()
        .position(|c| !c.is_ascii_digit())
        .map_or(s.len(), |n| k + n);
    let digits = &s[k..end];
    let start = digits
        .iter()
        .position(|&c| c != b'0')
        .unwrap_or(digits.len());
    (&digits[start..], end)
}

/// systemd-boot on `fs`, if it has `loader/`.
pub(crate) fn systemd_boot(
    fs: &Filesystem,
    partition: u32,
    warnings: &mut Vec<String>,
) -> Option<SystemdBoot> {
    let conf = read_text(fs, b"/loader/loader.conf", warnings);
    let entries_dir = fs.read_dir(b"/loader/entries");
    if conf.is_none() && entries_dir.is_err() {
        return None;
    }
    let mut sb = SystemdBoot {
        partition,
        ..SystemdBoot::default()
    };
    for (k, v) in conf.iter().flat_map(|c| c.lines()).filter_map(key_value) {
        match k {
            "default" => sb.default = Some(v.to_string()),
            "preferred" => sb.preferred = Some(v.to_string()),
            _ => {}
        }
        sb.loader_conf.push((k.to_string(), v.to_string()));
    }
    let files = match entries_dir {
        Ok(es) => es,
        Err(e) => {
            if !e.is_not_found() {
                warnings.push(crate::error::chain(&e));
            }
            Vec::new()
        }
    };
    for e in files
        .iter()
        .filter(|e| e.kind == Kind::File && e.name.ends_with(b".conf"))
        .take(MAX_ENTRIES)
    {
        let file = String::from_utf8_lossy(&e.name).into_owned();
        let Some(text) = read_text(fs, &join(b"/loader/entries", &e.name), warnings) else {
            continue;
        };
        let (id, tries_left, tries_done) = match boot_counters(&file) {
            Some((id, left, done)) => (id, Some(left), Some(done)),
            None => (file.clone(), None, None),
        };
        let mut be = BootEntry {
            file: file.clone(),
            id,
            tries_left,
            tries_done,
            ..BootEntry::default()
        };
        for (k, v) in text.lines().filter_map(key_value) {
            let v = v.to_string();
            match k {
                "title" => be.title = Some(v),
                "version" => be.version = Some(v),
                "sort-key" => be.sort_key = Some(v),
                "linux" => be.linux = Some(v),
                "initrd" => be.initrd.push(v),
                "options" => {
                    be.options = Some(match be.options.take() {
                        Some(o) => format!("{o} {v}"),
                        None => v,
                    })
                }
                "devicetree" => be.devicetree = Some(v),
                "machine-id" => be.machine_id = Some(v),
                _ => {}
            }
        }
        let named = be.linux.iter().chain(&be.initrd).chain(&be.devicetree);
        be.missing = named
            .filter(|p| !is_file(fs, p.as_bytes()))
            .cloned()
            .collect();
        sb.entries.push(be);
    }
    if let Some(i) = selected_entry(&sb) {
        sb.entries[i].default = true;
    }
    if files.len() > MAX_ENTRIES {
        warnings.push(format!(
            "partition {partition}: only the first {MAX_ENTRIES} of {} boot entries were read",
            files.len()
        ));
    }
    sb.binaries = efi_binaries(fs, warnings);
    sb.ukis = ukis(fs, warnings);
    if !sb.entries.iter().any(|e| e.default) {
        let default = sb.default.clone();
        if let Some(u) = sb
            .ukis
            .iter_mut()
            .find(|u| default.as_deref().is_some_and(|d| glob(d, &u.id)))
        {
            u.default = true;
        }
    }
    Some(sb)
}

/// The unified kernel images in `EFI/Linux/`, each read from its first bytes with
/// `imgbuild-uki`'s bounded reader (a refusal is a warning, the image still listed).
fn ukis(fs: &Filesystem, warnings: &mut Vec<String>) -> Vec<Uki> {
    let dir = b"/EFI/Linux";
    let Ok(entries) = fs.read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries
        .iter()
        .filter(|e| e.kind == Kind::File && e.name.to_ascii_lowercase().ends_with(b".efi"))
        .take(MAX_ENTRIES)
    {
        let path = join(dir, &e.name);
        let file = String::from_utf8_lossy(&e.name).into_owned();
        let id = match file.len().checked_sub(4).and_then(|n| file.get(..n)) {
            Some(stem) => boot_counters(&format!("{stem}.conf"))
                .map_or(file.clone(), |(id, ..)| {
                    format!("{}.efi", id.trim_end_matches(".conf"))
                }),
            None => file.clone(),
        };
        let mut uki = Uki {
            path: String::from_utf8_lossy(&path).into_owned(),
            id,
            size: e.size,
            ..Uki::default()
        };
        match read_prefix(fs, &path, e.size) {
            Ok(prefix) => match imgbuild_uki::read_prefix(&prefix, e.size) {
                Ok(info) => {
                    uki.signature = uki_signature(fs, &path, &prefix);
                    uki.sections = info
                        .sections
                        .into_iter()
                        .map(|s| UkiSection {
                            name: s.name,
                            offset: s.offset,
                            size: s.len,
                            virtual_address: s.virtual_address,
                        })
                        .collect();
                    uki.cmdline = info.cmdline;
                    uki.uname = info.uname;
                    uki.pretty_name = info.pretty_name;
                }
                Err(err) => warnings.push(format!(
                    "{}: not a unified kernel image: {}",
                    uki.path,
                    crate::error::chain(&err)
                )),
            },
            Err(err) => warnings.push(crate::error::chain(&err)),
        }
        out.push(uki);
    }
    out
}

/// The signature of the UKI at `path`, read whole (within the in-memory limit) only when
/// its headers (in `prefix`) declare a certificate table.
fn uki_signature(fs: &Filesystem, path: &[u8], prefix: &[u8]) -> Option<Signature> {
    if !super::signature::declared(prefix) {
        return None;
    }
    match fs.read_to_vec(path, u64::MAX) {
        Ok(bytes) => super::signature::signature(&bytes),
        Err(e) => Some(Signature::unchecked(format!(
            "not checked: {}",
            crate::error::chain(&e)
        ))),
    }
}

/// The first [`MAX_UKI_PREFIX`] bytes of the file at `path` (`size` bytes long).
fn read_prefix(fs: &Filesystem, path: &[u8], size: u64) -> crate::Result<Vec<u8>> {
    let mut r = fs.open(path)?;
    let mut v = vec![0u8; crate::bytes::to_usize(size.min(MAX_UKI_PREFIX))];
    let mut done = 0;
    while done < v.len() {
        match r.read(&mut v[done..])? {
            0 => break,
            n => done += n,
        }
    }
    v.truncate(done);
    Ok(v)
}

fn efi_binaries(fs: &Filesystem, warnings: &mut Vec<String>) -> Vec<EfiBinary> {
    let mut out = Vec::new();
    for dir in [&b"/EFI/BOOT"[..], b"/EFI/systemd"] {
        let Ok(entries) = fs.read_dir(dir) else {
            continue;
        };
        for e in entries
            .iter()
            .filter(|e| e.kind == Kind::File && e.name.to_ascii_lowercase().ends_with(b".efi"))
        {
            let path = join(dir, &e.name);
            let (version, signature) = match fs.read_to_vec(&path, MAX_EFI) {
                Ok(bytes) => (loader_info(&bytes), super::signature::signature(&bytes)),
                Err(err) => {
                    warnings.push(crate::error::chain(&err));
                    (None, None)
                }
            };
            out.push(EfiBinary {
                path: String::from_utf8_lossy(&path).into_owned(),
                size: e.size,
                version,
                signature,
            });
        }
    }
    out
}

/// The `#### LoaderInfo: systemd-boot 252 ####` marker systemd-boot carries (UTF-8 in its
/// `.sdmagic` section).
fn loader_info(bytes: &[u8]) -> Option<String> {
    let start = b"#### LoaderInfo: ";
    let i = bytes.windows(start.len()).position(|w| w == start)? + start.len();
    let rest = &bytes[i..bytes.len().min(i + 200)];
    let end = rest.windows(5).position(|w| w == b" ####")?;
    Some(String::from_utf8_lossy(&rest[..end]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("nixos-generation-1.conf", "nixos-generation-1.conf"));
        assert!(glob("nixos-*", "nixos-generation-12.conf"));
        assert!(glob("*-1?conf", "nixos-generation-1.conf"));
        assert!(!glob("nixos-generation-1", "nixos-generation-12"));
        assert!(glob("*", ""));
    }

    #[test]
    fn loader_info_marker() {
        let b = b"xx#### LoaderInfo: systemd-boot 252.39-1~deb12u1 ####yy";
        assert_eq!(
            loader_info(b).as_deref(),
            Some("systemd-boot 252.39-1~deb12u1")
        );
        assert_eq!(loader_info(b"#### LoaderInfo: never ends"), None);
    }

    #[test]
    fn boot_counter_names() {
        let c = |f| boot_counters(f);
        assert_eq!(c("nixos-abc+3.conf"), Some(("nixos-abc.conf".into(), 3, 0)));
        assert_eq!(
            c("nixos-abc+2-1.conf"),
            Some(("nixos-abc.conf".into(), 2, 1))
        );
        assert_eq!(
            c("nixos-abc+0-3.conf"),
            Some(("nixos-abc.conf".into(), 0, 3))
        );
        assert_eq!(
            c("a+b+1.conf"),
            Some(("a+b.conf".into(), 1, 0)),
            "the last +"
        );
        for none in [
            "nixos-generation-1.conf",
            "nixos-abc+.conf",
            "nixos-abc+x.conf",
            "nixos-abc+1-.conf",
            "nixos-abc+-1.conf",
            "nixos-abc+1-2-3.conf",
            "nixos-abc+99999999999.conf",
            "nixos-abc+3",
        ] {
            assert_eq!(c(none), None, "{none}");
        }
    }

    fn entry(file: &str, version: &str) -> BootEntry {
        let (id, left, done) = match boot_counters(file) {
            Some((id, l, d)) => (id, Some(l), Some(d)),
            None => (file.to_owned(), None, None),
        };
        BootEntry {
            file: file.into(),
            id,
            tries_left: left,
            tries_done: done,
            version: Some(version.into()),
            sort_key: Some("nixos".into()),
            ..BootEntry::default()
        }
    }

    #[test]
    fn default_entry_resolution() {
        let sb = |default: Option<&str>, preferred: Option<&str>, entries: Vec<BootEntry>| {
            let s = SystemdBoot {
                default: default.map(Into::into),
                preferred: preferred.map(Into::into),
                entries,
                ..SystemdBoot::default()
            };
            selected_entry(&s).map(|i| s.entries[i].file.clone())
        };
        let two = || {
            vec![
                entry("nixos-aaa+0-3.conf", "Generation 10 x"),
                entry("nixos-bbb.conf", "Generation 9 x"),
                entry("nixos-ccc+2-1.conf", "Generation 2 x"),
            ]
        };
        // 26.11 with boot counting: preferred names a counted entry by its id.
        assert_eq!(
            sb(Some("nixos-*"), Some("nixos-ccc.conf"), two()).as_deref(),
            Some("nixos-ccc+2-1.conf")
        );
        // preferred ran out of tries: the glob, in menu order (bad entries last, newest
        // version first: 9 before 2).
        assert_eq!(
            sb(Some("nixos-*"), Some("nixos-aaa.conf"), two()).as_deref(),
            Some("nixos-bbb.conf")
        );
        // Exact ids, with or without .conf; old generation names.
        assert_eq!(
            sb(Some("nixos-ccc.conf"), None, two()).as_deref(),
            Some("nixos-ccc+2-1.conf")
        );
        assert_eq!(
            sb(
                Some("nixos-generation-1"),
                None,
                vec![entry("nixos-generation-1.conf", "G 1")]
            )
            .as_deref(),
            Some("nixos-generation-1.conf")
        );
        // A default naming no entry: the first entry in menu order, as with no default.
        assert_eq!(
            sb(Some("nope"), None, two()).as_deref(),
            Some("nixos-bbb.conf")
        );
        assert_eq!(sb(Some("nope"), None, Vec::new()), None);
        assert_eq!(sb(None, None, two()).as_deref(), Some("nixos-bbb.conf"));
        // Versions compare as numbers: 10 after 9 would be wrong.
        let v = vec![
            entry("nixos-x.conf", "Generation 9 x"),
            entry("nixos-y.conf", "Generation 10 x"),
        ];
        assert_eq!(
            sb(Some("nixos-*"), None, v).as_deref(),
            Some("nixos-y.conf")
        );
        // Without a sort-key on both, the version is not compared: the id decides (last
        // first), though x's version is the newer.
        let mut v = vec![
            entry("nixos-x.conf", "Generation 10 x"),
            entry("nixos-y.conf", "Generation 9 x"),
        ];
        for e in &mut v {
            e.sort_key = None;
        }
        assert_eq!(sb(None, None, v).as_deref(), Some("nixos-y.conf"));
        // An entry with a sort-key comes before one without, whatever the ids say.
        let mut v = vec![
            entry("nixos-x.conf", "Generation 1 x"),
            entry("nixos-y.conf", "Generation 1 x"),
        ];
        v[1].sort_key = None;
        assert_eq!(sb(None, None, v).as_deref(), Some("nixos-x.conf"));
        // Same sort-key, machine-ids differ: the machine-id orders before the version.
        let mut v = vec![
            entry("nixos-x.conf", "Generation 10 x"),
            entry("nixos-y.conf", "Generation 9 x"),
        ];
        v[0].machine_id = Some("bbbb".into());
        v[1].machine_id = Some("aaaa".into());
        assert_eq!(sb(None, None, v).as_deref(), Some("nixos-y.conf"));
        // Same id and version (two counters of one entry): more tries left first.
        let v = vec![
            entry("nixos-z+1-2.conf", "Generation 3 x"),
            entry("nixos-z+2-1.conf", "Generation 3 x"),
        ];
        assert_eq!(sb(None, None, v).as_deref(), Some("nixos-z+2-1.conf"));
    }
}
