//! `imgbuild inspect`'s text report: image and table, partitions and their filesystems, the
//! boot setup ([`super::boot_text`]), the NixOS system, what a deep read found, warnings.

use std::io::{self, Write};

use imgbuild_inspect::{Compression, FsInfo, Inspection, Nixos, ReadAll, VerityPair};
use imgbuild_units::human_size as human;

use super::boot_text::write_boot;

/// The whole report, in that order.
pub(super) fn write_report(out: &mut dyn Write, r: &Inspection) -> io::Result<()> {
    write_table(out, r)?;
    writeln!(out)?;
    write_partitions(out, r)?;
    writeln!(out)?;
    write_boot(out, r)?;
    if !r.verity.is_empty() {
        writeln!(out)?;
        write_verity(out, &r.verity)?;
    }
    if let Some(n) = &r.nixos {
        writeln!(out)?;
        write_nixos(out, n)?;
    }
    if let Some(all) = &r.read_all {
        writeln!(out)?;
        write_read_all(out, all)?;
    }
    if !r.warnings.is_empty() {
        writeln!(out)?;
        writeln!(out, "warnings")?;
        for w in &r.warnings {
            writeln!(out, "  - {w}")?;
        }
    }
    Ok(())
}

/// Each dm-verity pair: partitions, superblock, the recomputed root hash and the claims.
fn write_verity(out: &mut dyn Write, pairs: &[VerityPair]) -> io::Result<()> {
    writeln!(out, "verity")?;
    for v in pairs {
        let data = v
            .data_partition
            .map_or_else(|| "none found".to_string(), |n| n.to_string());
        writeln!(
            out,
            "  {} data partition {data}, hash partition {}",
            v.designator.unwrap_or("verity"),
            v.hash_partition
        )?;
        let sb = &v.superblock;
        writeln!(
            out,
            "    superblock  type {}, {}, blocks {}/{}, {} data blocks, uuid {}, salt {}",
            sb.hash_type,
            sb.algorithm,
            sb.data_block_size,
            sb.hash_block_size,
            sb.data_blocks,
            sb.uuid,
            sb.salt
        )?;
        if let Some(h) = &v.root_hash {
            writeln!(out, "    root hash   {h} (recomputed from the data)")?;
        }
        if let Some(a) = &v.hash_area {
            writeln!(out, "    hash area   {a}")?;
        }
        for c in &v.claims {
            let verdict = if c.matches { "matches" } else { "DIFFERS" };
            writeln!(out, "    {:<11} {} ({verdict})", c.source, c.root_hash)?;
        }
        if let Some(e) = &v.error {
            writeln!(out, "    not checked: {e}")?;
        }
    }
    Ok(())
}

/// The `image` and `table` lines.
fn write_table(out: &mut dyn Write, r: &Inspection) -> io::Result<()> {
    let comp = match r.compression {
        Compression::None => "raw".to_string(),
        Compression::Zstd => format!("zstd, {} compressed", human(r.file_size)),
        Compression::Gzip => format!("gzip, {} compressed", human(r.file_size)),
    };
    writeln!(
        out,
        "image     {} ({comp}, disk {} = {} bytes)",
        r.image,
        human(r.disk_size),
        r.disk_size
    )?;
    let t = &r.table;
    let mut tl = format!("{}", t.kind);
    if let Some(id) = &t.disk_id {
        tl += &format!(", disk id {id}");
    }
    if let Some(n) = t.entries {
        tl += &format!(", {n} entries");
    }
    if let (Some(a), Some(b)) = (t.first_usable_lba, t.last_usable_lba) {
        tl += &format!(", usable LBA {a}..{b}");
    }
    if let Some(h) = t.header {
        tl += &format!(", {h} header");
    }
    if let Some(ok) = t.backup_ok {
        tl += if ok {
            ", backup header ok"
        } else {
            ", backup header MISSING"
        };
    }
    writeln!(out, "table     {tl}")?;
    Ok(())
}

/// Every partition: its entry, its filesystem, why it is not readable.
fn write_partitions(out: &mut dyn Write, r: &Inspection) -> io::Result<()> {
    writeln!(out, "partitions")?;
    for p in &r.partitions {
        let q = &p.partition;
        let ty = match q.entry.type_name {
            Some(n) => format!("{} ({n})", q.entry.type_id),
            None => q.entry.type_id.clone(),
        };
        write!(
            out,
            "  {:>2}  start {} (LBA {}), size {} (LBA {}..{}), type {ty}",
            q.entry.number,
            q.entry.start,
            q.entry.first_lba,
            human(q.entry.size),
            q.entry.first_lba,
            q.entry.last_lba
        )?;
        if let Some(n) = &q.entry.name {
            write!(out, ", name {n:?}")?;
        }
        if !q.entry.flags.is_empty() {
            write!(out, ", flags {}", q.entry.flags.join(","))?;
        }
        writeln!(out)?;
        if let Some(g) = &q.entry.guid {
            writeln!(out, "      guid {g}")?;
        }
        if let Some(fs) = &p.filesystem {
            write_filesystem(out, fs)?;
        }
        if let Some(e) = &p.error {
            writeln!(out, "      not readable: {e}")?;
        }
    }
    Ok(())
}

