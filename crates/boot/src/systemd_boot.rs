//! systemd-boot: `bootctl install` + nixpkgs' `systemd-boot-builder.py`.
//!
//! What differs between NixOS releases is data in [`crate::release`]. Followed sources
//! (NixOS/nixpkgs, 2024-2026):
//! `nixos/modules/system/boot/loader/systemd-boot/systemd-boot-builder.py` (the versions named
//! in [`crate::release`]: `copy_from_file` / `boot_path`, `write_loader_conf`, `BOOT_ENTRY` /
//! `boot_file`, `BootFile.from_entry`) and `systemd-boot.nix`
//! (`timeout = null` -> `menu-force`, `nixosDir = "/EFI/nixos"`, `sortKey` default `nixos`);
//! systemd `src/bootctl/bootctl-install.c` (`esp_subdirs`, `dollar_boot_subdirs`,
//! `entries.srel`, the removable-media copy `EFI/BOOT/BOOT<ARCH>.EFI`).

use sha2::{Digest, Sha256};

use crate::release::{EfiNames, Facts, NullTimeout, SdBootStyle};
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
    /// `boot.loader.timeout` (default 5); `None` is `null` (see [`NullTimeout`]).
    pub timeout: Option<i64>,
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
    /// `boot.loader.systemd-boot.bootCounting.tries` when boot counting is on (only where the
    /// release has it, [`SdBootStyle::ContentHash`]): the new entry is `nixos-<hash>+<tries>.conf`.
    pub boot_counting: Option<u32>,
    /// The release whose builder to follow.
    pub facts: Facts,
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
            boot_counting: None,
            facts: Facts::default(),
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
    efi_name(EfiNames::StoreDir, what, store_path)
}

/// [`systemd_boot_file_name`] as the given release's builder computes it.
fn efi_name(names: EfiNames, what: &'static str, store_path: &str) -> Result<String> {
    let (top, rest) = split_store_path(what, store_path)?;
    let file = rest.rsplit('/').next().unwrap_or(rest);
    Ok(match (names, rest.is_empty()) {
        (EfiNames::StoreDir, true) => format!("{top}.efi"),
        (EfiNames::StoreDir, false) => format!("{top}-{file}.efi"),
        // basename(dirname(path)) + "-" + basename(path).
        (EfiNames::ParentDir, true) => format!("store-{top}.efi"),
        (EfiNames::ParentDir, false) => {
            let parent = rest.rsplit('/').nth(1).unwrap_or(top);
            format!("{parent}-{file}.efi")
        }
    })
}

/// The ESP after installing systemd-boot for one generation: directories, the two boot
/// loader copies, kernel/initrd (+ device tree) under `EFI/nixos/`, `loader/loader.conf`,
/// the entry under `loader/entries/` (named as [`SdBootOptions::facts`]' release names it,
/// see [`SdBootStyle`]) and `loader/entries.srel`.
///
/// `systemd_boot_efi` is the logical path of
/// `<systemd>/lib/systemd/boot/efi/systemd-boot<arch>.efi` matching `entry.system`.
/// Not written (deliberately): `loader/random-seed` (would be shared by every copy of the
/// image; NixOS creates it at first boot) and `machine-id` lines / entry-token directories
/// (24.05's builder made up a machine id when the system had none; later ones write the line
/// only when `/etc/machine-id` exists).
///
/// The result is sorted by path, so every directory comes before its contents.
pub fn systemd_boot_esp(
    entry: &BootEntry,
    systemd_boot_efi: String,
    opts: &SdBootOptions,
) -> Result<Vec<BootFile>> {
    systemd_boot_esp_with_specialisations(entry, &[], systemd_boot_efi, opts).map(|e| e.files)
}

/// What [`systemd_boot_esp_with_specialisations`] writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Esp {
    /// Every file and directory, sorted by path.
    pub files: Vec<BootFile>,
    /// The generation's own entry, `loader/entries/<name>` (the one `loader.conf` names).
    pub entry: String,
}

