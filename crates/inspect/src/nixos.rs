//! The NixOS system on a root filesystem: the system profile and its toplevel, the NixOS
//! version, the registered store paths (Nix database or `/nix-path-registration`), and what
//! `/nix/store` holds.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};

use serde::Serialize;

use crate::bytes::len64;
use crate::error::{chain, Error, Result};
use crate::fs::{FileReader, Filesystem, Kind};
use crate::path::{join, normalize, parent_and_name};

/// The system profile.
pub const PROFILE: &[u8] = b"/nix/var/nix/profiles/system";
/// The Nix database.
pub const DB: &[u8] = b"/nix/var/nix/db/db.sqlite";
/// nixpkgs' first-boot registration file (sd-image, make-ext4-fs).
pub const REGISTRATION: &[u8] = b"/nix-path-registration";
/// Where a live ISO's (and netboot's) store image keeps it: at the top of the squashfs,
/// which the live system mounts at `/nix/store`.
pub const STORE_REGISTRATION: &[u8] = b"/nix/store/nix-path-registration";

/// Whether an entry of `/nix/store` is a store path (not `.links`, not a live store
/// image's registration file).
fn is_store_path(name: &[u8]) -> bool {
    !name.starts_with(b".") && name != b"nix-path-registration"
}
/// The database is copied out to a temporary file; bigger ones are not read.
pub const MAX_DB: u64 = 4 << 30;
/// Registered path sets bigger than this are counted but not compared with the store.
pub const MAX_COMPARE: usize = 1 << 20;

/// What the NixOS root filesystem holds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Nixos {
    /// The partition number of the root filesystem.
    pub partition: u32,
    /// An appliance's store partition (`usr`, mounted at `/usr`, its `nix/store` at
    /// `/nix/store`), when the store is not on the root partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_partition: Option<u32>,
    /// The system toplevel store path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toplevel: Option<String>,
    /// Where the toplevel was found: `profile` or `boot entry`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toplevel_from: Option<String>,
    /// The profile's link chain (`system -> system-1-link -> /nix/store/...`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub profile: Vec<String>,
    /// Generations of the system profile (`system-N-link`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub generations: Vec<u64>,
    /// `<toplevel>/nixos-version`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// `<toplevel>/system`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// `<toplevel>/kernel-params`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel_params: Option<String>,
    /// Whether `/etc/NIXOS` exists.
    pub etc_nixos: bool,
    /// Registered store paths, per source.
    pub registered: Vec<Registration>,
    /// What `/nix/store` holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store: Option<Store>,
}

/// Store paths registered in one source.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Registration {
    /// `/nix/var/nix/db/db.sqlite` or `/nix-path-registration`.
    pub source: String,
    /// Store paths registered.
    pub count: u64,
    /// Whether the toplevel is among them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub toplevel_registered: Option<bool>,
    /// Registered paths absent from `/nix/store`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_from_store: Option<u64>,
}

/// Entries of `/nix/store`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Store {
    /// Store paths (entries not starting with `.`).
    pub paths: u64,
    /// Store paths not registered in any source (when one was read).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unregistered: Option<u64>,
    /// Whether `/nix/store/.links` (nix-store --optimise) exists.
    pub optimised: bool,
    /// Mode of `/nix/store` (normally 1775).
    pub mode: String,
}

/// Reads the NixOS facts of `fs`; `boot_toplevel` comes from boot entries (`init=`), for
/// images without a profile.
pub(crate) fn read(
    fs: &Filesystem,
    partition: u32,
    boot_toplevel: Option<String>,
    temp_dir: Option<&std::path::Path>,
    warnings: &mut Vec<String>,
) -> Nixos {
    let mut n = Nixos {
        partition,
        ..Nixos::default()
    };
    let mut warn = |e: Error| warnings.push(chain(&e));
    profile(fs, &mut n, &mut warn);
    if n.toplevel.is_none() {
        if let Some(t) = boot_toplevel {
            n.toplevel = Some(t);
            n.toplevel_from = Some("boot entry".into());
        }
    }
    toplevel_files(fs, &mut n, &mut warn);
    n.etc_nixos = fs.exists(b"/etc/NIXOS").unwrap_or(false);
    let store = store(fs, &mut n, &mut warn);
    registrations(fs, temp_dir, &mut n, store.as_ref(), &mut warn);
    n
}

