//! Test support (feature `testutil`): builds a real Nix chroot store offline, so that tests in
//! any crate can check against what Nix itself produces.
//!
//! Recipe (also usable by hand):
//! 1. `apt-get download busybox-static && dpkg-deb -x busybox-static_*.deb x` (cached in
//!    `<workspace>/.cache/busybox-static/`); put `x/bin/busybox` alone in a directory `bb/`.
//! 2. Write [`NIXOS_LIKE_EXPR`] to `DIR/default.nix` next to `bb/`.
//! 3. `NIX_CONFIG=$'sandbox = false\nbuild-users-group = \nsubstituters = '
//!    nix-build --store STORE DIR/default.nix --no-out-link`: Nix 2.8 (Debian's `nix-bin`)
//!    builds the derivations with busybox as builder and prints the toplevel store path. No
//!    daemon, network or root needed.
//!
//! The store holds a NixOS-like toplevel (`boot.json`, `kernel`, `initrd`, `init`,
//! `kernel-params`, ...) whose closure has self references, absolute and relative symlinks,
//! executables, empty files and directories, odd names, a single-file store path, a symlink store
//! path and the 2 MB busybox (referenced from `init`'s shebang), plus a second toplevel without
//! boot.json (`specialisation/legacy`).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{StateEntryKind, StorePath};

/// Errors of the test helpers: which command failed and its output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TestutilError {
    #[error("{cmd}: {reason}")]
    Command { cmd: String, reason: String },
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Nix(#[from] crate::Error),
}

type Result<T> = std::result::Result<T, TestutilError>;

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> TestutilError {
    let path = path.to_owned();
    move |source| TestutilError::Io { op, path, source }
}

/// The Nix expression of the test store. `./bb` must be a directory containing only
/// `busybox`.
pub const NIXOS_LIKE_EXPR: &str = r#"
let
  bbdir = builtins.path { path = ./bb; name = "busybox-static"; };
  bb = "${bbdir}/busybox";
  mk = name: script: derivation {
    inherit name;
    system = builtins.currentSystem;
    builder = bb;
    args = [ "sh" "-e" "-c" script ];
  };
  lib = mk "lib-1.0" ''
    mkdir -p $out/lib $out/share/empty-dir "$out/share/dir with spaces" $out/share/deep/a/b/c/d
    printf 'ELF-ish library %s\n' $out > $out/lib/libfoo.so.1
    chmod 555 $out/lib/libfoo.so.1
    ln -s libfoo.so.1 $out/lib/libfoo.so
    : > $out/share/empty-file
    : > $out/share/empty-exec
    chmod 555 $out/share/empty-exec
    printf '12345678' > $out/share/eight
    printf '1234567' > $out/share/seven
    printf 'unicode\n' > "$out/share/unicodé-fïle"
    printf 'spaces\n' > "$out/share/dir with spaces/a file"
    printf 'deep\n' > $out/share/deep/a/b/c/d/bottom
    printf 'Upper\n' > $out/share/Zupper
    printf 'dot\n' > $out/share/.hidden
    printf 'dash\n' > $out/share/-dash
    ln -s ../lib/libfoo.so.1 $out/share/rel-link
    ln -s does-not-exist $out/share/dangling
  '';
  linux = mk "linux-6.1.77" ''
    mkdir -p $out/lib/modules/6.1.77/kernel
    dd if=/dev/zero of=$out/bzImage bs=65536 count=40 2>/dev/null
    printf 'bzImage tail\n' >> $out/bzImage
    printf 'module\n' > $out/lib/modules/6.1.77/kernel/virtio.ko
  '';
  initrd = mk "initrd-linux-6.1.77" ''
    mkdir -p $out
    printf 'initrd image\n' > $out/initrd
  '';
  app = mk "app-2.0" ''
    mkdir -p $out/bin
    printf '#!${lib}/lib/libfoo.so.1\necho app\n' > $out/bin/app
    chmod 555 $out/bin/app
    ln -s app $out/bin/app-alias
    ln -s ${lib}/lib $out/libdir
    printf 'self reference: %s\n' $out > $out/self
  '';
  unit = mk "hello.service" ''
    printf '[Service]\nExecStart=${app}/bin/app\n' > $out
  '';
  applink = mk "app-link" ''
    ln -s ${app}/bin/app $out
  '';
  toplevelScript = withBootJson: ''
    mkdir -p $out/etc $out/specialisation
    printf '#!${bb} sh\nexec ${app}/bin/app\n' > $out/init
    chmod 555 $out/init
    ln -s ${linux}/bzImage $out/kernel
    ln -s ${linux} $out/kernel-modules
    ln -s ${initrd}/initrd $out/initrd
    ln -s ${unit} $out/etc/hello.service
    ln -s ${applink} $out/etc/app-link
    printf 'console=ttyS0,115200 panic=1 loglevel=4' > $out/kernel-params
    printf '24.05.test' > $out/nixos-version
    printf '%s' ${builtins.currentSystem} > $out/system
  '' + (if withBootJson then ''
    ln -s ${legacy} $out/specialisation/legacy
    cat > $out/boot.json <<EOF
    {
      "org.imgbuild.v1": { "firmware": "${linux}/lib" },
      "org.nixos.bootspec.v1": {
        "init": "$out/init",
        "initrd": "${initrd}/initrd",
        "kernel": "${linux}/bzImage",
        "kernelParams": [ "console=ttyS0,115200", "panic=1", "loglevel=4" ],
        "label": "NixOS 24.05.test (Linux 6.1.77)",
        "system": "${builtins.currentSystem}",
        "toplevel": "$out"
      },
      "org.nixos.specialisation.v1": {},
      "org.nixos.systemd-boot": { "sortKey": "nixos" }
    }
    EOF
  '' else "");
  legacy = mk "nixos-system-legacy-24.05.test" (toplevelScript false);
