use super::*;

/// xorshift64*: fast, deterministic, good enough for file contents and shapes.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(super) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    /// Log-uniform in `[lo, hi]`: many small values, a long tail of big ones.
    pub(super) fn log_size(&mut self, lo: u64, hi: u64) -> u64 {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        let (a, b) = ((lo.max(1)) as f64, hi.max(lo.max(1)) as f64);
        (a.ln() + u * (b.ln() - a.ln())).exp() as u64
    }
    pub(super) fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

pub(super) const NIX32: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

pub(super) fn nix_hash(rng: &mut Rng) -> String {
    (0..32)
        .map(|_| NIX32[rng.below(32) as usize] as char)
        .collect()
}

pub(super) const SYLLABLES: [&str; 32] = [
    "lib", "gtk", "py", "xorg", "net", "core", "util", "data", "font", "sys", "ssl", "xml",
    "compress", "image", "audio", "gl", "dbus", "crypt", "z", "ffi", "tools", "perl", "rust", "go",
    "qt", "kde", "gnome", "media", "proto", "db", "http", "json",
];
pub(super) const LANGS: [&str; 16] = [
    "de", "fr", "es", "it", "ja", "ko", "nl", "pl", "pt_BR", "ru", "sv", "zh_CN", "cs", "fi", "tr",
    "uk",
];

/// Writes files of realistic shapes and contents and counts what it made.
pub(super) struct Gen {
    pub(super) rng: Rng,
    pub(super) words: Vec<Vec<u8>>,
    pub(super) bytes: u64,
    pub(super) entries: u64,
}

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Lib,
    Tool,
    Script,
    Big,
    Tiny,
}

impl Gen {
    pub(super) fn new(seed: u64) -> Self {
        let mut rng = Rng::new(seed);
        let letters = b"abcdefghijklmnopqrstuvwxyz_";
        let words = (0..2048)
            .map(|_| {
                let n = rng.range(2, 10) as usize;
                (0..n)
                    .map(|_| letters[rng.below(letters.len() as u64) as usize])
                    .collect()
            })
            .collect();
        Gen {
            rng,
            words,
            bytes: 0,
            entries: 0,
        }
    }

    /// Word text (compresses about 3x).
    pub(super) fn text(&mut self, len: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(len + 16);
        let mut col = 0;
        let n = self.words.len() as u64;
        while v.len() < len {
            let r = self.rng.next();
            // Skewed towards the first words, as in real text.
            let i = ((r % n) * ((r >> 32) % n) / n) as usize;
            let w = &self.words[i];
            v.extend_from_slice(w);
            col += w.len() + 1;
            if col > 72 {
                v.push(b'\n');
                col = 0;
            } else {
                v.push(b' ');
            }
        }
        v.truncate(len);
        v
    }

    /// "Binary" contents in 4 KiB blocks: random, 4-bit symbols, or low-entropy patterns
    /// (compresses to roughly 60%).
    pub(super) fn binary(&mut self, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        for block in v.chunks_mut(4096) {
            match self.rng.below(20) {
                0..=6 => self.rng.fill(block),
                7..=14 => {
                    self.rng.fill(block);
                    for b in block.iter_mut() {
                        *b = (*b & 0x0f) + 0x30;
                    }
                }
                _ => {
                    let p = self.rng.next().to_le_bytes();
                    for (i, b) in block.iter_mut().enumerate() {
                        *b = p[i % 8] ^ (i / 256) as u8;
                    }
                }
            }
        }
        v
    }

    pub(super) fn mkdir(&mut self, p: &Path) -> Result<()> {
        if p.exists() {
            return Ok(());
        }
        if let Some(parent) = p.parent() {
            self.mkdir(parent)?;
        }
        fs::create_dir(p).with_context(|| format!("creating {}", p.display()))?;
        self.entries += 1;
        Ok(())
    }