/// The system profile's link chain (at most 40 links), the toplevel it ends at, and the
/// generations next to it.
fn profile(fs: &Filesystem, n: &mut Nixos, warn: &mut dyn FnMut(Error)) {
    // Profile chain, at most 40 links.
    let mut cur = PROFILE.to_vec();
    if fs.exists(PROFILE).unwrap_or(false) {
        n.profile
            .push(String::from_utf8_lossy(PROFILE).into_owned());
        for _ in 0..40 {
            match fs.metadata(&cur) {
                Ok(m) if m.kind == Kind::Symlink => {
                    let t = m.target.unwrap_or_default();
                    n.profile.push(String::from_utf8_lossy(&t).into_owned());
                    let base = parent_and_name(&cur).map_or(b"/".to_vec(), |(d, _)| d.to_vec());
                    cur = if t.starts_with(b"/") {
                        normalize(&t)
                    } else {
                        normalize(&join(&base, &t))
                    };
                }
                Ok(_) => break,
                Err(e) => {
                    warn(e);
                    break;
                }
            }
        }
        if cur.starts_with(b"/nix/store/") {
            n.toplevel = Some(String::from_utf8_lossy(&cur).into_owned());
            n.toplevel_from = Some("profile".into());
        }
        match fs.read_dir(b"/nix/var/nix/profiles") {
            Ok(es) => {
                n.generations = es
                    .iter()
                    .filter_map(|e| {
                        let s = std::str::from_utf8(&e.name).ok()?;
                        s.strip_prefix("system-")?
                            .strip_suffix("-link")?
                            .parse()
                            .ok()
                    })
                    .collect();
                n.generations.sort_unstable();
            }
            Err(e) => warn(e),
        }
    }
}

/// `nixos-version`, `system` and `kernel-params` of the toplevel, when there is one.
fn toplevel_files(fs: &Filesystem, n: &mut Nixos, warn: &mut dyn FnMut(Error)) {
    if let Some(t) = n.toplevel.clone() {
        let text = |name: &str, warn: &mut dyn FnMut(Error)| match fs
            .read_to_vec(&join(t.as_bytes(), name.as_bytes()), 1 << 16)
        {
            Ok(v) => Some(String::from_utf8_lossy(&v).trim().to_string()),
            Err(e) => {
                if !e.is_not_found() {
                    warn(e);
                }
                None
            }
        };
        n.version = text("nixos-version", warn);
        n.system = text("system", warn);
        n.kernel_params = text("kernel-params", warn);
    }
}

/// What `/nix/store` holds (into `n.store`), and its paths.
fn store(fs: &Filesystem, n: &mut Nixos, warn: &mut dyn FnMut(Error)) -> Option<HashSet<Vec<u8>>> {
    match fs.read_dir(b"/nix/store") {
        Ok(es) => {
            let meta = fs.metadata(b"/nix/store").ok();
            n.store = Some(Store {
                paths: len64(es.iter().filter(|e| is_store_path(&e.name)).count()),
                unregistered: None,
                optimised: es.iter().any(|e| e.name == b".links"),
                mode: meta.map(|m| format!("{:o}", m.mode)).unwrap_or_default(),
            });
            Some(
                es.into_iter()
                    .filter(|e| is_store_path(&e.name))
                    .map(|e| join(b"/nix/store", &e.name))
                    .collect(),
            )
        }
        Err(e) => {
            if !e.is_not_found() {
                warn(e);
            }
            None
        }
    }
}