/// A specialisation of the generation (bootspec `org.nixos.specialisation.v1`): the builder
/// writes an entry for each, titled `<distro> (<name>)`, after the generation's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Specialisation {
    /// Its name (the key in `org.nixos.specialisation.v1`).
    pub name: String,
    /// Its own boot entry (kernel, initrd, init, parameters, label of the child toplevel).
    pub entry: BootEntry,
    /// Its bootspec's `org.nixos.systemd-boot.sortKey`; `None` means `nixos`.
    pub sort_key: Option<String>,
}

/// [`systemd_boot_esp`] with an entry per specialisation too (in the order given: the
/// builder follows boot.json, whose keys are sorted). `loader.conf` names the generation's
/// own entry.
pub fn systemd_boot_esp_with_specialisations(
    entry: &BootEntry,
    specialisations: &[Specialisation],
    systemd_boot_efi: String,
    opts: &SdBootOptions,
) -> Result<Esp> {
    let arch = efi_arch(&entry.system)?;
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
    let main = Titled {
        title: opts.distro_name.clone(),
        sort_key: opts.sort_key.as_deref(),
        specialisation: None,
    };
    let id = add_entry(&mut files, entry, &main, opts)?;
    for s in specialisations {
        if s.name.is_empty() || s.name.contains('/') {
            return Err(Error::BadText {
                what: "specialisation name",
                value: s.name.clone(),
            });
        }
        check_line("specialisation name", &s.name, false)?;
        let titled = Titled {
            title: format!("{} ({})", opts.distro_name, s.name),
            sort_key: s.sort_key.as_deref(),
            specialisation: Some(&s.name),
        };
        add_entry(&mut files, &s.entry, &titled, opts)?;
    }
    files.push(BootFile::text(
        "loader/loader.conf",
        loader_conf(opts, &id)?,
    ));
    files.push(BootFile {
        path: "loader/entries.srel".to_owned(),
        content: Content::Text(b"type1\n".to_vec()),
    });
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Esp {
        files,
        entry: format!("loader/entries/{}", id.file_name),
    })
}

/// What tells one entry of a generation from another.
struct Titled<'a> {
    /// `title` line: the distro name, `(<specialisation>)` appended for one.
    title: String,
    /// `None`: `nixos`.
    sort_key: Option<&'a str>,
    specialisation: Option<&'a str>,
}

/// Adds an entry's kernel, initrd and device tree copies (once: entries share them) and the
/// entry itself; returns its id.
fn add_entry(
    files: &mut Vec<BootFile>,
    entry: &BootEntry,
    titled: &Titled,
    opts: &SdBootOptions,
) -> Result<EntryId> {
    let initrd = entry.required_initrd()?;
    let names = opts.facts.efi_names;
    let kernel_name = efi_name(names, "kernel", &entry.kernel)?;
    let initrd_name = efi_name(names, "initrd", initrd)?;
    let devicetree_name = entry
        .devicetree
        .as_deref()
        .map(|d| efi_name(names, "devicetree", d))
        .transpose()?;
    let mut copies = vec![
        (&kernel_name, entry.kernel.as_str()),
        (&initrd_name, initrd),
    ];
    if let (Some(name), Some(dt)) = (&devicetree_name, &entry.devicetree) {
        copies.push((name, dt));
    }
    for (name, store_path) in copies {
        let path = format!("EFI/nixos/{name}");
        if !files.iter().any(|f| f.path == path) {
            files.push(BootFile::store_file(path, store_path));
        }
    }
    let text = entry_conf(
        entry,
        opts,
        titled,
        &kernel_name,
        &initrd_name,
        devicetree_name.as_deref(),
    )?;
    let id = EntryId::new(opts, titled.specialisation, &text)?;
    let path = format!("loader/entries/{}", id.file_name);
    if files.iter().any(|f| f.path == path) {
        // Two entries of the same text (a specialisation identical to its parent): the
        // builder writes the file once.
        return Ok(id);
    }
    files.push(BootFile::text(path, text));
    Ok(id)
}

