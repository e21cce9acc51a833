//! Which NixOS release a closure is, and what that release's boot loader installers write
//! differently: the facts as data, one [`Facts`] per release.
//!
//! Sources (NixOS/nixpkgs, read for facts):
//! - `nixos/modules/system/boot/loader/systemd-boot/systemd-boot-builder.py` in three shapes:
//!   the `os.path` version with `if TIMEOUT != ""` (24.05), the pathlib version writing
//!   `nixos-generation-<N>.conf` (24.11 to 26.05), and the version of PR #447173 "Reinstate
//!   boot counting" writing `nixos-<sha256 of the entry>.conf` (26.11; the 26.11 release notes,
//!   `rl-2611.section.md`, "boot loader entries ... are now named `nixos-<content-hash>.conf`
//!   instead of `nixos-generation-<n>.conf`"). The earlier boot counting attempts (#273062,
//!   #330017) were reverted (#280147, #334526) before any release branched.
//! - `systemd-boot.nix`: `timeout = null` is written as `menu-force` since PR #201202, merged
//!   in August 2024 (after 24.05 branched; 24.05 leaves the `timeout` line out).
//! - `generic-extlinux-compatible/extlinux-conf-builder.sh`: PR #318778 (June 2024, after
//!   24.05) moved `TIMEOUT` before `MENU TITLE` and made a zero timeout `TIMEOUT 1` without a
//!   menu; before it, `MENU TITLE` came first and zero was `TIMEOUT -10`.

use std::fmt;

/// A NixOS release, `YY.MM` (`26.11`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Release {
    /// Two-digit year.
    pub year: u8,
    /// Month, 1 to 12 (05 and 11 for releases).
    pub month: u8,
}

impl Release {
    /// `YY.MM`.
    pub const fn new(year: u8, month: u8) -> Release {
        Release { year, month }
    }

    /// The first `NN.MM` in `text`: two digits, a dot, two digits (month 01 to 12), not part
    /// of a longer number and not preceded by a dot (so the `12.10` of kernel `6.12.10` is
    /// not one). `26.11.20261201.abcdef0` and `NixOS Zokor 26.11.2026 (Linux 6.18)` give
    /// 26.11.
    pub fn find(text: &str) -> Option<Release> {
        let b = text.as_bytes();
        let digit = |i: usize| b.get(i).is_some_and(u8::is_ascii_digit);
        (0..b.len()).find_map(|i| {
            let starts =
                digit(i) && digit(i + 1) && (i == 0 || !(digit(i - 1) || b[i - 1] == b'.'));
            let shape = starts && b.get(i + 2) == Some(&b'.') && digit(i + 3) && digit(i + 4);
            if !shape || digit(i + 5) {
                return None;
            }
            let year = (b[i] - b'0') * 10 + (b[i + 1] - b'0');
            let month = (b[i + 3] - b'0') * 10 + (b[i + 4] - b'0');
            (1..=12).contains(&month).then_some(Release { year, month })
        })
    }

    /// The facts for this release, and how well they fit: a known release, or the nearest
    /// known one (the newest for a future release, the oldest for an older one).
    pub fn facts(self) -> (Facts, Fit) {
        let newest = RELEASES[RELEASES.len() - 1];
        if let Some(f) = RELEASES.iter().find(|f| f.release == self) {
            return (*f, Fit::Known);
        }
        if self > newest.release {
            return (newest, Fit::Newer);
        }
        match RELEASES.iter().rev().find(|f| f.release < self) {
            Some(f) => (*f, Fit::Between),
            None => (RELEASES[0], Fit::Older),
        }
    }
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}.{:02}", self.year, self.month)
    }
}

/// How a release was matched to [`Facts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// A release in [`RELEASES`].
    Known,
    /// Newer than every known release: the newest release's facts.
    Newer,
    /// Between two known releases (a pre-release such as `26.08`): the older one's facts.
    Between,
    /// Older than every known release: the oldest known release's facts.
    Older,
}