/// The store paths each registration source (the Nix database, nixpkgs' registration file)
/// lists, compared with the toplevel and the store.
fn registrations(
    fs: &Filesystem,
    temp_dir: Option<&std::path::Path>,
    n: &mut Nixos,
    store: Option<&HashSet<Vec<u8>>>,
    warn: &mut dyn FnMut(Error),
) {
    let mut all_registered: Option<HashSet<Vec<u8>>> = None;
    let mut sources: Vec<(String, Result<Vec<Vec<u8>>>)> = Vec::new();
    if fs.exists(DB).unwrap_or(false) {
        sources.push((
            String::from_utf8_lossy(DB).into_owned(),
            db_paths(fs, temp_dir),
        ));
    }
    for file in [REGISTRATION, STORE_REGISTRATION] {
        if fs.exists(file).unwrap_or(false) {
            sources.push((
                String::from_utf8_lossy(file).into_owned(),
                registration_paths(fs, file),
            ));
        }
    }
    for (source, r) in sources {
        match r {
            Ok(paths) => {
                let set: HashSet<Vec<u8>> = paths.iter().take(MAX_COMPARE).cloned().collect();
                let compare = paths.len() <= MAX_COMPARE;
                n.registered.push(Registration {
                    source,
                    count: len64(paths.len()),
                    toplevel_registered: n.toplevel.as_ref().map(|t| set.contains(t.as_bytes())),
                    missing_from_store: match (store, compare) {
                        (Some(s), true) => {
                            Some(len64(set.iter().filter(|p| !s.contains(*p)).count()))
                        }
                        _ => None,
                    },
                });
                if compare {
                    all_registered.get_or_insert_with(HashSet::new).extend(set);
                }
            }
            Err(e) => warn(e),
        }
    }
    if let (Some(st), Some(s), Some(r)) = (&mut n.store, store, &all_registered) {
        st.unregistered = Some(len64(s.iter().filter(|p| !r.contains(*p)).count()));
    }
}

/// The store paths the system on `fs` consists of, and where they were read: the Nix
/// database, else nixpkgs' registration file, else (neither readable) every entry of
/// `/nix/store` not starting with `.`.
pub(crate) fn closure(
    fs: &Filesystem,
    temp_dir: Option<&std::path::Path>,
    warnings: &mut Vec<String>,
) -> Result<(String, Vec<Vec<u8>>)> {
    for (source, read) in [
        (
            DB,
            db_paths as fn(&Filesystem, Option<&std::path::Path>) -> Result<_>,
        ),
        (REGISTRATION, |fs, _| registration_paths(fs, REGISTRATION)),
        (STORE_REGISTRATION, |fs, _| {
            registration_paths(fs, STORE_REGISTRATION)
        }),
    ] {
        if !fs.exists(source).unwrap_or(false) {
            continue;
        }
        match read(fs, temp_dir) {
            Ok(paths) => return Ok((String::from_utf8_lossy(source).into_owned(), paths)),
            Err(e) => warnings.push(chain(&e)),
        }
    }
    if !fs.exists(b"/nix/store")? {
        return Ok(("nothing: there is no /nix/store".into(), Vec::new()));
    }
    let paths = fs
        .read_dir(b"/nix/store")?
        .into_iter()
        .filter(|e| is_store_path(&e.name))
        .map(|e| join(b"/nix/store", &e.name))
        .collect();
    Ok(("the entries of /nix/store".into(), paths))
}

/// Adapter: a [`FileReader`] as `std::io::Read`.
struct ReadAdapter<'a>(FileReader<'a>);

impl Read for ReadAdapter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf).map_err(std::io::Error::other)
    }
}

