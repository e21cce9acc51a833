//! The kexec tarball: nixpkgs' kexec tree (`kexecTree`: `bzImage`, `initrd.gz` = netboot's
//! initrd, `kexec-boot`) under `kexec/`, plus `kexec/run`, a symlink to `kexec-boot`, where
//! nixos-anywhere looks for it (`tar -C /root/kexec -xzf -` then `/root/kexec/kexec/run`).
//!
//! The tar is a map like a disk's: each member's header (`tar::header`, ustar) as bytes, the
//! kernel and the initrd's own map as file ranges, zeros to whole blocks, two zero blocks and
//! zeros to a 10 KiB record; streamed once through the `gzip` output kind. Members in name
//! order as nixpkgs' `tar --sort=name`, owners 0:0, modes as its `--mode=u+w` leaves store
//! files (0644, 0755 for the script), times the build's.

use imgbuild_boot::{KEXEC_INITRD, KEXEC_KERNEL, KEXEC_SCRIPT};
use imgbuild_diskmap::{Map, MapBuilder};
use imgbuild_tar::header::{self, EntryType, Header, BLOCK};

use super::Planned;
use crate::manifest::{Manifest, NetbootFile};
use crate::options::Context;
use crate::output::Parts;
use crate::{Result, Stages};

/// The directory the tree is in: nixos-anywhere runs `kexec/run` from where it unpacked.
const TOP: &str = "kexec";
/// The entry point nixos-anywhere runs.
const RUN: &str = "run";
/// GNU tar's and bsdtar's record: archives are padded to a multiple of it.
const RECORD: u64 = 10 * 1024;

/// What a member holds.
enum Data<'a> {
    Dir,
    /// A map placed after the header (the kernel, the initrd).
    Map(&'a Map),
    Text(Vec<u8>),
    Symlink(&'a str),
}

/// Write the tarball and its manifest.
pub(crate) fn write(cx: &Context, s: &Stages, p: &Planned) -> Result<Manifest> {
    let (map, files) = tar(cx, p)?;
    let parts = Parts {
        layout: super::layout(map.len()),
        notes: super::notes(cx, s.inputs)?,
        sysupdate: None,
    };
    let mut netboot = p.manifest.clone();
    netboot.files = files;
    crate::output::write_with(cx, s.inputs, parts, &map, s.reporter, s.cancel, |m| {
        m.netboot = Some(netboot);
    })
}

/// The uncompressed tar's map (for a dry run).
pub(crate) fn tar_map(cx: &Context, p: &Planned) -> Result<Map> {
    Ok(tar(cx, p)?.0)
}

/// The tar's map and its members for the manifest.
fn tar(cx: &Context, p: &Planned) -> Result<(Map, Vec<NetbootFile>)> {
    let kernel = {
        let mut b = MapBuilder::new("kernel", p.kernel.source.size);
        b.file(0, &p.kernel.source, 0, p.kernel.source.size)?;
        b.finish()?
    };
    let script = imgbuild_boot::kexec_script(&p.entry)?.into_bytes();
    let members: [(&str, u32, Data); 5] = [
        ("", 0o755, Data::Dir),
        (KEXEC_KERNEL, 0o644, Data::Map(&kernel)),
        (KEXEC_INITRD, 0o644, Data::Map(&p.initrd)),
        (KEXEC_SCRIPT, 0o755, Data::Text(script)),
        (RUN, 0o777, Data::Symlink(KEXEC_SCRIPT)),
    ];
    let mut parts: Vec<(u64, Piece)> = Vec::new();
    let mut files = Vec::new();
    let mut at = 0u64;
    for (name, mode, data) in &members {
        let path = match name.is_empty() {
            true => format!("{TOP}/"),
            false => format!("{TOP}/{name}"),
        };
        let (kind, size, link) = match data {
            Data::Dir => (EntryType::Dir, 0, ""),
            Data::Map(m) => (EntryType::Regular, m.len(), ""),
            Data::Text(t) => (EntryType::Regular, t.len() as u64, ""),
            Data::Symlink(target) => (EntryType::Symlink, 0, *target),
        };
        let h = Header {
            path: path.as_bytes(),
            link: link.as_bytes(),
            kind,
            mode: *mode,
            uid: 0,
            gid: 0,
            size,
            mtime: cx.time,
            dev: (0, 0),
            sparse: None,
        }
        .encode();
        let hlen = h.len() as u64;
        parts.push((at, Piece::Bytes(h)));
        at += hlen;
        match data {
            Data::Map(m) => parts.push((at, Piece::Map((*m).clone()))),
            Data::Text(t) => parts.push((at, Piece::Bytes(t.clone()))),
            Data::Dir | Data::Symlink(_) => {}
        }
        at += size + header::padding(size);
        if !name.is_empty() {
            files.push(NetbootFile {
                name: path,
                size: match data {
                    Data::Symlink(t) => t.len() as u64,
                    _ => size,
                },
                sha256: None,
            });
        }
    }
    // Two zero blocks end the archive; the record is padded with zeros too.
    let len = (at + 2 * BLOCK as u64).next_multiple_of(RECORD);
    let mut b = MapBuilder::new("kexec tarball", len);
    for (offset, piece) in parts {
        match piece {
            Piece::Bytes(bytes) => b.bytes(offset, bytes)?,
            Piece::Map(m) => b.place(offset, m)?,
        }
    }
    Ok((b.finish()?, files))
}

/// A part of the tar placed at an offset.
enum Piece {
    Bytes(Vec<u8>),
    Map(Map),
}