in mk "nixos-system-test-24.05.test" (toplevelScript true)
"#;

/// `NIX_CONFIG` for offline, unprivileged builds in a chroot store with Debian's nix-bin.
pub const NIX_CONFIG: &str = "sandbox = false\nbuild-users-group = \nsubstituters = \n";

/// A `Command` for a Nix tool with [`NIX_CONFIG`] set.
pub fn nix_command(tool: &str) -> Command {
    let mut c = Command::new(tool);
    c.env("NIX_CONFIG", NIX_CONFIG);
    c
}

/// Runs a command, returning stdout; fails with the command line and stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let desc = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| TestutilError::Command {
        cmd: desc.clone(),
        reason: format!("cannot run ({e}); is it installed (apt-get install nix-bin)?"),
    })?;
    if !out.status.success() {
        return Err(TestutilError::Command {
            cmd: desc,
            reason: format!("{}: {}", out.status, String::from_utf8_lossy(&out.stderr)),
        });
    }
    String::from_utf8(out.stdout).map_err(|_| TestutilError::Command {
        cmd: desc,
        reason: "stdout is not UTF-8".into(),
    })
}

/// `<workspace>/.cache` (gitignored).
pub fn default_cache_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache")
}

/// Path of a static busybox for the host architecture, from Debian's `busybox-static`
/// (`apt-get download`, cached under `cache_dir/busybox-static`). Works offline once cached.
pub fn busybox_static(cache_dir: &Path) -> Result<PathBuf> {
    let dir = cache_dir.join("busybox-static");
    let bin = dir.join("x/bin/busybox");
    if bin.is_file() {
        return Ok(bin);
    }
    std::fs::create_dir_all(&dir).map_err(io("creating", &dir))?;
    // A private work dir so that concurrent test binaries do not trip over each other.
    let work = dir.join(format!("work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io("creating", &work))?;
    let cached_deb = find_deb(&dir)?;
    let deb = match cached_deb {
        Some(d) => d,
        None => {
            run(Command::new("apt-get")
                .args(["download", "-q", "busybox-static"])
                .current_dir(&work))?;
            let d = find_deb(&work)?.ok_or_else(|| TestutilError::Command {
                cmd: "apt-get download busybox-static".into(),
                reason: "no .deb was downloaded".into(),
            })?;
            let name = d.file_name().map(PathBuf::from).unwrap_or_default();
            let kept = dir.join(name);
            std::fs::rename(&d, &kept).map_err(io("moving", &d))?;
            kept
        }
    };
    let x = work.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    // Whoever finishes first installs `x`; a loser's rename fails harmlessly.
    let _ = std::fs::rename(&x, dir.join("x"));
    let _ = std::fs::remove_dir_all(&work);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(TestutilError::Command {
            cmd: format!("dpkg-deb -x {}", deb.display()),
            reason: "no bin/busybox in the package".into(),
        })
    }
}

fn find_deb(dir: &Path) -> Result<Option<PathBuf>> {
    let mut debs = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("listing", dir))? {
        let p = e.map_err(io("listing", dir))?.path();
        if p.extension().is_some_and(|e| e == "deb") {
            debs.push(p);
        }
    }
    debs.sort();
    Ok(debs.pop())
}

