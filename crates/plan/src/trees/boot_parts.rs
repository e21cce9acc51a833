//! The boot partitions' trees: the EFI system partition and the Raspberry Pi firmware.

use super::*;

/// The systemd-boot ESP; `extra_params` (a verity store's `usrhash=`) are added to every
/// specialisation's entry, as `entry` already has them.
pub(super) fn esp_tree(
    cx: &Context,
    inputs: &Inputs,
    entry: &boot::BootEntry,
    extra_params: &[String],
    choice: &mut Choice,
) -> Result<Tree> {
    let time = cx.time;
    let arch = if inputs.bootspec.system.starts_with("aarch64") {
        "aa64"
    } else {
        "x64"
    };
    let efi_rel = format!("systemd/lib/systemd/boot/efi/systemd-boot{arch}.efi");
    let link = inputs.toplevel.join(&efi_rel);
    let efi = inputs
        .store
        .canonicalize_logical(&link)
        .map_err(|_| Error::NoSystemdBoot(link.display().to_string()))?;
    let sort_key = sort_key_of(&inputs.bootspec);
    // The builder writes an entry for each specialisation of the generation, too.
    let specialisations = inputs
        .bootspec
        .specialisations
        .iter()
        .map(|(name, child)| {
            let mut entry = crate::inputs::boot_entry(cx.format, child, None)?;
            entry.kernel_params.extend(extra_params.iter().cloned());
            entry.devicetree = devicetree(child, choice)?;
            Ok(boot::Specialisation {
                name: name.clone(),
                entry,
                sort_key: sort_key_of(child),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let o = boot::SdBootOptions {
        timeout: choice.timeout,
        console_mode: choice.console_mode.clone(),
        editor: choice.editor,
        reboot_for_bitlocker: choice.reboot_for_bitlocker,
        generation: 1,
        build_date: imgbuild_units::date(time),
        sort_key,
        distro_name: choice.distro_name.clone(),
        boot_counting: choice.boot_counting,
        facts: choice.facts,
    };
    let esp = boot::systemd_boot_esp_with_specialisations(
        entry,
        &specialisations,
        efi.to_path_buf().display().to_string(),
        &o,
    )?;
    let mut tree = Tree::new(dir_meta(time));
    if cx.format.bootloader.uki {
        // `entry`'s kernel parameters already end in the plan's extra ones (a verity
        // store's `usrhash=`), so the UKI's .cmdline carries them.
        // An A/B appliance's UKI is named as systemd-sysupdate replaces it.
        let file = match crate::sysupdate::record_for(cx.format, &inputs.bootspec)? {
            Some(rec) => rec.uki_file(),
            None => super::uki::file_name(&inputs.bootspec)?,
        };
        let built = super::uki::build(inputs, entry, &file, &[])?;
        let files = boot::uki_esp(esp, &file)?;
        add_boot_files(&mut tree, "/", &files, &inputs.store, time)?;
        let path = format!("/{}", built.note.path);
        tree.insert_path(path.as_bytes(), Node::bytes(file_meta(time), built.bytes))
            .map_err(tree_err(path))?;
        choice.note.uki = Some(built.note);
    } else {
        choice.note.entry = Some(esp.entry);
        add_boot_files(&mut tree, "/", &esp.files, &inputs.store, time)?;
    }
    // Signed last, so a UKI is among the ESP's PE files.
    if let Some(sb) = &cx.opts.secure_boot {
        let efi = efi.to_path_buf().display().to_string();
        choice.note.secure_boot = Some(crate::secure_boot::apply(time, sb, &mut tree, &efi)?);
    }
    Ok(tree)
}

pub(super) fn firmware_tree(cx: &Context, inputs: &Inputs) -> Result<Tree> {
    let (opts, time) = (cx.opts, cx.time);
    let mut tree = Tree::new(dir_meta(time));
    let root = imgbuild_fstree::ROOT;
    let dir: PathBuf = match (
        inputs
            .bootspec
            .imgbuild
            .as_ref()
            .and_then(|e| e.firmware.as_ref()),
        &opts.firmware,
    ) {
        (_, Some(host)) => host.clone(),
        (Some(sub), None) => resolve(&inputs.store, &sub.to_path_buf())?,
        (None, None) => return Err(Error::NoFirmware),
    };
    let md = std::fs::metadata(&dir).map_err(|source| Error::Io {
        op: "reading the firmware directory",
        path: dir.clone(),
        source,
    })?;
    if !md.is_dir() {
        return Err(Error::Io {
            op: "reading the firmware directory",
            path: dir.clone(),
            source: std::io::Error::other("not a directory"),
        });
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .and_then(|rd| {
            rd.map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<Vec<_>>>()
        })
        .map_err(|source| Error::Io {
            op: "reading the firmware directory",
            path: dir.clone(),
            source,
        })?;
    names.sort();
    // A --firmware directory's own symlinks may point inside it; a store one's stay in the store.
    let base = match &opts.firmware {
        Some(_) => Some(std::fs::canonicalize(&dir).map_err(|source| Error::Io {
            op: "reading the firmware directory",
            path: dir.clone(),
            source,
        })?),
        None => None,
    };
    for n in &names {
        use std::os::unix::ffi::OsStrExt;
        let cx = Resolve {
            store: &inputs.store,
            base: base.as_deref(),
            time,
        };
        copy_resolved(&cx, &mut tree, root, n.as_bytes(), &dir.join(n), 0)?;
    }
    if tree.lookup(b"config.txt").is_none() {
        tree.insert(
            root,
            b"config.txt",
            imgbuild_fstree::Node::bytes(file_meta(time), boot::rpi_config_txt().as_bytes()),
        )
        .map_err(|source| Error::Tree {
            what: "config.txt".into(),
            source,
        })?;
    }
    check_firmware(&tree, &dir)?;
    Ok(tree)
}

/// The Pi firmware's `config.txt` (a few KiB in practice): read whole, so bounded.
const CONFIG_TXT: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "firmware config.txt",
    max_bytes: 1 << 20,
};

/// Every file config.txt makes the firmware load (for the boards it has sections for) must be
/// in the partition: a missing `u-boot.bin` or device tree is a board that does not boot.
fn check_firmware(tree: &Tree, dir: &Path) -> Result<()> {
    let config = tree
        .lookup(b"config.txt")
        .expect("firmware_tree adds config.txt");
    let text = match &tree.node(config).kind {
        Kind::File(FileData::Bytes(b)) => String::from_utf8_lossy(b).into_owned(),
        Kind::File(FileData::Host { path, .. }) => {
            let bytes = imgbuild_blockio::read_input(path, CONFIG_TXT)?;
            String::from_utf8_lossy(&bytes).into_owned()
        }
        _ => {
            return Err(Error::ConfigTxtNotAFile {
                dir: dir.to_path_buf(),
            })
        }
    };
    let names: Vec<String> = tree
        .children(imgbuild_fstree::ROOT)
        .map(|(n, _)| String::from_utf8_lossy(n).to_ascii_lowercase())
        .collect();
    let missing: Vec<String> = boot::rpi_needed_files(&text)
        .into_iter()
        .filter(|f| !names.contains(&f.name.to_ascii_lowercase()))
        .map(|f| format!("{} ({})", f.name, f.why))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::FirmwareIncomplete {
            dir: dir.to_path_buf(),
            missing: missing.join(", "),
        })
    }
}
