//! The Unified Kernel Image of a `[bootloader] uki = true` format, as NixOS's
//! `nixos/modules/system/boot/uki.nix` has `ukify build` make it (`boot.uki.settings.UKI`):
//! the closure's systemd stub `<toplevel>/systemd/lib/systemd/boot/efi/linux<arch>.efi.stub`
//! (the package the ESP's systemd-boot comes from), `.osrel` from the toplevel's
//! `etc/os-release`, `.cmdline` = `init=<init> <kernelParams>` plus the caller's extra
//! arguments, `.uname` = the kernel's module directory version (`modDirVersion`: the one
//! directory of `<toplevel>/kernel-modules/lib/modules`), the kernel, the initrd, and the
//! bootspec's device tree when systemd-boot would install one. Its file name is NixOS's
//! `system.boot.loader.ukiFile` when the module recorded it in boot.json's
//! `"org.imgbuild.v1".ukiFile`, else `nixos.efi` (what NixOS names it with
//! `system.image.id` and `system.image.version` unset).
//!
//! The kernel, initrd and device tree are read into memory, at most [`MAX_PAYLOAD`] bytes
//! together: `imgbuild-uki` lays them out as external runs, but the ESP's file tree
//! (`fstree::FileData`) has no file made of pieces yet, so the whole UKI is one in-memory file.

use super::*;
use crate::bootloader::{UkiNote, UkiSection};
use imgbuild_uki as uki;
use sha2::Digest;

/// The most bytes of kernel, initrd and device tree read into memory for a UKI.
pub const MAX_PAYLOAD: u64 = 1 << 30;
/// The stub (about 100 KiB) and the os-release file.
const SMALL_FILE: imgbuild_blockio::InputKind = imgbuild_blockio::InputKind {
    what: "UKI stub or os-release",
    max_bytes: 16 << 20,
};

/// A UKI built for the ESP.
pub(crate) struct Built {
    /// The file's bytes.
    pub bytes: Arc<[u8]>,
    /// What the manifest says of it.
    pub note: UkiNote,
}

fn uki_err(what: &str) -> impl FnOnce(uki::Error) -> Error + '_ {
    move |source| Error::Uki {
        what: what.to_string(),
        source,
    }
}

/// The UKI file name: `"org.imgbuild.v1".ukiFile`, else `nixos.efi`.
pub(crate) fn file_name(spec: &BootSpec) -> Result<String> {
    Ok(recorded_file_name(spec)?.unwrap_or_else(|| "nixos.efi".into()))
}

/// `"org.imgbuild.v1".ukiFile`, when the toplevel records one.
pub(crate) fn recorded_file_name(spec: &BootSpec) -> Result<Option<String>> {
    match spec.imgbuild.as_ref().and_then(|e| e.other.get("ukiFile")) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Error::BadBootSpec {
            toplevel: spec.toplevel.to_string(),
            reason: "\"org.imgbuild.v1\".ukiFile is not a string".into(),
        }),
    }
}

/// A store file named by a logical path, read whole (within `budget`, which it lowers).
fn read_payload(
    store: &StoreRoot,
    what: &'static str,
    logical: &str,
    budget: &mut u64,
) -> Result<Vec<u8>> {
    let host = resolve(store, Path::new(logical))?;
    let kind = imgbuild_blockio::InputKind {
        what,
        max_bytes: *budget,
    };
    let size = std::fs::metadata(&host)
        .map_err(|source| Error::Io {
            op: "reading metadata of",
            path: host.clone(),
            source,
        })?
        .len();
    if size > *budget {
        return Err(Error::UkiTooBig {
            what,
            size,
            max: MAX_PAYLOAD,
        });
    }
    let bytes = imgbuild_blockio::read_input(&host, kind)?;
    *budget -= bytes.len() as u64;
    Ok(bytes)
}