/// A filesystem's line (kind, label, uuid, size and use) and its features.
fn write_filesystem(out: &mut dyn Write, fs: &FsInfo) -> io::Result<()> {
    write!(out, "      {}", fs.summary.kind)?;
    if let Some(l) = &fs.summary.label {
        write!(out, " label {l:?}")?;
    }
    if let Some(u) = &fs.summary.uuid {
        write!(out, " uuid {u}")?;
    }
    if fs.summary.size > 0 && fs.block_size == 0 {
        // No file system of blocks (a partition of zeros): its size only.
        write!(
            out,
            ", {} ({} bytes)",
            human(fs.summary.size),
            fs.summary.size
        )?;
    } else if fs.summary.size > 0 {
        write!(
            out,
            ", {} ({} bytes), {} used ({:.0} %), {} blocks of {}",
            human(fs.summary.size),
            fs.summary.size,
            human(fs.used),
            100.0 * fs.used as f64 / fs.summary.size as f64,
            fs.summary.size / fs.block_size,
            fs.block_size
        )?;
    }
    if let (Some(i), Some(u)) = (fs.inodes, fs.inodes_used) {
        write!(out, ", {u}/{i} inodes")?;
    }
    writeln!(out)?;
    if !fs.features.is_empty() {
        writeln!(out, "      features {}", fs.features.join(" "))?;
    }
    if let Some(iso) = &fs.iso9660 {
        writeln!(
            out,
            "      rock ridge {}, joliet {}",
            if iso.rock_ridge { "yes" } else { "no" },
            if iso.joliet { "yes" } else { "no" }
        )?;
        for e in &iso.el_torito {
            writeln!(
                out,
                "      el torito {}{}, {}, load LBA {}, {} sectors",
                e.platform,
                if e.bootable { "" } else { " (not bootable)" },
                e.media,
                e.load_lba,
                e.sectors
            )?;
        }
        if let Some(e) = &iso.el_torito_error {
            writeln!(out, "      el torito: {e}")?;
        }
    }
    if let Some(s) = &fs.store_image {
        match &s.error {
            None => writeln!(
                out,
                "      store image /nix-store.squashfs mounted at /nix/store: {} ({} bytes), \
                 {}, blocks of {}, {} inodes",
                human(s.summary.size),
                s.summary.size,
                s.features.join(" "),
                s.block_size,
                s.inodes.unwrap_or(0)
            )?,
            Some(e) => writeln!(out, "      store image /nix-store.squashfs not read: {e}")?,
        }
    }
    Ok(())
}

/// The NixOS system: toplevel, profile, version, registrations, the store.
fn write_nixos(out: &mut dyn Write, n: &Nixos) -> io::Result<()> {
    match n.store_partition {
        Some(s) => writeln!(
            out,
            "nixos (partition {}, its store on partition {s} mounted at /usr)",
            n.partition
        )?,
        None => writeln!(out, "nixos (partition {})", n.partition)?,
    }
    match (&n.toplevel, &n.toplevel_from) {
        (Some(t), Some(from)) => writeln!(out, "  toplevel    {t} (from the {from})")?,
        (Some(t), None) => writeln!(out, "  toplevel    {t}")?,
        _ => writeln!(
            out,
            "  toplevel    not found (no system profile, no init= in a boot entry)"
        )?,
    }
    if !n.profile.is_empty() {
        writeln!(out, "  profile     {}", n.profile.join(" -> "))?;
    }
    if !n.generations.is_empty() {
        let g: Vec<String> = n.generations.iter().map(u64::to_string).collect();
        writeln!(out, "  generations {}", g.join(" "))?;
    }
    if let Some(v) = &n.version {
        writeln!(out, "  version     {v}")?;
    }
    if let Some(s) = &n.system {
        writeln!(out, "  system      {s}")?;
    }
    if let Some(k) = &n.kernel_params {
        writeln!(out, "  params      {k}")?;
    }
    writeln!(
        out,
        "  /etc/NIXOS  {}",
        if n.etc_nixos { "present" } else { "absent" }
    )?;
    for reg in &n.registered {
        write!(
            out,
            "  registered  {} store paths in {}",
            reg.count, reg.source
        )?;
        match reg.toplevel_registered {
            Some(true) => write!(out, ", toplevel included")?,
            Some(false) => write!(out, ", toplevel NOT included")?,
            None => {}
        }
        if let Some(m) = reg.missing_from_store {
            write!(out, ", {m} missing from /nix/store")?;
        }
        writeln!(out)?;
    }
    if n.registered.is_empty() {
        writeln!(
            out,
            "  registered  no Nix database and no /nix-path-registration"
        )?;
    }
    if let Some(s) = &n.store {
        write!(
            out,
            "  /nix/store  {} store paths, mode {}",
            s.paths, s.mode
        )?;
        if let Some(u) = s.unregistered {
            write!(out, ", {u} unregistered")?;
        }
        if s.optimised {
            write!(out, ", optimised (.links)")?;
        }
        writeln!(out)?;
    }
    Ok(())
}

/// What `--deep` read back, per partition, with its errors.
fn write_read_all(out: &mut dyn Write, all: &[ReadAll]) -> io::Result<()> {
    writeln!(out, "read back")?;
    for p in all {
        writeln!(
            out,
            "  partition {}: {} directories, {} files ({}), {} symlinks, {} other, {} errors",
            p.partition,
            p.dirs,
            p.files,
            human(p.bytes),
            p.symlinks,
            p.other,
            p.errors.len()
        )?;
        for e in &p.errors {
            writeln!(out, "    - {e}")?;
        }
    }
    Ok(())
}