/// What the systemd-boot builder names entries and writes in `loader.conf`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SdBootStyle {
    /// `loader/entries/nixos-generation-<N>.conf`, `sort-key` the second line, the text
    /// ending in a newline, `options init=<init> <params>` (a trailing space without
    /// parameters), `default nixos-generation-<N>.conf`.
    GenerationNames,
    /// `loader/entries/nixos-<sha256 hex of the text>.conf` (`+<tries>` before `.conf` with
    /// boot counting), `sort-key` the last line, lines joined by `\n` with none at the end,
    /// `options` joined by single spaces; `default nixos-<hash>.conf`, or with boot counting
    /// `preferred nixos-<hash>.conf` then `default nixos-*`.
    ContentHash,
}

/// How `loader.conf` says `boot.loader.timeout = null`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NullTimeout {
    /// No `timeout` line (systemd-boot's default, 0, applies).
    NoLine,
    /// `timeout menu-force`.
    MenuForce,
}

/// How the systemd-boot builder names copies under `EFI/nixos/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EfiNames {
    /// `<parent directory name>-<file name>.efi` (24.05's `os.path` version).
    ParentDir,
    /// `<hash>-<name>-<file name>.efi` from the store path, `<hash>-<name>.efi` when the
    /// store path is the file (pathlib versions).
    StoreDir,
}

/// The header of extlinux.conf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtlinuxStyle {
    /// `MENU TITLE` then `TIMEOUT`; a zero timeout is `TIMEOUT -10`.
    MenuTitleFirst,
    /// `TIMEOUT` then `MENU TITLE`; a zero timeout is `TIMEOUT 1` and no `MENU TITLE`.
    TimeoutFirst,
}

/// What one release's installers write differently from the others.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Facts {
    /// The release these facts are for.
    pub release: Release,
    /// How its systemd-boot builder names entries and writes `loader.conf`.
    pub sd_boot: SdBootStyle,
    /// How its `loader.conf` says `boot.loader.timeout = null`.
    pub null_timeout: NullTimeout,
    /// How its systemd-boot builder names copies under `EFI/nixos/`.
    pub efi_names: EfiNames,
    /// How its extlinux builder starts `extlinux.conf`.
    pub extlinux: ExtlinuxStyle,
}

const fn facts(
    year: u8,
    month: u8,
    sd_boot: SdBootStyle,
    null_timeout: NullTimeout,
    efi_names: EfiNames,
    extlinux: ExtlinuxStyle,
) -> Facts {
    Facts {
        release: Release::new(year, month),
        sd_boot,
        null_timeout,
        efi_names,
        extlinux,
    }
}

use EfiNames::{ParentDir, StoreDir};
use ExtlinuxStyle::{MenuTitleFirst, TimeoutFirst};
use NullTimeout::{MenuForce, NoLine};
use SdBootStyle::{ContentHash, GenerationNames};

/// Every release imgbuild knows, oldest first. 24.11's extlinux header is the old one: the
/// builder on master still wrote `TIMEOUT -10` in late November 2024 (nixpkgs issue #360230
/// links it), after 24.11 branched.
pub const RELEASES: &[Facts] = &[
    facts(24, 5, GenerationNames, NoLine, ParentDir, MenuTitleFirst),
    facts(24, 11, GenerationNames, MenuForce, StoreDir, MenuTitleFirst),
    facts(25, 5, GenerationNames, MenuForce, StoreDir, TimeoutFirst),
    facts(25, 11, GenerationNames, MenuForce, StoreDir, TimeoutFirst),
    facts(26, 5, GenerationNames, MenuForce, StoreDir, TimeoutFirst),
    facts(26, 11, ContentHash, MenuForce, StoreDir, TimeoutFirst),
];

impl Default for Facts {
    /// 25.11's facts: what imgbuild wrote before it followed the closure's release.
    fn default() -> Self {
        Release::new(25, 11).facts().0
    }
}
