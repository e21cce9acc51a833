//! Nix's SQLite database (`/nix/var/nix/db/db.sqlite`, schema 10): reading it without writing
//! anything, and writing a reproducible one for an image.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags, OptionalExtension};

use crate::{io_err, Closure, Error, NarHash, PathInfo, Result, StorePath};

/// Schema version Nix 2.x writes to `db/schema`.
pub const NIX_SCHEMA_VERSION: u32 = 10;

/// Location of the database relative to the filesystem (or store) root.
pub const DB_PATH: &str = "nix/var/nix/db/db.sqlite";

/// The schema Nix 2.x (2.0 to at least 2.8) executes when it creates a store
/// (`src/libstore/schema.sql`). The text matters beyond the tables: SQLite keeps each
/// statement, comments included, in `sqlite_master`.
pub const NIX_SCHEMA_SQL: &str = r#"create table if not exists ValidPaths (
    id               integer primary key autoincrement not null,
    path             text unique not null,
    hash             text not null,
    registrationTime integer not null,
    deriver          text,
    narSize          integer,
    ultimate         integer, -- null implies "false"
    sigs             text, -- space-separated
    ca               text -- if not null, an assertion that the path is content-addressed; see ValidPathInfo
);

create table if not exists Refs (
    referrer  integer not null,
    reference integer not null,
    primary key (referrer, reference),
    foreign key (referrer) references ValidPaths(id) on delete cascade,
    foreign key (reference) references ValidPaths(id) on delete restrict
);

create index if not exists IndexReferrer on Refs(referrer);
create index if not exists IndexReference on Refs(reference);

-- Paths can refer to themselves, causing a tuple (N, N) in the Refs
-- table.  This causes a deletion of the corresponding row in
-- ValidPaths to cause a foreign key constraint violation (due to `on
-- delete restrict' on the `reference' column).  Therefore, explicitly
-- get rid of self-references.
create trigger if not exists DeleteSelfRefs before delete on ValidPaths
  begin
    delete from Refs where referrer = old.id and reference = old.id;
  end;

create table if not exists DerivationOutputs (
    drv  integer not null,
    id   text not null, -- symbolic output id, usually "out"
    path text not null,
    primary key (drv, id),
    foreign key (drv) references ValidPaths(id) on delete cascade
);

create index if not exists IndexDerivationOutputs on DerivationOutputs(path);
"#;

impl Closure {
    /// Computes the closure of `toplevel` from `<store_root>/nix/var/nix/db/db.sqlite`, opened
    /// read-only. Nothing is written next to the database when it has no pending write-ahead
    /// log (`immutable=1`, so even a read-only directory works); if a non-empty `db.sqlite-wal`
    /// exists (a live store), it is opened `mode=ro` so the log is honoured, which needs the
    /// `-shm` file to exist or be creatable. Every path must also exist under the store root.
    pub fn from_db(store_root: &Path, toplevel: &StorePath) -> Result<Self> {
        let db_path = store_root.join(DB_PATH);
        let conn = open_read_only(&db_path)?;
        let sql_err = |source| Error::Sqlite {
            db: db_path.clone(),
            source,
        };
        let mut info_stmt = conn
            .prepare("select id, hash, narSize, deriver from ValidPaths where path = ?1")
            .map_err(sql_err)?;
        let mut refs_stmt = conn
            .prepare(
                "select v.path from Refs r join ValidPaths v on v.id = r.reference \
                 where r.referrer = ?1",
            )
            .map_err(sql_err)?;
        let mut done: BTreeMap<StorePath, PathInfo> = BTreeMap::new();
        let mut queue = VecDeque::from([toplevel.clone()]);
        while let Some(path) = queue.pop_front() {
            if done.contains_key(&path) {
                continue;
            }
            let row = info_stmt
                .query_row([path.as_str()], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, Option<i64>>(2)?,
                        r.get::<_, Option<String>>(3)?,
                    ))
                })
                .optional()
                .map_err(sql_err)?;
            let Some((id, hash, nar_size, deriver)) = row else {
                return Err(Error::NotValidInDb {
                    db: db_path.clone(),
                    path,
                });
            };
            let bad_row = |reason: String| Error::BadDbRow {
                db: db_path.clone(),
                path: path.to_string(),
                reason,
            };
            let nar_hash = NarHash::parse(&hash).map_err(|e| bad_row(e.to_string()))?;
            // Nix stores NULL for a zero size.
            let nar_size = u64::try_from(nar_size.unwrap_or(0))
                .map_err(|_| bad_row("negative narSize".into()))?;
            let deriver = match deriver.as_deref() {
                None | Some("") => None,
                Some(d) => Some(StorePath::parse(d).map_err(|e| bad_row(e.to_string()))?),
            };
            let mut references = Vec::new();
            let rows = refs_stmt
                .query_map([id], |r| r.get::<_, String>(0))
                .map_err(sql_err)?;
            for r in rows {
                let r = r.map_err(sql_err)?;
                let reference = StorePath::parse(&r).map_err(|e| bad_row(e.to_string()))?;
                if !done.contains_key(&reference) {
                    queue.push_back(reference.clone());
                }
                references.push(reference);
            }
            references.sort();
            done.insert(
                path.clone(),
                PathInfo {
                    path,
                    nar_hash,
                    nar_size,
                    references,
                    deriver,
                },
            );
        }
        let closure = Self::new(
            toplevel.clone(),
            done.into_values().collect(),
            &db_path.display().to_string(),
        )?;
        closure.check_present(store_root)?;
        Ok(closure)
    }
}

