//! `ova`: an OVF package (descriptor, stream-optimized VMDK, manifest in a tar) for
//! VirtualBox and VMware.

use imgbuild_diskmap::sinks::Sha256Sink;
use imgbuild_diskmap::Sink;

use super::hashing::{hashing_at, sha256_of, Hashing};
use super::kind::{ImageWriter, Levels, OutputKind, WriterInput, Written};
use super::vmdk::DEFLATE;
use super::Compression;
use crate::{Error, Result};

/// The OVA package.
pub(crate) struct Ova;

impl OutputKind for Ova {
    fn name(&self) -> &'static str {
        "ova"
    }
    fn extension(&self) -> &'static str {
        "ova"
    }
    fn levels(&self) -> Option<Levels> {
        Some(DEFLATE)
    }
    fn compressed(&self, _: Compression) -> bool {
        true
    }
    fn writer<'f>(&self, w: &WriterInput<'_, 'f>) -> Result<Box<dyn ImageWriter + 'f>> {
        package_writer(w, imgbuild_container::Members::ova())
    }
}

/// The writer of an OVF package in a tar whose members `members` names (an OVA, a Vagrant
/// box).
pub(super) fn package_writer<'f>(
    w: &WriterInput<'_, 'f>,
    members: imgbuild_container::Members,
) -> Result<Box<dyn ImageWriter + 'f>> {
    let ova = imgbuild_container::Ova::with_members(w.params, &machine_name(w.toplevel), members)?;
    // The VMDK is written at its place in the package; the rest of it after.
    let at = hashing_at(w.file, ova.vmdk_offset());
    let level = w.level.unsigned_abs();
    let vmdk = imgbuild_container::Vmdk::new(w.map, w.params, at, w.workers, level)?;
    Ok(Box::new(Writer {
        vmdk,
        ova,
        file: w.file,
    }))
}

struct Writer<'f> {
    vmdk: imgbuild_container::Vmdk<Hashing<'f>>,
    ova: imgbuild_container::Ova,
    file: &'f imgbuild_blockio::OutputFile,
}

impl ImageWriter for Writer<'_> {
    fn sink(&mut self) -> &mut dyn Sink {
        &mut self.vmdk
    }
    fn finish(self: Box<Self>, _disk: &Sha256Sink) -> Result<Written> {
        let (vmdk_len, vmdk_sha) = self.vmdk.into_inner().digest();
        let size = self.ova.finish(self.file.file(), vmdk_len, &vmdk_sha)?;
        let sha256 = sha256_of(self.file).map_err(|source| Error::Io {
            op: "writing",
            path: self.file.tmp().to_path_buf(),
            source,
        })?;
        Ok(Written { size, sha256 })
    }
}

/// The virtual machine's name in an OVA: the toplevel's host name
/// (`nixos-system-HOST-VERSION`), else `nixos`.
pub(super) fn machine_name(toplevel: &str) -> String {
    let base = toplevel.rsplit('/').next().unwrap_or_default();
    let name = base.split_once('-').map_or("", |(_, n)| n);
    let host = name.strip_prefix("nixos-system-").and_then(|rest| {
        let cut = rest
            .char_indices()
            .filter(|&(i, c)| c == '-' && rest[i + 1..].starts_with(|d: char| d.is_ascii_digit()))
            .map(|(i, _)| i)
            .next_back()?;
        Some(&rest[..cut])
    });
    match host {
        Some(h)
            if !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            h.to_string()
        }
        _ => "nixos".to_string(),
    }
}

#[cfg(test)]
#[test]
fn machine_names_come_from_the_toplevel() {
    let n = |t: &str| machine_name(t);
    assert_eq!(
        n("/nix/store/f5irh71dz347dzz5siijm85f1sbgmawj-nixos-system-web-2-24.05.20240601.b3b2b28"),
        "web-2"
    );
    assert_eq!(n("/nix/store/aaaa-nixos-system-x-25.11pre"), "x");
    assert_eq!(n("/nix/store/aaaa-something-else"), "nixos");
    assert_eq!(n("/nix/store/aaaa-nixos-system-25.11"), "nixos");
}
