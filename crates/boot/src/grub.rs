//! `/boot` as NixOS's GRUB installer leaves it for generation 1: `grub/grub.cfg` as
//! `install-grub.pl` writes it (the menu of the current system, its specialisations and the
//! "All configurations" submenu), `grub/state` (what `install-grub.pl` reads on the next
//! `nixos-rebuild switch` to decide whether to run `grub-install` again), `grub/grubenv` as
//! `grub-install` creates it, and the copies `install-grub.pl` makes (font, splash image,
//! kernels with `copyKernels`). GRUB's own module files (`grub/i386-pc/*`) and the boot code
//! are the `imgbuild-grub` crate's.
//!
//! Followed: nixpkgs' `nixos/modules/system/boot/loader/grub/install-grub.pl` as of NixOS
//! 24.05 to 26.11 (the GRUB 2-only script with `entryOptions`, `timeoutStyle`, the
//! `savedefault` function and the JSON line of the state file). Settings that need the script
//! to run programs (`users` password files, `theme`, `extraPrepareConfig`, os-prober) are
//! the caller's to refuse.

use crate::{BootEntry, BootFile, Content, Error, Result};

/// A file system as `install-grub.pl`'s `GrubFs` describes it: the `search` arguments that
/// find it (`--fs-uuid <uuid>`, `--label <label>`; empty for none) and the directory's path
/// inside it (`/boot`, or `/` when `/boot` is a file system of its own).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubFsId {
    /// `search` arguments, e.g. `--fs-uuid 0a1b...`; empty: GRUB's `$root` is used.
    pub search: String,
    /// The directory relative to the file system's root.
    pub path: String,
}

/// A specialisation of generation 1 (`<toplevel>/specialisation/<name>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubSpecialisation {
    /// Its name (the link's name).
    pub name: String,
    /// Its boot entry.
    pub entry: BootEntry,
    /// `<its toplevel>/configuration-name` (`boot.loader.grub.configurationName`), empty
    /// when unset.
    pub configuration_name: String,
    /// `<its toplevel>/nixos-version`.
    pub nixos_version: String,
    /// The date (`YYYY-MM-DD`) of the `specialisation/<name>` link (a store file: 1970-01-01).
    pub date: String,
}

/// The `boot.loader.grub` settings and the facts of the image that shape `/boot/grub`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubCfgOptions {
    /// Where `/boot` is (`bootPath`).
    pub boot: GrubFsId,
    /// Where `/nix/store` is (`storePath`).
    pub store: GrubFsId,
    /// Kernels and initrds are copied to `/boot/kernels` (`copyKernels`, or `/boot` is not
    /// on the store's file system).
    pub copy_kernels: bool,
    /// `boot.loader.timeout`; `None` (null) is written `-1`.
    pub timeout: Option<i64>,
    /// `default` (`0`, or `saved`).
    pub default: String,
    /// `timeoutStyle`.
    pub timeout_style: String,
    /// `gfxmodeEfi`, `gfxmodeBios`, `gfxpayloadEfi`, `gfxpayloadBios`.
    pub gfx: [String; 4],
    /// `entryOptions`, `subEntryOptions`.
    pub entry_options: String,
    /// See `entry_options`.
    pub sub_entry_options: String,
    /// `font`: a store file copied to `/boot/converted-font.pf2`.
    pub font: Option<String>,
    /// `splashImage`: a store file copied to `/boot/background.<ext>`.
    pub splash_image: Option<String>,
    /// `splashMode`.
    pub splash_mode: String,
    /// `backgroundColor`.
    pub background_color: Option<String>,
    /// `extraConfig`, `extraPerEntryConfig`, `extraEntries`.
    pub extra_config: String,
    /// See `extra_config`.
    pub extra_per_entry_config: String,
    /// See `extra_config`.
    pub extra_entries: String,
    /// `extraEntriesBeforeNixOS`.
    pub extra_entries_before_nixos: bool,
    /// `system.nixos.distroName`.
    pub distro_name: String,
    /// `configurationLimit`.
    pub configuration_limit: u32,
    /// `<toplevel>/nixos-version` of generation 1 (`None`: the generation is skipped in the
    /// submenu, as `install-grub.pl` skips a "corrupt" profile entry).
    pub nixos_version: Option<String>,
    /// The date (`YYYY-MM-DD`, UTC) of `/nix/var/nix/profiles/system-1-link`.
    pub generation_date: String,
    /// The specialisations of generation 1, by name.
    pub specialisations: Vec<GrubSpecialisation>,
}

