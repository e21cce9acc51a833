//! systemd-boot: `bootctl install` + nixpkgs' `systemd-boot-builder.py`.
//!
//! Followed sources (NixOS/nixpkgs, 2025-2026):
//! `nixos/modules/system/boot/loader/systemd-boot/systemd-boot-builder.py` (pathlib version:
//! `copy_from_file`, `write_loader_conf`, `BOOT_ENTRY`, `write_entry`) and `systemd-boot.nix`
//! (`timeout = null` -> `menu-force`, `nixosDir = "/EFI/nixos"`, `sortKey` default `nixos`);
//! systemd `src/bootctl/bootctl-install.c` (`esp_subdirs`, `dollar_boot_subdirs`,
//! `entries.srel`, the removable-media copy `EFI/BOOT/BOOT<ARCH>.EFI`).

use crate::{
    check_line, command_line, split_store_path, BootEntry, BootFile, Content, Error, Result,
};

/// Directories `bootctl install` creates (`esp_subdirs` + `dollar_boot_subdirs`) plus the two
/// the NixOS builder creates (`EFI/nixos`, `EFI/nixos/.extra-files`).
///
/// `loader/keys` is in bootctl's `esp_subdirs` since the Secure Boot key enrollment work
/// (systemd 252); every NixOS release with a current builder ships a newer systemd, so it is
/// always included.
pub const BOOT_LOADER_SPEC_DIRS: &[&str] = &[
    "EFI",
    "EFI/BOOT",
    "EFI/Linux",
    "EFI/nixos",
    "EFI/nixos/.extra-files",
    "EFI/systemd",
    "loader",
    "loader/entries",
    "loader/keys",
];

/// Options of `boot.loader.systemd-boot` / `boot.loader` that shape the ESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SdBootOptions {
    /// `boot.loader.timeout` (default 5); `None` writes `timeout menu-force`.
    pub timeout: Option<u32>,
    /// `boot.loader.systemd-boot.consoleMode` (default `keep`).
    pub console_mode: String,
    /// `boot.loader.systemd-boot.editor` (default true; false writes `editor 0`).
    pub editor: bool,
    /// `boot.loader.systemd-boot.rebootForBitlocker` (default false).
    pub reboot_for_bitlocker: bool,
    /// Generation number of the entry (1 for a fresh image).
    pub generation: u32,
    /// `YYYY-MM-DD` shown in the entry's `version` line. The builder takes the ctime of the
    /// generation link in local time; the caller computes it (e.g. from `SOURCE_DATE_EPOCH`).
    pub build_date: String,
    /// Bootspec `org.nixos.systemd-boot.sortKey`; `None` means the default `nixos`.
    pub sort_key: Option<String>,
    /// `system.nixos.distroName` (default `NixOS`), the entry title.
    pub distro_name: String,
}

impl Default for SdBootOptions {
    fn default() -> Self {
        Self {
            timeout: Some(5),
            console_mode: "keep".to_owned(),
            editor: true,
            reboot_for_bitlocker: false,
            generation: 1,
            build_date: "1970-01-01".to_owned(),
            sort_key: None,
            distro_name: "NixOS".to_owned(),
        }
    }
}

/// UEFI architecture suffix of a Nix `system` (`x86_64-linux` -> `x64`), as in systemd's
/// `EFI_MACHINE_TYPE_NAME`.
pub fn efi_arch(system: &str) -> Result<&'static str> {
    let cpu = system.split_once('-').map_or(system, |(cpu, _)| cpu);
    Ok(match cpu {
        "x86_64" => "x64",
        "i686" | "i586" | "i486" | "i386" => "ia32",
        "aarch64" => "aa64",
        "armv7l" | "armv7a" | "armv6l" | "armv5tel" => "arm",
        "riscv64" => "riscv64",
        "loongarch64" => "loongarch64",
        _ => {
            return Err(Error::UnknownEfiArch {
                system: system.to_owned(),
            })
        }
    })
}

/// File name `copy_from_file` gives a store file under `EFI/nixos/`:
/// `<hash>-<name>-<file>.efi` for a file inside a store directory (`<file>` = the last path
/// component), `<hash>-<name>.efi` when the store path itself is the file.
pub fn systemd_boot_file_name(what: &'static str, store_path: &str) -> Result<String> {
    let (top, rest) = split_store_path(what, store_path)?;
    if rest.is_empty() {
        return Ok(format!("{top}.efi"));
    }
    let file = rest.rsplit('/').next().unwrap_or(rest);
    Ok(format!("{top}-{file}.efi"))
}