/// Store paths of a `nix-store --dump-db` / closureInfo registration file:
/// records of path, hash, size, deriver, reference count, references.
fn registration_paths(fs: &Filesystem, file: &[u8]) -> Result<Vec<Vec<u8>>> {
    let r = fs.open(file)?;
    let mut lines = BufReader::new(ReadAdapter(r)).split(b'\n');
    let mut line: u64 = 0;
    let mut next = |what: &str| -> Result<Option<Vec<u8>>> {
        line += 1;
        match lines.next() {
            None => Ok(None),
            Some(Ok(l)) => Ok(Some(l)),
            Some(Err(e)) => Err(Error::Corrupt {
                at: fs.location().with_path(file),
                reason: format!("line {line} ({what}): {}", chain(&e)),
            }),
        }
    };
    let bad = |what: &str| Error::Corrupt {
        at: fs.location().with_path(file),
        reason: format!("expected {what}"),
    };
    let mut paths = Vec::new();
    while let Some(path) = next("a store path")? {
        if path.is_empty() {
            continue;
        }
        if !path.starts_with(b"/nix/store/") {
            return Err(bad("a store path"));
        }
        for what in ["a NAR hash", "a NAR size", "a deriver"] {
            next(what)?.ok_or_else(|| bad(what))?;
        }
        let count = next("a reference count")?.ok_or_else(|| bad("a reference count"))?;
        let count: u64 = std::str::from_utf8(&count)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| bad("a reference count"))?;
        for _ in 0..count {
            next("a reference")?.ok_or_else(|| bad("a reference"))?;
        }
        paths.push(path);
    }
    Ok(paths)
}

/// Valid paths of the Nix database, read from a temporary copy (with its WAL, if any).
fn db_paths(fs: &Filesystem, temp_dir: Option<&std::path::Path>) -> Result<Vec<Vec<u8>>> {
    let at = fs.location().with_path(DB);
    let dir = match temp_dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(|source| Error::Host {
        path: temp_dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf),
        source,
    })?;
    let db = dir.path().join("db.sqlite");
    copy_to_host(fs, DB, &db)?;
    let wal: Vec<u8> = [DB, b"-wal"].concat();
    if fs.exists(&wal).unwrap_or(false) {
        copy_to_host(fs, &wal, &dir.path().join("db.sqlite-wal"))?;
    }
    let sql = |source| Error::Sqlite {
        at: at.clone(),
        source: Box::new(source),
    };
    let conn = rusqlite::Connection::open_with_flags(
        &db,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    // A hostile database could make ValidPaths a view over an endless recursive query:
    // only a plain table is read (a scan of it is bounded by the file's size).
    let kind: Option<String> = conn
        .query_row(
            "select sql from sqlite_master where type = 'table' and name = 'ValidPaths'",
            [],
            |r| r.get(0),
        )
        .ok();
    match kind {
        Some(s) if !s.to_ascii_lowercase().contains("virtual") => {}
        _ => {
            return Err(Error::Corrupt {
                at,
                reason: "the database has no ValidPaths table".into(),
            })
        }
    }
    let mut stmt = conn.prepare("select path from ValidPaths").map_err(sql)?;
    let rows = stmt
        .query_map([], |r| {
            r.get::<_, Vec<u8>>(0)
                .or_else(|_| r.get::<_, String>(0).map(String::into_bytes))
        })
        .map_err(sql)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r.map_err(sql)?);
    }
    Ok(out)
}

fn copy_to_host(fs: &Filesystem, src: &[u8], dest: &std::path::Path) -> Result<()> {
    let m = fs.metadata(src)?;
    if m.size > MAX_DB {
        return Err(Error::TooLarge {
            at: fs.location().with_path(src),
            what: "Nix database",
            size: m.size,
            max: MAX_DB,
        });
    }
    let mut out = std::fs::File::create(dest).map_err(|source| Error::Host {
        path: dest.to_path_buf(),
        source,
    })?;
    fs.copy_file(src, &mut out)?;
    Ok(())
}

/// The toplevel named by a kernel command line's `init=/nix/store/...-nixos-system-.../init`.
pub(crate) fn toplevel_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("init="))
        .filter_map(|p| p.strip_suffix("/init"))
        .find(|p| p.starts_with("/nix/store/") && !p[11..].contains('/'))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline() {
        assert_eq!(
            toplevel_from_cmdline("init=/nix/store/abc-nixos-system-x/init console=ttyS0")
                .as_deref(),
            Some("/nix/store/abc-nixos-system-x")
        );
        assert_eq!(toplevel_from_cmdline("init=/sbin/init"), None);
    }
}