/// What `/boot/grub/state` records of the install (`install-grub.pl`'s `GrubState`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrubState {
    /// `lib.getName` of the GRUB package (`grub`).
    pub name: String,
    /// `lib.getVersion` of the GRUB package (`2.12`).
    pub version: String,
    /// `no`, `both`, `only` or `neither`: which GRUBs were installed.
    pub efi: String,
    /// `boot.loader.grub.devices`.
    pub devices: Vec<String>,
    /// `boot.loader.efi.efiSysMountPoint` (`/boot` by default).
    pub efi_mount_point: String,
}

/// `/boot/grub/grubenv` as `grub-install` (`grub-editenv create`) makes it: the signature,
/// the warning line, `#` up to 1024 bytes.
pub fn grubenv() -> Vec<u8> {
    let mut env = b"# GRUB Environment Block\n# WARNING: Do not edit this file by tools other \
than grub-editenv!!!\n"
        .to_vec();
    env.resize(1024, b'#');
    env
}

/// The text of `/boot/grub/state`: name, version, EFI target, devices (comma-separated),
/// EFI mount point, then the JSON line (`extraGrubInstallArgs`, always empty here).
pub fn grub_state(s: &GrubState) -> String {
    format!(
        "{}\n{}\n{}\n{}\n{}\n{{\"extraGrubInstallArgs\":[]}}\n",
        s.name,
        s.version,
        s.efi,
        s.devices.join(","),
        s.efi_mount_point
    )
}

/// `name` and `version` of a store path's name as Nix's `parseDrvName` splits them (at the
/// first `-` followed by a character that is not a letter): `grub-2.12` gives
/// (`grub`, `2.12`).
pub fn parse_drv_name(name: &str) -> (&str, &str) {
    let b = name.as_bytes();
    for i in 0..b.len() {
        if b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()) {
            return (&name[..i], &name[i + 1..]);
        }
    }
    (name, "")
}

/// Where GRUB reads a file of `fs` at `rel` (`($drive1)/boot` + `/kernels/x`): the prefix
/// `install-grub.pl` puts before `/converted-font.pf2`, `/background.png`, `/kernels/...`.
fn under(fs: &GrubPath) -> &str {
    if fs.path == "/" {
        ""
    } else {
        &fs.path
    }
}

/// `GrubFs`'s result: the path GRUB uses (with `($driveN)` when searched) and the search
/// line (`search --set=driveN ...`, or empty).
struct GrubPath {
    path: String,
    search: String,
}

fn grub_path(fs: &GrubFsId, drive: &mut u32) -> GrubPath {
    let path = if fs.path.starts_with('/') {
        fs.path.clone()
    } else {
        format!("/{}", fs.path)
    };
    if fs.search.is_empty() {
        return GrubPath {
            path,
            search: String::new(),
        };
    }
    let p = GrubPath {
        path: format!("($drive{drive}){path}"),
        search: format!("search --set=drive{drive} {}", fs.search),
    };
    *drive += 1;
    p
}

/// Builds `grub.cfg` and collects the files its entries need copied.
struct Writer<'a> {
    o: &'a GrubCfgOptions,
    boot: GrubPath,
    store: Option<GrubPath>,
    conf: String,
    /// `/boot`-relative copies (`kernels/<name>`), in the order first needed.
    copies: Vec<BootFile>,
}

