//! Closures, the registration text and the written db.sqlite, checked against a real Nix
//! store built offline by `nix-build --store` (see `imgbuild_nix::testutil`). Needs nix-bin and
//! busybox-static (apt-get download); fails when they are missing.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use imgbuild_nix::testutil::{
    build_real_store, default_cache_dir, materialize_state_files, nix_command, run, RealStore,
};
use imgbuild_nix::{
    nix_state_files, parse_registration, resolve_toplevel, write_db, BootSpec, Closure, Error,
    StorePath, StoreRoot, DB_PATH,
};

/// One store per test binary, built once.
fn store() -> &'static RealStore {
    static STORE: OnceLock<(tempfile::TempDir, RealStore)> = OnceLock::new();
    &STORE
        .get_or_init(|| {
            let dir = tempfile::tempdir().unwrap();
            let s = build_real_store(dir.path(), &default_cache_dir())
                .unwrap_or_else(|e| panic!("building the real Nix test store: {e}"));
            (dir, s)
        })
        .1
}

fn nix_store(root: &Path) -> Command {
    let mut c = nix_command("nix-store");
    c.arg("--store").arg(root);
    c
}

/// Copies a directory tree (symlinks as symlinks) with `cp -a`.
fn copy_tree(from: &Path, to: &Path) {
    run(Command::new("cp").arg("-a").arg(from).arg(to)).unwrap();
}

fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let md = p.symlink_metadata().unwrap();
        let data = if md.is_file() {
            std::fs::read(&p).unwrap()
        } else {
            Vec::new()
        };
        out.insert(p, data);
    }
    out
}

#[test]
fn from_db_matches_nix_store_query_and_dump_db() {
    let s = store();
    let db_dir = s.root.join("nix/var/nix/db");
    let before = snapshot(&db_dir);
    let closure = Closure::from_db(&s.root, &s.toplevel).unwrap();
    assert_eq!(
        snapshot(&db_dir),
        before,
        "from_db must not write anything next to the db"
    );

    let q = run(nix_store(&s.root).arg("-qR").arg(s.toplevel.as_str())).unwrap();
    let want: BTreeSet<&str> = q.lines().collect();
    let got: BTreeSet<&str> = closure.paths.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(got, want);
    assert!(
        closure.paths.len() >= 9,
        "closure too small: {}",
        closure.paths.len()
    );
    assert!(closure.get(&s.legacy_toplevel).is_some());

    let dump = run(nix_store(&s.root).arg("--dump-db")).unwrap();
    let all = parse_registration(&dump, Path::new("--dump-db")).unwrap();
    let wanted: Vec<_> = all
        .into_iter()
        .filter(|p| want.contains(p.path.as_str()))
        .collect();
    assert_eq!(closure.paths, wanted);
    // Self reference, derivers and the busybox source path are there.
    let app = closure
        .paths
        .iter()
        .find(|p| p.path.name() == "app-2.0")
        .unwrap();
    assert!(app.references.contains(&app.path));
    assert!(app.deriver.as_ref().unwrap().name().ends_with(".drv"));
    assert!(closure
        .paths
        .iter()
        .any(|p| p.path.name() == "busybox-static"));
    // The registration text is what --dump-db prints for these paths, and it parses back.
    let reg: String = dump_records(&dump, &want);
    assert_eq!(closure.registration_text(), reg);
}

/// The records of `nix-store --dump-db` output for the given paths, in order.
fn dump_records(dump: &str, keep: &BTreeSet<&str>) -> String {
    let lines: Vec<&str> = dump.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let n: usize = lines[i + 4].parse().unwrap();
        let rec = &lines[i..i + 5 + n];
        if keep.contains(rec[0]) {
            for l in rec {
                out.push_str(l);
                out.push('\n');
            }
        }
        i += 5 + n;
    }
    out
}

#[test]
fn from_scan_equals_the_real_db() {
    let s = store();
    let db = Closure::from_db(&s.root, &s.toplevel)
        .unwrap()
        .without_derivers();
    let scan = Closure::from_scan(&s.root, &s.toplevel).unwrap();
    assert_eq!(scan, db);
    // Thread count does not change the result.
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    let scan1 = pool
        .install(|| Closure::from_scan(&s.root, &s.toplevel))
        .unwrap();
    assert_eq!(scan1, scan);
}