fn open_read_only(db_path: &Path) -> Result<Connection> {
    let md = std::fs::metadata(db_path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::NotFound {
                path: db_path.to_owned(),
            }
        } else {
            io_err("reading", db_path)(e)
        }
    })?;
    if !md.is_file() {
        return Err(Error::Inconsistent {
            file: db_path.to_owned(),
            reason: "not a regular file".into(),
        });
    }
    let abs = std::path::absolute(db_path).map_err(io_err("resolving", db_path))?;
    let mut wal = abs.clone().into_os_string();
    wal.push("-wal");
    // SQLite opens the log (and `-shm`) with a blocking open: a FIFO or a device there is
    // refused here instead.
    for suffix in ["-wal", "-shm"] {
        let mut side = abs.clone().into_os_string();
        side.push(suffix);
        if let Ok(md) = std::fs::metadata(&side) {
            if !md.is_file() {
                return Err(Error::Inconsistent {
                    file: PathBuf::from(side),
                    reason: "not a regular file".into(),
                });
            }
        }
    }
    let wal_pending = std::fs::metadata(&wal)
        .map(|m| m.len() > 0)
        .unwrap_or(false);
    let mode = if wal_pending {
        "mode=ro"
    } else {
        "immutable=1"
    };
    let uri = format!("file:{}?{mode}", uri_escape(&abs));
    Connection::open_with_flags(
        uri,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| Error::Sqlite {
        db: db_path.to_owned(),
        source,
    })
}