    pub(super) fn file(&mut self, p: &Path, data: &[u8], exec: bool) -> Result<()> {
        if let Some(parent) = p.parent() {
            self.mkdir(parent)?;
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(if exec { 0o555 } else { 0o444 })
            .open(p)
            .with_context(|| format!("creating {}", p.display()))?;
        f.write_all(data)
            .with_context(|| format!("writing {}", p.display()))?;
        self.bytes += data.len() as u64;
        self.entries += 1;
        Ok(())
    }

    pub(super) fn link(&mut self, target: &str, p: &Path) -> Result<()> {
        if let Some(parent) = p.parent() {
            self.mkdir(parent)?;
        }
        symlink(target, p).with_context(|| format!("creating symlink {}", p.display()))?;
        self.entries += 1;
        Ok(())
    }

    pub(super) fn name(&mut self) -> String {
        let a = SYLLABLES[self.rng.below(32) as usize];
        match self.rng.below(3) {
            0 => a.to_string(),
            _ => format!("{a}{}", SYLLABLES[self.rng.below(32) as usize]),
        }
    }

    /// One store path of `kind` in `store`; references `refs` (full store paths) from
    /// `nix-support/propagated-build-inputs` and, for tools, absolute symlinks. Returns
    /// the full store path. Sizes are capped by `left` bytes.
    pub(super) fn package(
        &mut self,
        store: &Path,
        kind: Kind,
        refs: &[String],
        left: u64,
    ) -> Result<String> {
        let name = self.name();
        let version = format!(
            "{}.{}.{}",
            self.rng.below(12),
            self.rng.below(30),
            self.rng.below(10)
        );
        let base = format!("{}-{name}-{version}", nix_hash(&mut self.rng));
        let root = store.join(&base);
        self.mkdir(&root)?;
        let cap = |n: u64| n.min(left.max(4096)) as usize;
        match kind {
            Kind::Lib => {
                for i in 0..self.rng.range(1, 3) {
                    let so = format!("lib{name}{i}.so");
                    let full = format!("{so}.{version}");
                    let major = format!("{so}.{}", version.split('.').next().unwrap_or("0"));
                    let len = cap(self.rng.log_size(16 << 10, 6 << 20));
                    let data = self.binary(len);
                    self.file(&root.join("lib").join(&full), &data, true)?;
                    self.link(&full, &root.join("lib").join(&major))?;
                    self.link(&major, &root.join("lib").join(&so))?;
                }
                for i in 0..self.rng.range(3, 40) {
                    let len = cap(self.rng.log_size(500, 30 << 10));
                    let data = self.text(len);
                    let p = root.join(format!("include/{name}/h{i}.h"));
                    self.file(&p, &data, false)?;
                }
                let data = self.text(300);
                self.file(&root.join(format!("lib/pkgconfig/{name}.pc")), &data, false)?;
            }
            Kind::Tool => {
                let n = self.rng.range(1, 10);
                for i in 0..n {
                    let len = cap(self.rng.log_size(10 << 10, 3 << 20));
                    let data = self.binary(len);
                    self.file(&root.join(format!("bin/{name}-{i}")), &data, true)?;
                    let len = self.rng.log_size(800, 8 << 10) as usize;
                    let data = self.binary(len);
                    let p = root.join(format!("share/man/man1/{name}-{i}.1.gz"));
                    self.file(&p, &data, false)?;
                }
                for k in 0..self.rng.below(3) {
                    let i = self.rng.below(n);
                    let alias = format!("{name}-alias{k}");
                    self.link(&format!("{name}-{i}"), &root.join("bin").join(alias))?;
                }
                for lang in LANGS.iter().take(self.rng.below(13) as usize) {
                    let len = self.rng.log_size(2 << 10, 80 << 10) as usize;
                    let data = self.binary(len);
                    let p = root.join(format!("share/locale/{lang}/LC_MESSAGES/{name}.mo"));
                    self.file(&p, &data, false)?;
                }
                if let Some(r) = refs.first() {
                    let p = root.join(format!("bin/{name}-wrapped"));
                    self.link(&format!("{r}/bin/{name}"), &p)?;
                }
            }
            Kind::Script | Kind::Tiny => {
                let (files, hi) = match kind {
                    Kind::Tiny => (self.rng.range(40, 200), 2 << 10),
                    _ => (self.rng.range(20, 120), 25 << 10),
                };
                let site = root.join(format!("lib/python3.11/site-packages/{name}"));
                for sub in 0..self.rng.range(1, 6) {
                    let d = site.join(format!("m{sub}"));
                    for i in 0..files {
                        let len = cap(self.rng.log_size(100, hi));
                        let data = self.text(len);
                        self.file(&d.join(format!("f{i}.py")), &data, false)?;
                        if i % 2 == 0 {
                            let data = self.binary(len / 2 + 16);
                            let p = d.join(format!("__pycache__/f{i}.cpython-311.pyc"));
                            self.file(&p, &data, false)?;
                        }
                    }
                }
            }
            Kind::Big => {
                for i in 0..self.rng.range(1, 3) {
                    let len = cap(self.rng.log_size(10 << 20, 100 << 20));
                    let data = self.binary(len);
                    self.file(&root.join(format!("lib/{name}/blob{i}.bin")), &data, false)?;
                }
                for i in 0..self.rng.range(5, 30) {
                    let len = cap(self.rng.log_size(4 << 10, 400 << 10));
                    let data = self.binary(len);
                    self.file(&root.join(format!("share/{name}/d{i}")), &data, false)?;
                }
            }
        }
        if !refs.is_empty() {
            let data = refs.join(" ") + "\n";
            let p = root.join("nix-support/propagated-build-inputs");
            self.file(&p, data.as_bytes(), false)?;
        }
        Ok(format!("/nix/store/{base}"))
    }

    /// A `man-pages`-like store path whose `share/man/man1` holds `n` entries (a tenth of
    /// them symlinks to other pages, as `.so` man links are).
    pub(super) fn big_dir(&mut self, store: &Path, n: u64) -> Result<String> {
        let base = format!("{}-man-pages-6.7", nix_hash(&mut self.rng));
        let d = store.join(&base).join("share/man/man1");
        self.mkdir(&d)?;
        for i in 0..n {
            let p = d.join(format!("page{i:05}.1.gz"));
            if i % 10 == 9 {
                let target = format!("page{:05}.1.gz", self.rng.below(i));
                self.link(&target, &p)?;
            } else {
                let len = self.rng.log_size(500, 6 << 10) as usize;
                let data = self.binary(len);
                self.file(&p, &data, false)?;
            }
        }
        Ok(format!("/nix/store/{base}"))
    }

    /// Filler store paths in `store` until `bytes` of file data and `entries` entries are
    /// made (a big directory of `big_dir` entries first). Returns their store paths.
    pub(super) fn store(
        &mut self,
        store: &Path,
        bytes: u64,
        entries: u64,
        big_dir: u64,
    ) -> Result<Vec<String>> {
        self.mkdir(store)?;
        let (b0, e0) = (self.bytes, self.entries);
        let mut paths = vec![self.big_dir(store, big_dir)?];
        loop {
            let (made, count) = (self.bytes - b0, self.entries - e0);
            if made >= bytes && count >= entries {
                break;
            }
            let left = bytes.saturating_sub(made);
            let kind = if made >= bytes {
                Kind::Tiny
            } else {
                match self.rng.below(100) {
                    0..=2 if left > 300 * MIB => Kind::Big,
                    0..=39 => Kind::Lib,
                    40..=69 => Kind::Tool,
                    _ => Kind::Script,
                }
            };
            let mut refs = Vec::new();
            for _ in 0..self.rng.below(4) {
                let r = &paths[self.rng.below(paths.len() as u64) as usize];
                if !refs.contains(r) {
                    refs.push(r.clone());
                }
            }
            let p = self.package(store, kind, &refs, left)?;
            paths.push(p);
        }
        Ok(paths)
    }
}

/// `(entries, bytes)` of regular-file data below `dir` (not counting `dir`).
pub(super) fn count_tree(dir: &Path) -> Result<(u64, u64)> {
    let mut n = 0;
    let mut bytes = 0;
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let e = e?;
        let m = e.metadata()?;
        n += 1;
        if m.is_dir() {
            let (a, b) = count_tree(&e.path())?;
            n += a;
            bytes += b;
        } else if m.is_file() {
            bytes += m.len();
        }
    }
    Ok((n, bytes))
}