/// The ESP after installing systemd-boot for one generation: directories, the two boot
/// loader copies, kernel/initrd (+ device tree) under `EFI/nixos/`, `loader/loader.conf`,
/// `loader/entries/nixos-generation-<N>.conf` and `loader/entries.srel`.
///
/// `systemd_boot_efi` is the logical path of
/// `<systemd>/lib/systemd/boot/efi/systemd-boot<arch>.efi` matching `entry.system`.
/// Not written (deliberately): `loader/random-seed` (would be shared by every copy of the
/// image; NixOS creates it at first boot) and `machine-id` lines / entry-token directories.
///
/// The result is sorted by path, so every directory comes before its contents.
pub fn systemd_boot_esp(
    entry: &BootEntry,
    systemd_boot_efi: String,
    opts: &SdBootOptions,
) -> Result<Vec<BootFile>> {
    let arch = efi_arch(&entry.system)?;
    let initrd = entry.required_initrd()?;
    let kernel_name = systemd_boot_file_name("kernel", &entry.kernel)?;
    let initrd_name = systemd_boot_file_name("initrd", initrd)?;
    let devicetree_name = entry
        .devicetree
        .as_deref()
        .map(|d| systemd_boot_file_name("devicetree", d))
        .transpose()?;

    let mut files: Vec<BootFile> = BOOT_LOADER_SPEC_DIRS
        .iter()
        .map(|d| BootFile::dir(d))
        .collect();
    files.push(BootFile::store_file(
        format!("EFI/systemd/systemd-boot{arch}.efi"),
        &systemd_boot_efi,
    ));
    files.push(BootFile::store_file(
        format!("EFI/BOOT/BOOT{}.EFI", arch.to_ascii_uppercase()),
        &systemd_boot_efi,
    ));
    files.push(BootFile::store_file(
        format!("EFI/nixos/{kernel_name}"),
        &entry.kernel,
    ));
    files.push(BootFile::store_file(
        format!("EFI/nixos/{initrd_name}"),
        initrd,
    ));
    if let (Some(name), Some(dt)) = (&devicetree_name, &entry.devicetree) {
        files.push(BootFile::store_file(format!("EFI/nixos/{name}"), dt));
    }
    files.push(BootFile::text("loader/loader.conf", loader_conf(opts)?));
    files.push(BootFile::text(
        format!("loader/entries/{}", entry_file_name(opts.generation)),
        entry_conf(
            entry,
            opts,
            &kernel_name,
            &initrd_name,
            devicetree_name.as_deref(),
        )?,
    ));
    files.push(BootFile {
        path: "loader/entries.srel".to_owned(),
        content: Content::Text(b"type1\n".to_vec()),
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// `generation_conf_filename(None, N, None)`.
fn entry_file_name(generation: u32) -> String {
    format!("nixos-generation-{generation}.conf")
}

/// `write_loader_conf`: timeout, default, [editor 0], [reboot-for-bitlocker yes], console-mode.
fn loader_conf(opts: &SdBootOptions) -> Result<String> {
    check_line("console mode", &opts.console_mode, false)?;
    let timeout = opts
        .timeout
        .map_or_else(|| "menu-force".to_owned(), |t| t.to_string());
    let mut s = format!(
        "timeout {timeout}\ndefault {}\n",
        entry_file_name(opts.generation)
    );
    if !opts.editor {
        s.push_str("editor 0\n");
    }
    if opts.reboot_for_bitlocker {
        s.push_str("reboot-for-bitlocker yes\n");
    }
    s.push_str(&format!("console-mode {}\n", opts.console_mode));
    Ok(s)
}

/// `BOOT_ENTRY` + the optional `devicetree` line (no `machine-id`: see [`systemd_boot_esp`]).
fn entry_conf(
    entry: &BootEntry,
    opts: &SdBootOptions,
    kernel_name: &str,
    initrd_name: &str,
    devicetree_name: Option<&str>,
) -> Result<String> {
    let date = &opts.build_date;
    let b = date.as_bytes();
    let date_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !date_ok {
        return Err(Error::BadDate { date: date.clone() });
    }
    let sort_key = opts.sort_key.as_deref().unwrap_or("nixos");
    check_line("sort key", sort_key, false)?;
    check_line("distro name", &opts.distro_name, false)?;
    check_line("label", &entry.label, true)?;
    let options = command_line(&entry.init, &entry.kernel_params)?;
    let mut s = format!(
        "title {title}\nsort-key {sort_key}\nversion Generation {generation} {label}, built on {date}\n\
         linux /EFI/nixos/{kernel_name}\ninitrd /EFI/nixos/{initrd_name}\noptions {options}\n",
        title = opts.distro_name,
        generation = opts.generation,
        label = entry.label,
    );
    if let Some(dt) = devicetree_name {
        s.push_str(&format!("devicetree /EFI/nixos/{dt}\n"));
    }
    Ok(s)
}