/// The entry's file name and the id `loader.conf` names it by (the name without boot
/// counters).
struct EntryId {
    file_name: String,
    id: String,
}

impl EntryId {
    fn new(opts: &SdBootOptions, specialisation: Option<&str>, text: &str) -> Result<EntryId> {
        match opts.facts.sd_boot {
            SdBootStyle::GenerationNames => {
                if let Some(tries) = opts.boot_counting {
                    return Err(Error::NoBootCounting {
                        release: opts.facts.release.to_string(),
                        tries,
                    });
                }
                // generation_conf_filename(None, N, specialisation).
                let name = match specialisation {
                    Some(s) => format!(
                        "nixos-generation-{}-specialisation-{s}.conf",
                        opts.generation
                    ),
                    None => format!("nixos-generation-{}.conf", opts.generation),
                };
                Ok(EntryId {
                    file_name: name.clone(),
                    id: name,
                })
            }
            SdBootStyle::ContentHash => {
                let hash = Sha256::digest(text.as_bytes());
                let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
                let counters = opts
                    .boot_counting
                    .map(|t| format!("+{t}"))
                    .unwrap_or_default();
                Ok(EntryId {
                    file_name: format!("nixos-{hex}{counters}.conf"),
                    id: format!("nixos-{hex}.conf"),
                })
            }
        }
    }
}

/// `write_loader_conf`: [timeout], default (or preferred + default glob), [editor 0],
/// [reboot-for-bitlocker yes], console-mode.
fn loader_conf(opts: &SdBootOptions, id: &EntryId) -> Result<String> {
    check_line("console mode", &opts.console_mode, false)?;
    let mut s = match (opts.timeout, opts.facts.null_timeout) {
        (Some(t), _) => format!("timeout {t}\n"),
        (None, NullTimeout::MenuForce) => "timeout menu-force\n".to_owned(),
        (None, NullTimeout::NoLine) => String::new(),
    };
    if opts.boot_counting.is_some() {
        s.push_str(&format!("preferred {}\ndefault nixos-*\n", id.id));
    } else {
        s.push_str(&format!("default {}\n", id.id));
    }
    if !opts.editor {
        s.push_str("editor 0\n");
    }
    if opts.reboot_for_bitlocker {
        s.push_str("reboot-for-bitlocker yes\n");
    }
    s.push_str(&format!("console-mode {}\n", opts.console_mode));
    Ok(s)
}

/// The entry's text, in the release's order (no `machine-id`: see [`systemd_boot_esp`]).
fn entry_conf(
    entry: &BootEntry,
    opts: &SdBootOptions,
    titled: &Titled,
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
    let sort_key = titled.sort_key.unwrap_or("nixos");
    check_line("sort key", sort_key, false)?;
    check_line("distro name", &opts.distro_name, false)?;
    check_line("label", &entry.label, true)?;
    // Old builders: "init=%s " % init + " ".join(params); new: " ".join([init=...] + params).
    let mut options = command_line(&entry.init, &entry.kernel_params)?;
    let title = format!("title {}", titled.title);
    let sort_key = format!("sort-key {sort_key}");
    let version = format!(
        "version Generation {} {}, built on {date}",
        opts.generation, entry.label
    );
    let devicetree = devicetree_name.map(|dt| format!("devicetree /EFI/nixos/{dt}"));
    let mut lines = vec![title];
    if opts.facts.sd_boot == SdBootStyle::GenerationNames {
        lines.push(sort_key.clone());
    } else if entry.kernel_params.is_empty() {
        options.truncate(options.trim_end_matches(' ').len());
    }
    lines.extend([
        version,
        format!("linux /EFI/nixos/{kernel_name}"),
        format!("initrd /EFI/nixos/{initrd_name}"),
        format!("options {options}"),
    ]);
    lines.extend(devicetree);
    Ok(match opts.facts.sd_boot {
        SdBootStyle::GenerationNames => lines.iter().map(|l| format!("{l}\n")).collect(),
        SdBootStyle::ContentHash => {
            lines.push(sort_key);
            lines.join("\n")
        }
    })
}