/// The kernel's module directory version: the one directory below
/// `<toplevel>/kernel-modules/lib/modules`, if there is exactly one.
fn mod_dir_version(inputs: &Inputs) -> Option<String> {
    let link = inputs.toplevel.join("kernel-modules/lib/modules");
    let dir = inputs.store.canonicalize_logical(&link).ok()?;
    let host = inputs.store.host_subpath(&dir);
    let mut names: Vec<String> = std::fs::read_dir(host)
        .ok()?
        .flatten()
        .take(64)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    match names.as_slice() {
        [one] if !one.is_empty() && one.len() <= 255 => Some(one.clone()),
        _ => None,
    }
}

/// Builds the UKI of `entry`, `EFI/Linux/<file>`, with `extra` arguments appended to its
/// command line.
pub(crate) fn build(
    inputs: &Inputs,
    entry: &boot::BootEntry,
    file: &str,
    extra: &[String],
) -> Result<Built> {
    let arch = boot::efi_arch(&entry.system)?;
    let path = boot::uki_path(file)?;
    let stub_link = inputs
        .toplevel
        .join(format!("systemd/lib/systemd/boot/efi/linux{arch}.efi.stub"));
    let stub_at = inputs
        .store
        .canonicalize_logical(&stub_link)
        .map_err(|_| Error::NoUkiStub(stub_link.display().to_string()))?;
    let stub = imgbuild_blockio::read_input(&inputs.store.host_subpath(&stub_at), SMALL_FILE)?;
    let osrel_at = inputs
        .store
        .canonicalize_logical(&inputs.toplevel.join("etc/os-release"))
        .map_err(|source| Error::Nix {
            what: "resolving the toplevel's etc/os-release".into(),
            source,
        })?;
    let os_release =
        imgbuild_blockio::read_input(&inputs.store.host_subpath(&osrel_at), SMALL_FILE)?;
    let cmdline = boot::uki_cmdline(&entry.init, &entry.kernel_params, extra)?;
    let mut budget = MAX_PAYLOAD;
    let dtb = entry
        .devicetree
        .as_deref()
        .map(|d| read_payload(&inputs.store, "UKI device tree", d, &mut budget))
        .transpose()?;
    let initrd = read_payload(
        &inputs.store,
        "UKI initrd",
        entry
            .initrd
            .as_deref()
            .ok_or_else(|| boot::Error::MissingInitrd {
                toplevel: entry.toplevel.clone(),
            })?,
        &mut budget,
    )?;
    let kernel = read_payload(&inputs.store, "UKI kernel", &entry.kernel, &mut budget)?;
    let sections = uki::Sections {
        os_release,
        cmdline,
        devicetree: dtb.as_ref().map(|d| d.len() as u64),
        uname: mod_dir_version(inputs),
        initrd: initrd.len() as u64,
        linux: uki::Kernel::read(&kernel),
    };
    let parts = sections.parts(&stub).map_err(uki_err("reading the stub"))?;
    let layout = uki::assemble(&stub, &parts).map_err(uki_err("adding the sections"))?;
    let mut externals: Vec<&[u8]> = dtb.iter().map(Vec::as_slice).collect();
    externals.push(&initrd);
    externals.push(&kernel);
    let bytes = layout
        .to_vec(&externals)
        .map_err(uki_err("writing the image"))?;
    let info = uki::read(&bytes).map_err(uki_err("reading it back"))?;
    let note = UkiNote {
        path,
        size: bytes.len() as u64,
        sha256: imgbuild_diskmap::sinks::hex(&sha2::Sha256::digest(&bytes)),
        cmdline: info.cmdline.unwrap_or_default(),
        uname: info.uname,
        pretty_name: info.pretty_name,
        sections: info
            .sections
            .into_iter()
            .map(|s| UkiSection {
                name: s.name,
                offset: s.offset,
                size: s.len,
                virtual_address: s.virtual_address,
                virtual_size: s.virtual_size,
            })
            .collect(),
    };
    Ok(Built {
        bytes: bytes.into(),
        note,
    })
}