impl Writer<'_> {
    /// `copyToKernelsDir`: the path GRUB loads `store_file` from.
    fn kernel_path(&mut self, store_file: &str) -> Result<String> {
        let rest = store_file
            .strip_prefix("/nix/store/")
            .ok_or_else(|| Error::NotInStore {
                what: "kernel or initrd",
                path: store_file.to_owned(),
            })?;
        if let Some(store) = &self.store {
            return Ok(format!("{}/{rest}", store.path));
        }
        let name = rest.replace('/', "-");
        let rel = format!("kernels/{name}");
        if !self.copies.iter().any(|f| f.path == rel) {
            self.copies
                .push(BootFile::store_file(rel.clone(), store_file));
        }
        Ok(format!("{}/{rel}", under(&self.boot)))
    }

    /// `addEntry`: one `menuentry`.
    fn entry(&mut self, name: &str, e: &BootEntry, options: &str) -> Result<()> {
        let Some(initrd) = e.initrd.as_deref() else {
            // install-grub.pl skips a generation without `initrd`.
            return Ok(());
        };
        let kernel = self.kernel_path(&e.kernel)?;
        let initrd = self.kernel_path(initrd)?;
        let params = format!("init={} {}", e.init, e.kernel_params.join(" "));
        let c = &mut self.conf;
        c.push_str(&format!("menuentry \"{name}\" {options} {{\n"));
        if self.o.default == "saved" {
            c.push_str("  savedefault\n");
        }
        c.push_str(&self.boot.search);
        c.push('\n');
        if let Some(store) = &self.store {
            c.push_str(&store.search);
            c.push('\n');
        }
        if !self.o.extra_per_entry_config.is_empty() {
            c.push_str(&format!("  {}\n", self.o.extra_per_entry_config));
        }
        c.push_str(&format!("  linux {kernel} {params}\n"));
        c.push_str(&format!("  initrd {initrd}\n"));
        c.push_str("}\n\n");
        Ok(())
    }

    /// `addGeneration`: the entry, its specialisations, in a submenu unless current.
    fn generation(
        &mut self,
        name: &str,
        suffix: &str,
        entry: &BootEntry,
        options: &str,
        current: bool,
    ) -> Result<()> {
        let specs = &self.o.specialisations;
        let nested = !current && !specs.is_empty();
        if nested {
            self.conf
                .push_str(&format!("submenu \"{name}{suffix}\" --class submenu {{\n"));
        }
        let default = if specs.is_empty() { "" } else { " - Default" };
        self.entry(&format!("{name}{default}{suffix}"), entry, options)?;
        for s in specs {
            let entry_name = if s.configuration_name.is_empty() {
                format!("({} - {} - {})", s.name, s.date, s.nixos_version)
            } else {
                s.configuration_name.clone()
            };
            self.entry(&format!("{name} - {entry_name}"), &s.entry, "")?;
        }
        if nested {
            self.conf.push_str("}\n");
        }
        Ok(())
    }

    // tidy:long-fn: one template, the header of install-grub.pl's grub.cfg in its order
    fn header(&mut self) -> Vec<BootFile> {
        let o = self.o;
        let mut copies = Vec::new();
        let c = &mut self.conf;
        c.push_str("# Automatically generated.  DO NOT EDIT THIS FILE!\n");
        if let Some(store) = &self.store {
            c.push_str(&format!("\n        {}", store.search));
        }
        let default = if o.default == "saved" {
            "\"${saved_entry}\"".to_owned()
        } else {
            o.default.clone()
        };
        let timeout = o.timeout.unwrap_or(-1);
        c.push_str(&format!(
            "
    {search}
    if [ -s $prefix/grubenv ]; then
      load_env
    fi

    # ‘grub-reboot’ sets a one-time saved entry, which we process here and
    # then delete.
    if [ \"${{next_entry}}\" ]; then
      set default=\"${{next_entry}}\"
      set next_entry=
      save_env next_entry
      set timeout=1
      set boot_once=true
    else
      set default={default}
      set timeout={timeout}
    fi
    set timeout_style={style}

    function savedefault {{
        if [ -z \"${{boot_once}}\"]; then
        saved_entry=\"${{chosen}}\"
        save_env saved_entry
        fi
    }}

    # Setup the graphics stack for bios and efi systems
    if [ \"${{grub_platform}}\" = \"efi\" ]; then
      insmod efi_gop
      insmod efi_uga
    else
      insmod vbe
    fi
",
            search = self.boot.search,
            style = o.timeout_style,
        ));
        let at = under(&self.boot).to_owned();
        if let Some(font) = &o.font {
            copies.push(BootFile::store_file("converted-font.pf2", font));
            let [mode_efi, mode_bios, payload_efi, payload_bios] = &o.gfx;
            c.push_str(&format!(
                "
        insmod font
        if loadfont {at}/converted-font.pf2; then
          insmod gfxterm
          if [ \"${{grub_platform}}\" = \"efi\" ]; then
            set gfxmode={mode_efi}
            set gfxpayload={payload_efi}
          else
            set gfxmode={mode_bios}
            set gfxpayload={payload_bios}
          fi
          terminal_output gfxterm
        fi
    "
            ));
        }
        if let Some(splash) = &o.splash_image {
            let suffix = match splash.rsplit_once('.') {
                Some((_, ext)) if !ext.contains('/') && !ext.is_empty() => format!(".{ext}"),
                _ => String::new(),
            };
            let suffix = if suffix == ".jpg" {
                ".jpeg".to_owned()
            } else {
                suffix
            };
            if let Some(color) = &o.background_color {
                c.push_str(&format!(
                    "
        background_color '{color}'
        "
                ));
            }
            copies.push(BootFile::store_file(format!("background{suffix}"), splash));
            c.push_str(&format!(
                "
        insmod {module}
        if background_image --mode '{mode}' {at}/background{suffix}; then
          set color_normal=white/black
          set color_highlight=black/white
        else
          set menu_color_normal=cyan/blue
          set menu_color_highlight=white/blue
        fi
    ",
                module = suffix.trim_start_matches('.'),
                mode = o.splash_mode,
            ));
        }
        c.push_str(&o.extra_config);
        c.push_str("\n\n");
        copies
    }
}

/// `/boot` after `install-grub.pl` for generation 1 (paths relative to `/boot`):
/// `grub/grub.cfg`, `grub/state`, `grub/grubenv` (unless every device is `nodev`: then no
/// `grub-install` ran to create it) and the copies it makes.
pub fn grub_boot(
    entry: &BootEntry,
    o: &GrubCfgOptions,
    state: &GrubState,
) -> Result<Vec<BootFile>> {
    let mut drive = 1;
    let boot = grub_path(&o.boot, &mut drive);
    let store = (!o.copy_kernels).then(|| grub_path(&o.store, &mut drive));
    let mut w = Writer {
        o,
        boot,
        store,
        conf: String::new(),
        copies: Vec::new(),
    };
    let mut files = w.header();
    let distro = &o.distro_name;
    if o.extra_entries_before_nixos {
        w.conf.push_str(&format!("{}\n", o.extra_entries));
    }
    w.generation(distro, "", entry, &o.entry_options, true)?;
    if !o.extra_entries_before_nixos {
        w.conf.push_str(&format!("{}\n", o.extra_entries));
    }
    // `@bootRoot@` in what is written so far (extraEntries may use it).
    w.conf = w.conf.replace("@bootRoot@", &w.boot.path);
    w.conf.push_str(&format!(
        "submenu \"{distro} - All configurations\" --class submenu {{\n"
    ));
    if let (true, Some(version)) = (o.configuration_limit >= 1, &o.nixos_version) {
        let suffix = format!(" ({} - {version})", o.generation_date);
        w.generation(
            &format!("{distro} - Configuration 1"),
            &suffix,
            entry,
            &o.sub_entry_options,
            false,
        )?;
    }
    w.conf.push_str("}\n");
    files.insert(0, BootFile::dir("grub"));
    files.push(BootFile::text("grub/grub.cfg", std::mem::take(&mut w.conf)));
    files.push(BootFile::text("grub/state", grub_state(state)));
    // `grub-install` creates grubenv; install-grub.pl runs it for no `nodev` device.
    if state.devices.iter().any(|d| d != "nodev") {
        files.push(BootFile {
            path: "grub/grubenv".into(),
            content: Content::Text(grubenv()),
        });
    }
    if !w.copies.is_empty() {
        files.push(BootFile::dir("kernels"));
    }
    files.append(&mut w.copies);
    Ok(files)
}
