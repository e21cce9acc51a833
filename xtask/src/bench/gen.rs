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

/// The store path a [`Gen::package`] fills.
struct Package<'a> {
    root: &'a Path,
    name: &'a str,
    /// Bytes left in the closure's budget: no file is larger (but 4 KiB is always allowed).
    left: u64,
}

impl Package<'_> {
    fn cap(&self, n: u64) -> usize {
        n.min(self.left.max(4096)) as usize
    }
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
        let pkg = Package {
            root: &root,
            name: &name,
            left,
        };
        match kind {
            Kind::Lib => self.lib_files(&pkg, &version)?,
            Kind::Tool => self.tool_files(&pkg, refs)?,
            Kind::Script | Kind::Tiny => self.python_files(&pkg, kind)?,
            Kind::Big => self.big_files(&pkg)?,
        }
        if !refs.is_empty() {
            let data = refs.join(" ") + "\n";
            let p = root.join("nix-support/propagated-build-inputs");
            self.file(&p, data.as_bytes(), false)?;
        }
        Ok(format!("/nix/store/{base}"))
    }

    /// A library: versioned `.so` files with their links, headers, a pkg-config file.
    fn lib_files(&mut self, pkg: &Package, version: &str) -> Result<()> {
        let (root, name) = (pkg.root, pkg.name);
        for i in 0..self.rng.range(1, 3) {
            let so = format!("lib{name}{i}.so");
            let full = format!("{so}.{version}");
            let major = format!("{so}.{}", version.split('.').next().unwrap_or("0"));
            let len = pkg.cap(self.rng.log_size(16 << 10, 6 << 20));
            let data = self.binary(len);
            self.file(&root.join("lib").join(&full), &data, true)?;
            self.link(&full, &root.join("lib").join(&major))?;
            self.link(&major, &root.join("lib").join(&so))?;
        }
        for i in 0..self.rng.range(3, 40) {
            let len = pkg.cap(self.rng.log_size(500, 30 << 10));
            let data = self.text(len);
            let p = root.join(format!("include/{name}/h{i}.h"));
            self.file(&p, &data, false)?;
        }
        let data = self.text(300);
        self.file(&root.join(format!("lib/pkgconfig/{name}.pc")), &data, false)
    }

    /// A tool: binaries with man pages, aliases, translations, a wrapper linking into its
    /// first reference.
    fn tool_files(&mut self, pkg: &Package, refs: &[String]) -> Result<()> {
        let (root, name) = (pkg.root, pkg.name);
        let n = self.rng.range(1, 10);
        for i in 0..n {
            let len = pkg.cap(self.rng.log_size(10 << 10, 3 << 20));
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
        Ok(())
    }

    /// A Python package (`Script`) or a swarm of tiny files (`Tiny`): modules and every
    /// other one's bytecode.
    fn python_files(&mut self, pkg: &Package, kind: Kind) -> Result<()> {
        let (files, hi) = match kind {
            Kind::Tiny => (self.rng.range(40, 200), 2 << 10),
            _ => (self.rng.range(20, 120), 25 << 10),
        };
        let site = pkg
            .root
            .join(format!("lib/python3.11/site-packages/{}", pkg.name));
        for sub in 0..self.rng.range(1, 6) {
            let d = site.join(format!("m{sub}"));
            for i in 0..files {
                let len = pkg.cap(self.rng.log_size(100, hi));
                let data = self.text(len);
                self.file(&d.join(format!("f{i}.py")), &data, false)?;
                if i % 2 == 0 {
                    let data = self.binary(len / 2 + 16);
                    let p = d.join(format!("__pycache__/f{i}.cpython-311.pyc"));
                    self.file(&p, &data, false)?;
                }
            }
        }
        Ok(())
    }

    /// Big blobs and data files.
    fn big_files(&mut self, pkg: &Package) -> Result<()> {
        let (root, name) = (pkg.root, pkg.name);
        for i in 0..self.rng.range(1, 3) {
            let len = pkg.cap(self.rng.log_size(10 << 20, 100 << 20));
            let data = self.binary(len);
            self.file(&root.join(format!("lib/{name}/blob{i}.bin")), &data, false)?;
        }
        for i in 0..self.rng.range(5, 30) {
            let len = pkg.cap(self.rng.log_size(4 << 10, 400 << 10));
            let data = self.binary(len);
            self.file(&root.join(format!("share/{name}/d{i}")), &data, false)?;
        }
        Ok(())
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