/// Percent-encodes a path for an SQLite `file:` URI.
fn uri_escape(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut s = String::new();
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~+".contains(&b) {
            s.push(char::from(b));
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// Writes a schema-10 Nix database for `closure` to `out` (normally
/// `<root>/nix/var/nix/db/db.sqlite`), byte-identical for the same closure and time.
///
/// Rows are inserted in path order with ids 1..n, like `nix-store --load-db` of the sorted
/// registration would: `hash` is `sha256:<base16>`, `registrationTime` is `registration_time`,
/// `deriver` is NULL when unknown, `narSize` NULL when 0, `ultimate`, `sigs` and `ca` NULL;
/// `Refs` holds every reference including self references; `DerivationOutputs` is empty. The
/// file uses a rollback journal (`journal_mode=delete` in the header; Nix switches it to WAL when
/// it opens the store read-write), page size 4096 and is vacuumed, so it is self-contained: no
/// `-wal`, `-shm` or `-journal` file. Written to `<out>.tmp` first, then renamed.
pub fn write_db(closure: &Closure, registration_time: i64, out: &Path) -> Result<()> {
    let mut paths: Vec<&PathInfo> = closure.paths.iter().collect();
    paths.sort_by(|a, b| a.path.cmp(&b.path));
    let ids: BTreeMap<&StorePath, i64> = paths
        .iter()
        .enumerate()
        .map(|(i, p)| (&p.path, i as i64 + 1))
        .collect();
    if ids.len() != paths.len() {
        return Err(Error::Inconsistent {
            file: out.to_owned(),
            reason: "closure lists a path twice".into(),
        });
    }
    for p in &paths {
        if let Some(r) = p.references.iter().find(|r| !ids.contains_key(r)) {
            return Err(Error::ReferenceOutsideClosure {
                path: p.path.clone(),
                reference: r.clone(),
            });
        }
    }

    let mut tmp_name = out.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    for stale in [tmp.clone(), journal_of(&tmp)] {
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", stale)(e)),
        }
    }
    let sql_err = |source| Error::Sqlite {
        db: out.to_owned(),
        source,
    };
    {
        let mut conn = Connection::open_with_flags(
            &tmp,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql_err)?;
        // page_size must be set before the first table exists. MEMORY keeps the rollback
        // journal off disk while building; the header still says "legacy (rollback) journal".
        conn.execute_batch(
            "pragma page_size = 4096;
             pragma encoding = 'UTF-8';
             pragma auto_vacuum = none;
             pragma journal_mode = memory;
             pragma synchronous = off;
             pragma foreign_keys = 1;",
        )
        .map_err(sql_err)?;
        conn.execute_batch(NIX_SCHEMA_SQL).map_err(sql_err)?;
        insert_paths(&mut conn, &paths, &ids, registration_time, out)?;
        conn.execute_batch("vacuum;").map_err(sql_err)?;
        conn.close().map_err(|(_, source)| sql_err(source))?;
    }
    let f = std::fs::File::open(&tmp).map_err(io_err("opening", &tmp))?;
    f.sync_all().map_err(io_err("syncing", &tmp))?;
    drop(f);
    std::fs::rename(&tmp, out).map_err(io_err("renaming into place", out))?;
    Ok(())
}

/// Fills `ValidPaths` and `Refs` in one transaction: every path of `paths` with the id `ids`
/// gives it, and its references by id (sorted, without repeats).
fn insert_paths(
    conn: &mut Connection,
    paths: &[&PathInfo],
    ids: &BTreeMap<&StorePath, i64>,
    registration_time: i64,
    out: &Path,
) -> Result<()> {
    let sql_err = |source| Error::Sqlite {
        db: out.to_owned(),
        source,
    };
    let txn = conn.transaction().map_err(sql_err)?;
    {
        let mut ins_path = txn
            .prepare(
                "insert into ValidPaths (id, path, hash, registrationTime, deriver, narSize, \
                 ultimate, sigs, ca) values (?1, ?2, ?3, ?4, ?5, ?6, null, null, null)",
            )
            .map_err(sql_err)?;
        for p in paths {
            let nar_size = i64::try_from(p.nar_size).map_err(|_| Error::Inconsistent {
                file: out.to_owned(),
                reason: format!("{}: NAR size {} does not fit SQLite", p.path, p.nar_size),
            })?;
            ins_path
                .execute(params![
                    ids[&p.path],
                    p.path.as_str(),
                    p.nar_hash.to_db_string(),
                    registration_time,
                    p.deriver.as_ref().map(StorePath::as_str),
                    (nar_size != 0).then_some(nar_size),
                ])
                .map_err(sql_err)?;
        }
        let mut ins_ref = txn
            .prepare("insert or replace into Refs (referrer, reference) values (?1, ?2)")
            .map_err(sql_err)?;
        for p in paths {
            let mut refs: Vec<i64> = p.references.iter().map(|r| ids[r]).collect();
            refs.sort_unstable();
            refs.dedup();
            for r in refs {
                ins_ref.execute(params![ids[&p.path], r]).map_err(sql_err)?;
            }
        }
    }
    txn.commit().map_err(sql_err)?;
    Ok(())
}