#[test]
fn written_db_is_accepted_by_nix_and_reproducible() {
    let s = store();
    let closure = Closure::from_db(&s.root, &s.toplevel).unwrap();
    let work = tempfile::tempdir().unwrap();

    // Byte-identical across runs, whatever the order of the input.
    let a = work.path().join("a.sqlite");
    let b = work.path().join("b.sqlite");
    write_db(&closure, 1_700_000_000, &a).unwrap();
    let mut shuffled = closure.clone();
    shuffled.paths.reverse();
    write_db(&shuffled, 1_700_000_000, &b).unwrap();
    let bytes = std::fs::read(&a).unwrap();
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    write_db(&closure, 1_700_000_000, &b).unwrap(); // overwrite an existing file
    assert_eq!(bytes, std::fs::read(&b).unwrap());
    // Rollback-journal header (bytes 18/19 = 1: not WAL), 4096-byte pages, nothing else left.
    assert_eq!(&bytes[..16], b"SQLite format 3\0");
    assert_eq!((bytes[18], bytes[19]), (1, 1));
    assert_eq!(u16::from_be_bytes([bytes[16], bytes[17]]), 4096);
    let names: BTreeSet<String> = std::fs::read_dir(work.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["a.sqlite".to_owned(), "b.sqlite".to_owned()])
    );
    // Another registration time gives another file.
    write_db(&closure, 1, &b).unwrap();
    assert_ne!(bytes, std::fs::read(&b).unwrap());

    // Same schema objects as the database Nix itself created.
    let ours = rusqlite::Connection::open(&a).unwrap();
    let nixdb = s.root.join(DB_PATH);
    let theirs = rusqlite::Connection::open_with_flags(
        format!("file:{}?immutable=1", nixdb.display()),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
    )
    .unwrap();
    let master = |c: &rusqlite::Connection| -> Vec<(String, String, String, Option<String>)> {
        let mut st = c
            .prepare("select type, name, tbl_name, sql from sqlite_master order by type, name")
            .unwrap();
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(master(&ours), master(&theirs));
    let (ultimate, sigs, ca, time): (Option<i64>, Option<String>, Option<String>, i64) = ours
        .query_row(
            "select ultimate, sigs, ca, registrationTime from ValidPaths where id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap();
    assert_eq!(
        (ultimate, sigs, ca, time),
        (None, None, None, 1_700_000_000)
    );

    // A fresh store with our db: nix-store verifies contents, queries and dumps it.
    for (label, closure) in [
        ("from_db", closure.clone()),
        (
            "from_scan",
            Closure::from_scan(&s.root, &s.toplevel).unwrap(),
        ),
    ] {
        let new = work.path().join(format!("new-{label}"));
        std::fs::create_dir_all(new.join("nix/store")).unwrap();
        materialize_state_files(&new).unwrap();
        for p in &closure.paths {
            copy_tree(
                &StoreRoot::new(&s.root).host_path(&p.path),
                &new.join("nix/store"),
            );
        }
        write_db(&closure, 1_700_000_000, &new.join(DB_PATH)).unwrap();
        let out = nix_store(&new)
            .args(["--verify", "--check-contents"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{label}: nix-store --verify failed: {stderr}"
        );
        for line in stderr.lines() {
            assert!(
                [
                    "reading the Nix store...",
                    "checking path existence...",
                    "checking link hashes...",
                    "checking store hashes...",
                ]
                .contains(&line),
                "{label}: unexpected nix-store --verify output: {line}"
            );
        }
        let q = run(nix_store(&new).arg("-qR").arg(closure.toplevel.as_str())).unwrap();
        assert_eq!(
            q.lines().collect::<BTreeSet<_>>(),
            closure.paths.iter().map(|p| p.path.as_str()).collect()
        );
        let dump = run(nix_store(&new).arg("--dump-db")).unwrap();
        assert_eq!(dump, closure.registration_text(), "{label}");
        // Nix made the reserved file itself (we do not ship it).
        let reserved = new.join("nix/var/nix/db/reserved");
        assert!(
            reserved.metadata().unwrap().len() > 0,
            "{label}: Nix did not create db/reserved"
        );
        // Nix did not have to create anything we describe differently.
        for e in nix_state_files() {
            assert!(new.join(e.path).symlink_metadata().is_ok(), "{}", e.path);
        }
    }

    // Negative control: a wrong NAR hash is caught by nix-store --verify --check-contents.
    let mut bad = closure.clone();
    let victim = bad
        .paths
        .iter_mut()
        .find(|p| p.path.name() == "lib-1.0")
        .unwrap();
    victim.nar_hash.0[0] ^= 1;
    let victim_path = victim.path.clone();
    let new = work.path().join("new-bad");
    std::fs::create_dir_all(new.join("nix/store")).unwrap();
    materialize_state_files(&new).unwrap();
    for p in &bad.paths {
        copy_tree(
            &StoreRoot::new(&s.root).host_path(&p.path),
            &new.join("nix/store"),
        );
    }
    write_db(&bad, 1_700_000_000, &new.join(DB_PATH)).unwrap();
    let out = nix_store(&new)
        .args(["--verify", "--check-contents"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "tampered db accepted: {stderr}");
    assert!(stderr.contains(victim_path.as_str()), "{stderr}");
}

#[test]
fn closure_info_roundtrip_via_real_registration() {
    let s = store();
    let closure = Closure::from_db(&s.root, &s.toplevel)
        .unwrap()
        .without_derivers();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("registration"), closure.registration_text()).unwrap();
    std::fs::write(dir.path().join("store-paths"), closure.store_paths_text()).unwrap();
    let back = Closure::from_closure_info(dir.path(), &s.toplevel).unwrap();
    assert_eq!(back, closure);
    back.check_present(&s.root).unwrap();
    // `nix-store --load-db` of our registration in a fresh store gives the same dump.
    let fresh = dir.path().join("fresh");
    std::fs::create_dir_all(fresh.join("nix/store")).unwrap();
    for p in &closure.paths {
        copy_tree(
            &StoreRoot::new(&s.root).host_path(&p.path),
            &fresh.join("nix/store"),
        );
    }
    let out = nix_store(&fresh)
        .arg("--load-db")
        .stdin(std::fs::File::open(dir.path().join("registration")).unwrap())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dump = run(nix_store(&fresh).arg("--dump-db")).unwrap();
    assert_eq!(dump, closure.registration_text());
    // And the database Nix wrote that way reads back the same.
    assert_eq!(Closure::from_db(&fresh, &s.toplevel).unwrap(), closure);
    // Row for row (all but registrationTime, which Nix takes from the clock) what write_db
    // writes: same ids, NULLs, hash format and Refs.
    let ours_path = dir.path().join("ours.sqlite");
    write_db(&closure, 1, &ours_path).unwrap();
    let rows = |db: &Path| -> (Vec<Vec<rusqlite::types::Value>>, Vec<(i64, i64)>) {
        let c = rusqlite::Connection::open_with_flags(
            format!("file:{}?immutable=1", db.display()),
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI,
        )
        .unwrap();
        let mut st = c
            .prepare(
                "select id, path, hash, deriver, narSize, ultimate, sigs, ca from ValidPaths \
                 order by id",
            )
            .unwrap();
        let vp = st
            .query_map([], |r| (0..8).map(|i| r.get(i)).collect())
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let mut st = c
            .prepare("select referrer, reference from Refs order by 1, 2")
            .unwrap();
        let refs = st
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        (vp, refs)
    };
    let theirs = rows(&fresh.join(DB_PATH));
    assert_eq!(rows(&ours_path), theirs);
    assert_eq!(theirs.0.len(), closure.paths.len());
}

#[test]
fn toplevel_and_bootspec_of_the_real_store() {
    let s = store();
    let dir = tempfile::tempdir().unwrap();
    let result = dir.path().join("result");
    std::os::unix::fs::symlink(s.toplevel.as_str(), &result).unwrap();
    assert_eq!(resolve_toplevel(&result, &s.root).unwrap(), s.toplevel);
    let host = StoreRoot::new(&s.root).host_path(&s.toplevel);
    assert_eq!(resolve_toplevel(&host, &s.root).unwrap(), s.toplevel);
    let closure = Closure::from_db(&s.root, &s.toplevel).unwrap();
    let lib = closure
        .paths
        .iter()
        .find(|p| p.path.name() == "lib-1.0")
        .unwrap();
    let err = resolve_toplevel(Path::new(lib.path.as_str()), &s.root).unwrap_err();
    assert!(matches!(err, Error::NotToplevel { .. }), "{err}");

    let spec = BootSpec::read(&s.root, &s.toplevel).unwrap();
    assert!(!spec.synthesized);
    assert_eq!(spec.toplevel, s.toplevel);
    assert_eq!(
        spec.kernel.as_ref().unwrap().store_path().name(),
        "linux-6.1.77"
    );
    assert_eq!(
        spec.kernel_params,
        ["console=ttyS0,115200", "panic=1", "loglevel=4"]
    );
    assert_eq!(
        spec.imgbuild
            .as_ref()
            .unwrap()
            .firmware
            .as_ref()
            .unwrap()
            .subpath(),
        Path::new("lib")
    );
    assert!(spec.extensions.contains_key("org.nixos.systemd-boot"));
    let root = StoreRoot::new(&s.root);
    let kernel = root
        .resolve_in_store(&spec.kernel.as_ref().unwrap().to_path_buf())
        .unwrap();
    assert_eq!(std::fs::metadata(&kernel).unwrap().len(), 40 * 65536 + 13);

    let legacy = BootSpec::read(&s.root, &s.legacy_toplevel).unwrap();
    assert!(legacy.synthesized);
    assert_eq!(legacy.kernel, spec.kernel);
    assert_eq!(legacy.initrd, spec.initrd);
    assert_eq!(legacy.kernel_params, spec.kernel_params);
    assert_eq!(legacy.label, spec.label);
    assert_eq!(legacy.system, spec.system);
    assert_eq!(legacy.init.to_path_buf(), s.legacy_toplevel.join("init"));
}

#[test]
fn missing_store_paths_are_named() {
    let s = store();
    let closure = Closure::from_db(&s.root, &s.toplevel).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let new = dir.path().join("partial");
    std::fs::create_dir_all(new.join("nix/store")).unwrap();
    let missing: &StorePath = &closure
        .paths
        .iter()
        .find(|p| p.path.name() == "initrd-linux-6.1.77")
        .unwrap()
        .path;
    for p in closure.paths.iter().filter(|p| p.path != *missing) {
        copy_tree(
            &StoreRoot::new(&s.root).host_path(&p.path),
            &new.join("nix/store"),
        );
    }
    // from_db sees the path in the database but not on disk.
    copy_tree(&s.root.join("nix/var"), &new.join("nix"));
    let err = Closure::from_db(&new, &s.toplevel).unwrap_err();
    assert!(
        matches!(&err, Error::MissingStorePath { path, .. } if path == missing),
        "{err}"
    );
    // A scan cannot know about a path that is absent, but a missing toplevel is named.
    let err = Closure::from_scan(&new, missing).unwrap_err();
    assert!(
        matches!(&err, Error::MissingStorePath { path, .. } if path == missing),
        "{err}"
    );
    let err = closure.check_present(&new).unwrap_err();
    assert!(err.to_string().contains(missing.as_str()), "{err}");
}

/// Everything `nix_state_files` describes is what Nix 2.8 itself creates for a new store,
/// minus the documented exceptions.
#[test]
fn state_files_match_what_nix_creates() {
    use imgbuild_nix::StateEntryKind;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let fresh = std::path::absolute(dir.path().join("fresh")).unwrap();
    std::fs::create_dir(&fresh).unwrap();
    // Under umask 022, as on a normal system.
    run(Command::new("sh")
        .arg("-c")
        .arg("umask 022 && exec nix-store --store \"$1\" --verify")
        .arg("sh")
        .arg(&fresh)
        .env("NIX_CONFIG", imgbuild_nix::testutil::NIX_CONFIG))
    .unwrap();
    let mut found: BTreeMap<String, (StateEntryKind, u32)> = BTreeMap::new();
    let mut stack = vec![fresh.join("nix")];
    while let Some(p) = stack.pop() {
        let rel = p
            .strip_prefix(&fresh)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let md = p.symlink_metadata().unwrap();
        let mode = md.permissions().mode() & 0o7777;
        let kind = if md.file_type().is_symlink() {
            let t = std::fs::read_link(&p).unwrap();
            // Nix writes the host path of the chroot store; map it back to the logical one.
            let logical = Path::new("/").join(t.strip_prefix(&fresh).unwrap());
            StateEntryKind::Symlink {
                target: logical.to_string_lossy().into_owned().leak(),
            }
        } else if md.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            StateEntryKind::Dir
        } else {
            StateEntryKind::File {
                contents: std::fs::read(&p).unwrap().leak(),
            }
        };
        found.insert(rel, (kind, mode));
    }
    // Made by Nix on demand or by this particular client, documented as not shipped.
    for skip in [
        "nix/store",
        "nix/store/.links",
        "nix/var/nix/db/db.sqlite",
        "nix/var/nix/db/reserved",
        "nix/var/nix/gc.lock",
        "nix/var/nix/gcroots/per-user/root",
        "nix/var/nix/profiles/per-user/root",
    ] {
        found.remove(skip);
    }
    let ours: BTreeMap<String, (StateEntryKind, u32)> = nix_state_files()
        .into_iter()
        .map(|e| {
            let mode = if matches!(e.kind, StateEntryKind::Symlink { .. }) {
                0o777
            } else {
                e.mode
            };
            (e.path.to_owned(), (e.kind, mode))
        })
        .collect();
    assert_eq!(ours, found);
}
