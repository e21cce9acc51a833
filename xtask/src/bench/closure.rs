//! Closures for the benchmarks: the fixture's, and synthetic ones of a given size (the
//! fixture's toplevel with generated packages, store paths renamed throughout).

use super::*;

/// A closure directory as the baseline scripts and imgbuild take it: `result`,
/// `closure-info/`, `nix/store`.
pub(super) struct Closure {
    pub(super) dir: PathBuf,
    pub(super) desc: String,
    pub(super) nar_size: u64,
    pub(super) paths: usize,
}

impl Closure {
    /// Its directory's name, for output directories and log names.
    pub(super) fn name(&self) -> String {
        self.dir
            .file_name()
            .map_or("x".into(), |n| n.to_string_lossy().into_owned())
    }
}

pub(super) fn fixture_closure(arch: Arch) -> Result<Closure> {
    let dir = fixture::default_dir(arch);
    let info = fixture::ensure_built(arch, &dir)?;
    Ok(Closure {
        desc: format!(
            "fixture {} ({} store paths, NAR {:.0} MiB)",
            arch.name(),
            info.store_paths,
            info.total_nar_size as f64 / MIB as f64
        ),
        dir,
        nar_size: info.total_nar_size,
        paths: info.store_paths,
    })
}

pub(super) fn replace_all(hay: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(hay.len());
    let mut i = 0;
    while i < hay.len() {
        if hay[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(hay[i]);
            i += 1;
        }
    }
    out
}

/// Copies `src` to `dst` (files, dirs, symlinks; modes kept), replacing `from` by `to` in
/// every file's contents and symlink's target.
pub(super) fn copy_replacing(src: &Path, dst: &Path, from: &[u8], to: &[u8]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let m = fs::symlink_metadata(src)?;
    let mode = m.mode() & 0o7777;
    if m.file_type().is_symlink() {
        let t = fs::read_link(src)?;
        let t = replace_all(t.as_os_str().as_bytes(), from, to);
        symlink(std::ffi::OsStr::from_bytes(&t), dst)?;
    } else if m.is_dir() {
        fs::create_dir(dst)?;
        let mut names: Vec<_> = fs::read_dir(src)?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<std::io::Result<_>>()?;
        names.sort();
        for n in names {
            copy_replacing(&src.join(&n), &dst.join(&n), from, to)?;
        }
        fs::set_permissions(dst, fs::Permissions::from_mode(mode | 0o700))?;
    } else {
        let data = replace_all(&fs::read(src)?, from, to);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(dst)?;
        f.write_all(&data)?;
    }
    Ok(())
}

/// The fixture closure of `arch` plus generated store paths up to `gib` GiB of NAR, with
/// a new toplevel referencing every filler path (see the module docs).
pub(super) fn synth_closure(env: &Env, arch: Arch, gib: f64) -> Result<Closure> {
    let fix_dir = fixture::default_dir(arch);
    let info: FixtureInfo = fixture::ensure_built(arch, &fix_dir)?;
    let target = (gib * GIB as f64) as u64;
    let filler = target.saturating_sub(info.total_nar_size);
    let filler_gib = filler as f64 / GIB as f64;
    let entries = (50_000.0 * filler_gib) as u64;
    let big = (9_000.0 * gib) as u64;
    let name = format!("{}-{}m", arch.name(), target / MIB);
    let dir = env.dir.join("closures").join(&name);
    let stamp = format!(
        "v{GEN_VERSION} closure {} {target} {entries} {big} {}\n",
        arch.name(),
        info.toplevel
    );
    cached(&dir, &stamp, || {
        let store = dir.join("nix/store");
        fs::create_dir_all(&store)?;
        let old_top = info.toplevel.trim_start_matches("/nix/store/").to_string();
        let listed = fs::read_to_string(fix_dir.join("closure-info/store-paths"))?;
        let srcs: Vec<PathBuf> = listed
            .lines()
            .filter(|l| !l.is_empty() && l.trim_start_matches("/nix/store/") != old_top)
            .map(|l| fix_dir.join(l.trim_start_matches('/')))
            .collect();
        for chunk in srcs.chunks(64) {
            run(cmd("cp").arg("-a").arg("-t").arg(&store).args(chunk))?;
        }
        let seed = 0xC105_0000 ^ (target / MIB) ^ ((arch as u64) << 40);
        let mut g = Gen::new(seed);
        let fill = g.store(&store, filler, entries, big)?;
        let new_hash = nix_hash(&mut g.rng);
        let old_hash = &old_top[..32];
        let new_top = format!("{new_hash}{}", &old_top[32..]);
        copy_replacing(
            &fix_dir.join("nix/store").join(&old_top),
            &store.join(&new_top),
            old_hash.as_bytes(),
            new_hash.as_bytes(),
        )?;
        let extra = store.join(&new_top).join("extra-dependencies");
        let _ = fs::remove_file(&extra);
        fs::write(&extra, fill.join("\n") + "\n")?;
        fs::set_permissions(&extra, fs::Permissions::from_mode(0o444))?;
        let top_path = format!("/nix/store/{new_top}");
        symlink(&top_path, dir.join("result"))?;
        let top = imgbuild_nix::StorePath::parse(&top_path)?;
        let c = imgbuild_nix::Closure::from_scan(&dir, &top)
            .with_context(|| format!("scanning the closure of {top_path}"))?;
        ensure!(
            c.paths.len() == info.store_paths + fill.len(),
            "the scan found {} store paths, expected {} fixture + {} filler",
            c.paths.len(),
            info.store_paths,
            fill.len()
        );
        let ci = dir.join("closure-info");
        fs::create_dir_all(&ci)?;
        fs::write(ci.join("store-paths"), c.store_paths_text())?;
        fs::write(ci.join("registration"), c.registration_text())?;
        fs::write(
            ci.join("total-nar-size"),
            format!("{}\n", c.total_nar_size()),
        )?;
        Ok(())
    })?;
    let nar_size: u64 = fs::read_to_string(dir.join("closure-info/total-nar-size"))?
        .trim()
        .parse()
        .context("total-nar-size")?;
    let paths = fs::read_to_string(dir.join("closure-info/store-paths"))?
        .lines()
        .count();
    let (n, _) = count_tree(&dir.join("nix/store"))?;
    Ok(Closure {
        desc: format!(
            "synthetic {} {:.2} GiB ({paths} store paths, {n} entries, NAR {:.2} GiB, \
             one directory of {big} entries)",
            arch.name(),
            gib,
            nar_size as f64 / GIB as f64
        ),
        dir,
        nar_size,
        paths,
    })
}

/// The committed demo closure (tiny: checks the bench, measures nothing).
pub(super) fn demo_closure() -> Result<Closure> {
    Ok(Closure {
        dir: util::repo_root().join("fixtures/demo"),
        desc: "committed demo closure (quick: checks the bench only)".into(),
        nar_size: 0,
        paths: 0,
    })
}

// ---------------------------------------------------------------------------------------
// Sections