/// Reuses `dir` when its marker (`<dir>.stamp`, beside it) holds `stamp`; otherwise removes
/// it and calls `make`.
pub(super) fn cached(dir: &Path, stamp: &str, make: impl FnOnce() -> Result<()>) -> Result<()> {
    let mut marker = dir.as_os_str().to_owned();
    marker.push(".stamp");
    let marker = PathBuf::from(marker);
    if fs::read_to_string(&marker).is_ok_and(|s| s == stamp) {
        return Ok(());
    }
    let _ = fs::remove_file(&marker);
    util::remove_tree(dir)?;
    fs::create_dir_all(dir)?;
    let t = Instant::now();
    make()?;
    fs::write(&marker, stamp)?;
    eprintln!(
        "xtask bench: generated {} in {:.1} s",
        dir.display(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The generated tree for the ext4 bench: `DIR/nix/store/...` plus a little `/etc`.
pub(super) fn gen_tree(env: &Env) -> Result<(PathBuf, String)> {
    let (bytes, entries, big) = if env.quick {
        (128 * MIB, 7_000, 2_250)
    } else {
        (GIB, 55_000, 18_000)
    };
    let name = format!("gen-{}m-{entries}", bytes / MIB);
    let dir = env.dir.join("trees").join(&name);
    let stamp = format!("v{GEN_VERSION} tree {bytes} {entries} {big}\n");
    cached(&dir, &stamp, || {
        let mut g = Gen::new(0x7EE5_0001);
        g.store(&dir.join("nix/store"), bytes, entries, big)?;
        for i in 0..40 {
            let data = g.text(600);
            g.file(&dir.join(format!("etc/conf{i}")), &data, false)?;
        }
        Ok(())
    })?;
    Ok((
        dir,
        format!(
            "generated tree `{name}` (store-like: many small files, libraries and binaries up \
             to 100 MiB, symlinks, one directory of {big} entries)"
        ),
    ))
}

/// A closure directory as the baseline scripts and imgbuild take it: `result`,
/// `closure-info/`, `nix/store`.
pub(super) struct Closure {
    pub(super) dir: PathBuf,
    pub(super) desc: String,
    pub(super) nar_size: u64,
    pub(super) paths: usize,
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

// ---------------------------------------------------------------------------------------
// Sections

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_and_generators_are_deterministic() {
        assert_eq!(replace_all(b"aXbXX", b"X", b"YY"), b"aYYbYYYY");
        let (mut a, mut b) = (Gen::new(5), Gen::new(5));
        assert_eq!(a.binary(10_000), b.binary(10_000));
        assert_eq!(a.text(500), b.text(500));
        let h = nix_hash(&mut a.rng);
        assert_eq!(h.len(), 32);
        assert!(h.bytes().all(|c| NIX32.contains(&c)));
    }
}