fn journal_of(db: &Path) -> PathBuf {
    let mut s = db.as_os_str().to_owned();
    s.push("-journal");
    PathBuf::from(s)
}

/// What a state entry is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File {
        /// Its bytes.
        contents: &'static [u8],
    },
    /// A symbolic link.
    Symlink {
        /// Its target.
        target: &'static str,
    },
}

/// One file, directory or symlink of Nix's state directory, as Nix's `LocalStore` creates it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEntry {
    /// Relative to the filesystem root, e.g. `nix/var/nix/db/schema`.
    pub path: &'static str,
    /// Permission bits (ignored for symlinks).
    pub mode: u32,
    /// What it is, with its content.
    pub kind: StateEntryKind,
}

/// The state entries besides [`DB_PATH`] that a store needs, as Nix 2.x's `LocalStore`
/// constructor creates them for a store at `/nix` (checked against a store that Nix 2.8 created):
/// `db/` with `schema` (`10`, no newline) and an empty `big-lock` (0600); `profiles/`,
/// `profiles/per-user/`, `temproots/`, `gcroots/`, `gcroots/per-user/` (0755) and the symlink
/// `gcroots/profiles -> /nix/var/nix/profiles`. Parents come before children.
///
/// Deliberately absent, because Nix makes them itself when needed: `db/reserved` (Nix 2.8
/// (re)creates it with `gc-reserved-space`, 8 MiB by default, whenever its size differs, i.e.
/// on the first read-write open), `gc.lock`, `nix/store/.links`, `userpool/` (only with build
/// users), `per-user/<user>/` directories (made by the client for its user) and `nix/var/log`.
pub fn nix_state_files() -> Vec<StateEntry> {
    use StateEntryKind::{Dir, File, Symlink};
    let e = |path, mode, kind| StateEntry { path, mode, kind };
    vec![
        e("nix", 0o755, Dir),
        e("nix/var", 0o755, Dir),
        e("nix/var/nix", 0o755, Dir),
        e("nix/var/nix/db", 0o755, Dir),
        e("nix/var/nix/db/big-lock", 0o600, File { contents: b"" }),
        e("nix/var/nix/db/schema", 0o644, File { contents: b"10" }),
        e("nix/var/nix/gcroots", 0o755, Dir),
        e("nix/var/nix/gcroots/per-user", 0o755, Dir),
        e(
            "nix/var/nix/gcroots/profiles",
            0o777,
            Symlink {
                target: "/nix/var/nix/profiles",
            },
        ),
        e("nix/var/nix/profiles", 0o755, Dir),
        e("nix/var/nix/profiles/per-user", 0o755, Dir),
        e("nix/var/nix/temproots", 0o755, Dir),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn schema_file_matches_version() {
        let schema = nix_state_files()
            .into_iter()
            .find(|e| e.path == "nix/var/nix/db/schema")
            .unwrap();
        assert_eq!(
            schema.kind,
            StateEntryKind::File {
                contents: NIX_SCHEMA_VERSION.to_string().leak().as_bytes()
            }
        );
        // Parents before children.
        let entries = nix_state_files();
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.path.rsplit_once('/') {
                assert!(entries[..i].iter().any(|p| p.path == parent), "{}", e.path);
            }
        }
    }

    fn sp(c: char, name: &str) -> StorePath {
        StorePath::parse(&format!("/nix/store/{}-{name}", c.to_string().repeat(32))).unwrap()
    }

    fn info(path: &StorePath, refs: &[&StorePath]) -> PathInfo {
        PathInfo {
            path: path.clone(),
            nar_hash: NarHash([7; 32]),
            nar_size: 1234,
            references: refs.iter().map(|r| (*r).clone()).collect(),
            deriver: None,
        }
    }

    #[test]
    fn write_db_refuses_references_outside_the_closure() {
        let (a, b) = (sp('a', "a"), sp('b', "b"));
        let closure = Closure {
            toplevel: a.clone(),
            paths: vec![info(&a, &[&b])],
        };
        let dir = tempfile::tempdir().unwrap();
        let err = write_db(&closure, 0, &dir.path().join("db.sqlite")).unwrap_err();
        assert!(
            matches!(err, Error::ReferenceOutsideClosure { .. }),
            "{err}"
        );
    }

    /// A live store has committed transactions still in `db.sqlite-wal`; from_db must see them.
    /// A database, or its log, that is a FIFO or a device is refused before SQLite opens it
    /// (its open would block on a FIFO).
    #[test]
    fn special_files_as_the_database_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let a = sp('a', "a");
        let db = root.join(DB_PATH);
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let mkfifo = |p: &Path| {
            let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        };
        let t = std::time::Instant::now();
        mkfifo(&db);
        let e = Closure::from_db(root, &a).unwrap_err();
        assert!(e.to_string().contains("not a regular file"), "{e}");
        std::fs::remove_file(&db).unwrap();
        let only_a = Closure::new(a.clone(), vec![info(&a, &[])], "t").unwrap();
        write_db(&only_a, 5, &db).unwrap();
        let wal = root.join(format!("{DB_PATH}-wal"));
        mkfifo(&wal);
        let e = Closure::from_db(root, &a).unwrap_err();
        assert!(e.to_string().contains("-wal: not a regular file"), "{e}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }

    #[test]
    fn from_db_honours_a_pending_wal() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (a, b) = (sp('a', "a"), sp('b', "b"));
        for p in [&a, &b] {
            std::fs::create_dir_all(root.join("nix/store").join(p.base_name())).unwrap();
        }
        let db = root.join(DB_PATH);
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        let only_a = Closure::new(a.clone(), vec![info(&a, &[])], "t").unwrap();
        write_db(&only_a, 5, &db).unwrap();
        // A writer that keeps the connection open, so its commit stays in the WAL.
        let writer = Connection::open(&db).unwrap();
        writer
            .execute_batch("pragma journal_mode = wal; pragma wal_autocheckpoint = 0;")
            .unwrap();
        writer
            .execute(
                "insert into ValidPaths (id, path, hash, registrationTime, narSize) \
                 values (2, ?1, ?2, 5, 99)",
                params![b.as_str(), NarHash([9; 32]).to_db_string()],
            )
            .unwrap();
        writer
            .execute("insert into Refs (referrer, reference) values (2, 1)", [])
            .unwrap();
        // Copy the database and its log elsewhere (no -shm, another inode): an immutable open
        // would silently ignore the log there.
        let copy = dir.path().join("copy");
        for p in [&a, &b] {
            std::fs::create_dir_all(copy.join("nix/store").join(p.base_name())).unwrap();
        }
        let copy_db = copy.join(DB_PATH);
        std::fs::create_dir_all(copy_db.parent().unwrap()).unwrap();
        for suffix in ["", "-wal"] {
            let mut from = db.clone().into_os_string();
            from.push(suffix);
            let mut to = copy_db.clone().into_os_string();
            to.push(suffix);
            std::fs::copy(&from, &to).unwrap();
        }
        let mut wal = copy_db.clone().into_os_string();
        wal.push("-wal");
        assert!(
            std::fs::metadata(&wal).unwrap().len() > 0,
            "the test needs a pending WAL"
        );
        let c = Closure::from_db(&copy, &b).unwrap();
        assert_eq!(c.paths.len(), 2);
        assert_eq!(c.get(&b).unwrap().nar_size, 99);
        assert_eq!(c.get(&b).unwrap().references, vec![a.clone()]);
        drop(writer);
        // Without a WAL (checkpointed on close) it is read immutably.
        assert_eq!(Closure::from_db(root, &b).unwrap(), c);
        let err = Closure::from_db(root, &sp('c', "c")).unwrap_err();
        assert!(matches!(err, Error::NotValidInDb { .. }), "{err}");
    }

    #[test]
    fn uri_escaping() {
        assert_eq!(
            uri_escape(Path::new("/a b/c?d#e%f")),
            "/a%20b/c%3Fd%23e%25f"
        );
    }
}
