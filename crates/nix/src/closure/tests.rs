//! Tests of closure reading: closureInfo, registration text, scans of a store.
#![allow(clippy::unwrap_used)]

use super::*;

fn sp(h: char, name: &str) -> StorePath {
    StorePath::parse(&format!("/nix/store/{}-{name}", h.to_string().repeat(32))).unwrap()
}

fn sample() -> Closure {
    let a = sp('a', "a");
    let b = sp('b', "b");
    let h1 = NarHash([1; 32]);
    let h2 = NarHash([2; 32]);
    Closure::new(
        b.clone(),
        vec![
            PathInfo {
                path: b.clone(),
                nar_hash: h2,
                nar_size: 200,
                references: vec![b.clone(), a.clone()],
                deriver: None,
            },
            PathInfo {
                path: a.clone(),
                nar_hash: h1,
                nar_size: 120,
                references: vec![],
                deriver: Some(sp('c', "a.drv")),
            },
        ],
        "test",
    )
    .unwrap()
}

#[test]
fn registration_text_format_and_roundtrip() {
    let c = sample();
    let text = c.registration_text();
    let a = "a".repeat(32);
    let b = "b".repeat(32);
    let c32 = "c".repeat(32);
    let want = format!(
        "/nix/store/{a}-a\n{}\n120\n/nix/store/{c32}-a.drv\n0\n\
         /nix/store/{b}-b\n{}\n200\n\n2\n/nix/store/{a}-a\n/nix/store/{b}-b\n",
        "01".repeat(32),
        "02".repeat(32)
    );
    assert_eq!(text, want);
    let parsed = parse_registration(&text, Path::new("reg")).unwrap();
    assert_eq!(parsed, c.paths);
    assert_eq!(
        c.store_paths_text(),
        format!("/nix/store/{a}-a\n/nix/store/{b}-b\n")
    );
    assert_eq!(c.total_nar_size(), 320);
}

#[test]
fn closure_info_dir_roundtrip_with_all_hash_encodings() {
    let c = sample().without_derivers();
    let dir = tempfile::tempdir().unwrap();
    // Re-encode the hashes the ways closureInfo / Nix versions may write them.
    let encodings: [fn(&NarHash) -> String; 5] = [
        |h| h.to_base16(),
        |h| format!("sha256:{}", h.to_base16()),
        |h| format!("sha256:{}", h.to_nix32()),
        |h| h.to_sri(),
        |h| h.to_nix32(),
    ];
    for enc in encodings {
        let mut text = c.registration_text();
        for p in &c.paths {
            text = text.replace(&p.nar_hash.to_base16(), &enc(&p.nar_hash));
        }
        std::fs::write(dir.path().join("registration"), &text).unwrap();
        std::fs::write(dir.path().join("store-paths"), c.store_paths_text()).unwrap();
        let back = Closure::from_closure_info(dir.path(), &c.toplevel).unwrap();
        assert_eq!(back, c);
    }
    // The toplevel must be in it.
    let err = Closure::from_closure_info(dir.path(), &sp('d', "d")).unwrap_err();
    assert!(matches!(err, Error::ToplevelNotInClosure { .. }), "{err}");
    // The two files must agree.
    std::fs::write(
        dir.path().join("store-paths"),
        format!("{}\n", c.paths[0].path),
    )
    .unwrap();
    let err = Closure::from_closure_info(dir.path(), &c.toplevel).unwrap_err();
    assert!(err.to_string().contains("not in store-paths"), "{err}");
}

