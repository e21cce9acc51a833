//! extlinux: nixpkgs' `generic-extlinux-compatible/extlinux-conf-builder.sh`.
//!
//! Followed versions of
//! `nixos/modules/system/boot/loader/generic-extlinux-compatible/extlinux-conf-builder.sh`
//! (NixOS/nixpkgs): commit 8ee7ca3fd50f4d0e3124dbfb1ee736e8a74e0961 (after PR #318778: `menu`
//! variable, `-t 0` -> `TIMEOUT 1` without `MENU TITLE`, `TIMEOUT` before `MENU TITLE`) and
//! the version before it (`MENU TITLE` first, `-t 0` -> `TIMEOUT -10`); which release has
//! which is [`crate::release::ExtlinuxStyle`]. Entries, file names and `FDT`/`FDTDIR` are the
//! same in both.
//! During an image build there is no `/nix/var/nix/profiles`, so only `nixos-default` is
//! written.

use crate::release::ExtlinuxStyle;
use crate::{
    check_line, command_line, split_store_path, BootEntry, BootFile, Content, Error, Result,
};

/// Options of `boot.loader.generic-extlinux-compatible` / `boot.loader` used by the builder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtlinuxOptions {
    /// `boot.loader.timeout` in seconds (default 5); `None` (null) is passed as `-t -1`.
    pub timeout: Option<i32>,
    /// `hardware.deviceTree.name` (`-n`): write `FDT <dtbs>/<name>` instead of `FDTDIR`.
    pub dtb_name: Option<String>,
    /// `useGenerationDeviceTree` (default true); false passes `-r`: no FDT/FDTDIR line.
    pub use_generation_device_tree: bool,
    /// The release's header (see [`ExtlinuxStyle`]).
    pub style: ExtlinuxStyle,
}

impl Default for ExtlinuxOptions {
    fn default() -> Self {
        Self {
            timeout: Some(5),
            dtb_name: None,
            use_generation_device_tree: true,
            style: ExtlinuxStyle::TimeoutFirst,
        }
    }
}

/// The builder's `cleanName`: the store path minus `/nix/store/`, every `/` replaced by `-`
/// (`/nix/store/<h>-linux-6.12/Image` -> `<h>-linux-6.12-Image`).
pub fn extlinux_clean_name(what: &'static str, store_path: &str) -> Result<String> {
    let (top, rest) = split_store_path(what, store_path)?;
    if rest.is_empty() {
        Ok(top.to_owned())
    } else {
        Ok(format!("{top}-{}", rest.replace('/', "-")))
    }
}

/// Contents of the `/boot` directory of the root filesystem (paths relative to it):
/// `nixos/` with kernel, initrd and the dtbs directory (named by [`extlinux_clean_name`]),
/// and `extlinux/extlinux.conf` with the `nixos-default` entry.
///
/// `APPEND` uses `<toplevel>/init` like the builder (`init=$path/init`, which equals bootspec
/// `init`). The result is sorted by path, directories before their contents.
pub fn extlinux_boot(entry: &BootEntry, opts: &ExtlinuxOptions) -> Result<Vec<BootFile>> {
    let initrd = entry.required_initrd()?;
    let kernel_name = extlinux_clean_name("kernel", &entry.kernel)?;
    let initrd_name = extlinux_clean_name("initrd", initrd)?;
    let dtbs_name = entry
        .dtbs
        .as_deref()
        .map(|d| extlinux_clean_name("dtbs", d))
        .transpose()?;
    split_store_path("toplevel", &entry.toplevel)?;
    if let Some(name) = &opts.dtb_name {
        check_line("device tree name", name, false)?;
    }

    // -t: <0 -> 0 (wait forever); >0 -> tenths of a second; 0 -> `TIMEOUT 1` and no menu
    // (TimeoutFirst) or `TIMEOUT -10` (MenuTitleFirst).
    let t = opts.timeout.unwrap_or(-1);
    let menu_title = format!("MENU TITLE {}\n", "-".repeat(60));
    let header = match (opts.style, t) {
        (_, t) if t < 0 => (0, true),
        (ExtlinuxStyle::TimeoutFirst, 0) => (1, false),
        (ExtlinuxStyle::MenuTitleFirst, 0) => (-10, true),
        (_, t) => (i64::from(t) * 10, true),
    };

    let mut conf = String::from(
        "# Generated file, all changes will be lost on nixos-rebuild!\n\
         \n\
         # Change this to e.g. nixos-42 to temporarily boot to an older configuration.\n\
         DEFAULT nixos-default\n\
         \n",
    );
    let (timeout, menu) = header;
    match opts.style {
        ExtlinuxStyle::TimeoutFirst => {
            conf.push_str(&format!("TIMEOUT {timeout}\n"));
            if menu {
                conf.push_str(&menu_title);
            }
        }
        ExtlinuxStyle::MenuTitleFirst => {
            conf.push_str(&menu_title);
            conf.push_str(&format!("TIMEOUT {timeout}\n"));
        }
    }
    // addEntry $default default
    conf.push_str("\nLABEL nixos-default\n  MENU LABEL NixOS - Default\n");
    conf.push_str(&format!("  LINUX ../nixos/{kernel_name}\n"));
    conf.push_str(&format!("  INITRD ../nixos/{initrd_name}\n"));
    let init = format!("{}/init", entry.toplevel);
    conf.push_str(&format!(
        "  APPEND {}\n",
        command_line(&init, &entry.kernel_params)?
    ));
    if opts.use_generation_device_tree {
        match (&dtbs_name, &opts.dtb_name) {
            (Some(dtbs), Some(name)) => conf.push_str(&format!("  FDT ../nixos/{dtbs}/{name}\n")),
            (Some(dtbs), None) => conf.push_str(&format!("  FDTDIR ../nixos/{dtbs}\n")),
            (None, Some(name)) => {
                return Err(Error::DtbNameWithoutDtbs {
                    dtb_name: name.clone(),
                })
            }
            (None, None) => {}
        }
    }

    let mut files = vec![
        BootFile::dir("extlinux"),
        BootFile::text("extlinux/extlinux.conf", conf),
        BootFile::dir("nixos"),
        BootFile::store_file(format!("nixos/{kernel_name}"), &entry.kernel),
        BootFile::store_file(format!("nixos/{initrd_name}"), initrd),
    ];
    // The dtbs directory is copied whatever -r says (the copy precedes the check).
    if let (Some(name), Some(dir)) = (&dtbs_name, &entry.dtbs) {
        files.push(BootFile {
            path: format!("nixos/{name}"),
            content: Content::StoreTree(dir.into()),
        });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}