/// A real Nix store built by [`build_real_store`].
#[derive(Clone, Debug)]
pub struct RealStore {
    /// The store root (`<root>/nix/store`, `<root>/nix/var/nix/db/db.sqlite`).
    pub root: PathBuf,
    /// The toplevel with boot.json.
    pub toplevel: StorePath,
    /// The toplevel without boot.json (in the closure via `specialisation/legacy`).
    pub legacy_toplevel: StorePath,
}

/// Builds [`NIXOS_LIKE_EXPR`] into a new chroot store at `work/store` (`work` must be empty or
/// absent), using busybox from `cache_dir`. Needs `nix-build` (Debian `nix-bin`), `apt-get` and
/// `dpkg-deb` (unless busybox is cached). Takes a few seconds.
pub fn build_real_store(work: &Path, cache_dir: &Path) -> Result<RealStore> {
    let busybox = busybox_static(cache_dir)?;
    let expr_dir = work.join("expr");
    let bb = expr_dir.join("bb");
    std::fs::create_dir_all(&bb).map_err(io("creating", &bb))?;
    std::fs::copy(&busybox, bb.join("busybox")).map_err(io("copying", &busybox))?;
    let expr = expr_dir.join("default.nix");
    std::fs::write(&expr, NIXOS_LIKE_EXPR).map_err(io("writing", &expr))?;
    let root = std::path::absolute(work.join("store")).map_err(io("resolving", work))?;
    let out = run(nix_command("nix-build")
        .arg("--store")
        .arg(&root)
        .arg(&expr)
        .arg("--no-out-link")
        .arg("--quiet"))?;
    let toplevel = StorePath::parse(out.trim())?;
    let legacy_link = root
        .join("nix/store")
        .join(toplevel.base_name())
        .join("specialisation/legacy");
    let target = std::fs::read_link(&legacy_link).map_err(io("reading link", &legacy_link))?;
    let legacy_toplevel = StorePath::from_path(&target)?;
    Ok(RealStore {
        root,
        toplevel,
        legacy_toplevel,
    })
}

/// Creates [`crate::nix_state_files`] under `root` (a directory to become `/`).
pub fn materialize_state_files(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for e in crate::nix_state_files() {
        let p = root.join(e.path);
        match e.kind {
            StateEntryKind::Dir => std::fs::create_dir_all(&p).map_err(io("creating", &p))?,
            StateEntryKind::File { contents } => {
                std::fs::write(&p, contents).map_err(io("writing", &p))?
            }
            StateEntryKind::Symlink { target } => {
                std::os::unix::fs::symlink(target, &p).map_err(io("creating", &p))?;
                continue;
            }
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(e.mode))
            .map_err(io("chmod", &p))?;
    }
    Ok(())
}