/// closureInfo files that are FIFOs, devices, /proc files or too big are refused at once
/// (issue 27: inputs read whole are regular files with a bound).
#[test]
fn closure_info_files_must_be_regular_and_bounded() {
    let c = sample().without_derivers();
    let dir = tempfile::tempdir().unwrap();
    let reg = dir.path().join("registration");
    let sps = dir.path().join("store-paths");
    std::fs::write(&sps, c.store_paths_text()).unwrap();
    let t = std::time::Instant::now();
    let fifo = std::ffi::CString::new(reg.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    let err = Closure::from_closure_info(dir.path(), &c.toplevel).unwrap_err();
    assert!(
        err.to_string().contains("is a FIFO, not a regular file"),
        "{err}"
    );
    std::fs::remove_file(&reg).unwrap();
    // A symlink to any file of the host (a Nix build's output may hold one).
    let secret = dir.path().join("shadow");
    std::fs::write(&secret, "root:$6$secret:19000::::::\n").unwrap();
    for target in [
        Path::new("/proc/self/environ"),
        Path::new("/dev/zero"),
        &secret,
    ] {
        std::os::unix::fs::symlink(target, &reg).unwrap();
        let err = Closure::from_closure_info(dir.path(), &c.toplevel).unwrap_err();
        let s = err.to_string();
        assert!(s.contains("is a symlink") && !s.contains("secret"), "{s}");
        std::fs::remove_file(&reg).unwrap();
    }
    std::fs::write(&reg, "").unwrap();
    std::fs::remove_file(&reg).unwrap();
    std::os::unix::fs::symlink("/proc/self/environ", &reg).unwrap();
    let err = input::read(&reg, input::REGISTRATION).unwrap_err();
    assert!(err.to_string().contains("/proc"), "{err}");
    std::fs::remove_file(&reg).unwrap();
    // Over the bound: a sparse file, refused from its size before anything is read.
    let f = std::fs::File::create(&reg).unwrap();
    f.set_len(input::REGISTRATION.max_bytes + 1).unwrap();
    let err = Closure::from_closure_info(dir.path(), &c.toplevel).unwrap_err();
    assert!(
        err.to_string().contains("more than 67108864 bytes"),
        "{err}"
    );
    std::fs::remove_file(&reg).unwrap();
    let err = Closure::from_closure_info(dir.path(), &c.toplevel).unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
}

/// A huge line is not echoed whole: messages quote at most 256 characters of it.
#[test]
fn messages_quote_huge_lines_briefly() {
    let line = format!("/nix/store/{}", "x".repeat(2_000_000));
    let e = parse_registration(&format!("{line}\n"), Path::new("reg")).unwrap_err();
    let s = e.to_string();
    assert!(s.len() < 500, "{} bytes: {}", s.len(), &s[..300]);
    assert!(s.contains('…'), "{s}");
    let e = crate::BootSpec::parse(
        format!(
            "{{\"org.nixos.bootspec.v1\": \"\\u0007{}\"}}",
            "a".repeat(100_000)
        )
        .as_bytes(),
        Path::new("boot.json"),
    )
    .unwrap_err();
    let s = e.to_string();
    assert!(
        s.len() < 400 && !s.contains('\u{7}'),
        "{} bytes: {s:.300}",
        s.len()
    );
}

#[test]
fn malformed_registration_names_file_and_line() {
    let p = format!("/nix/store/{}-a", "a".repeat(32));
    let h = "00".repeat(32);
    let cases = [
        (format!("{p}\n{h}\nbig\n\n0\n"), 3, "not a decimal"),
        (format!("{p}\nzz\n1\n\n0\n"), 2, "invalid NAR hash"),
        (format!("{p}\n{h}\n1\n\n2\n{p}\n"), 7, "unexpected end"),
        (format!("{p}\n{h}\n1\n\nx\n"), 5, "reference count"),
        (
            format!("/nix/store/short\n{h}\n1\n\n0\n"),
            1,
            "invalid store path",
        ),
        (format!("{p}\n{h}\n1\n\n0\n{p}\n{h}\n1\n\n0\n"), 6, "twice"),
        (format!("{p}\n{h}\n1\n\n0\n\nmore\n"), 7, "after an empty"),
        (
            format!("{p}\n{h}\n1\nnot-a-path\n0\n"),
            4,
            "invalid store path",
        ),
    ];
    for (text, line, what) in cases {
        let err = parse_registration(&text, Path::new("/x/registration")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("/x/registration:{line}: ")),
            "{msg}"
        );
        assert!(msg.contains(what), "{msg}");
    }
    // A reference outside the closure.
    let text = format!("{p}\n{h}\n1\n\n1\n/nix/store/{}-b\n", "b".repeat(32));
    let infos = parse_registration(&text, Path::new("r")).unwrap();
    let err = Closure::new(infos[0].path.clone(), infos, "r").unwrap_err();
    assert!(
        matches!(err, Error::ReferenceOutsideClosure { .. }),
        "{err}"
    );
    assert!(parse_registration("", Path::new("r")).unwrap().is_empty());
}

#[test]
fn check_present_names_missing_paths() {
    let dir = tempfile::tempdir().unwrap();
    let c = sample();
    std::fs::create_dir_all(
        dir.path()
            .join("nix/store")
            .join(c.paths[1].path.base_name()),
    )
    .unwrap();
    let err = c.check_present(dir.path()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingStorePath { path, .. } if *path == c.paths[0].path),
        "{err}"
    );
}
