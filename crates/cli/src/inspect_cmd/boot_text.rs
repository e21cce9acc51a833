//! The `boot` section of `imgbuild inspect`'s text report.

use std::io::{self, Write};

use imgbuild_inspect::{Extlinux, GrubBios, Inspection, Signature, SystemdBoot, Uki};
use imgbuild_units::human_size as human;

/// Every boot setup found, or that none was.
pub(super) fn write_boot(out: &mut dyn Write, r: &Inspection) -> io::Result<()> {
    let b = &r.boot;
    if b.is_empty() {
        writeln!(
            out,
            "boot      nothing found (no systemd-boot, extlinux, GRUB or Raspberry Pi firmware)"
        )?;
        return Ok(());
    }
    writeln!(out, "boot")?;
    for s in &b.systemd_boot {
        write_systemd_boot(out, s)?;
    }
    for x in &b.extlinux {
        write_extlinux(out, x)?;
    }
    if let Some(g) = &b.grub_bios {
        write_grub_bios(out, g)?;
    }
    for g in &b.grub {
        writeln!(out, "  GRUB on partition {}: {}", g.partition, g.config)?;
        for e in &g.entries {
            writeln!(out, "      {e}")?;
        }
    }
    for pi in &b.raspberry_pi {
        writeln!(
            out,
            "  Raspberry Pi firmware on partition {}: {} firmware files, {} dtbs{}",
            pi.partition,
            pi.firmware.len(),
            pi.dtbs,
            pi.armstub
                .as_deref()
                .map(|a| format!(", armstub {a}"))
                .unwrap_or_default()
        )?;
        for k in &pi.kernels {
            writeln!(
                out,
                "      [{}] kernel={}{}",
                k.section,
                k.file,
                if k.present { "" } else { " (MISSING)" }
            )?;
        }
    }
    Ok(())
}

/// GRUB for BIOS: boot.img in the MBR, where the core is, its modules, prefix, version.
fn write_grub_bios(out: &mut dyn Write, g: &GrubBios) -> io::Result<()> {
    writeln!(
        out,
        "  GRUB for BIOS: boot.img in the MBR, core image at sector {} ({}{})",
        g.core_sector,
        g.core_location,
        g.core_sectors
            .map(|n| format!(", {n} sectors"))
            .unwrap_or_default()
    )?;
    if let Some(e) = &g.error {
        writeln!(out, "      core image not read: {e}")?;
    }
    if let Some(v) = &g.version {
        let from = g.version_from.as_deref().unwrap_or("?");
        writeln!(out, "      version  {v} (from {from})")?;
    }
    if let Some(p) = &g.prefix {
        writeln!(out, "      prefix   {p}")?;
    }
    if !g.modules.is_empty() {
        writeln!(out, "      modules  {}", g.modules.join(" "))?;
    }
    if let Some(r) = g.redundancy.filter(|&r| r > 0) {
        writeln!(out, "      Reed-Solomon redundancy: {} bytes", r)?;
    }
    if let Some(c) = &g.config {
        writeln!(out, "      embedded config: {} bytes", c.len())?;
    }
    Ok(())
}

/// systemd-boot: its binaries, loader.conf, and each entry (the one it boots starred).
fn write_systemd_boot(out: &mut dyn Write, s: &SystemdBoot) -> io::Result<()> {
    writeln!(out, "  systemd-boot on partition {}", s.partition)?;
    for bin in &s.binaries {
        writeln!(
            out,
            "    {} ({}){}",
            bin.path,
            human(bin.size),
            bin.version
                .as_deref()
                .map(|v| format!(": {v}"))
                .unwrap_or_default()
        )?;
        if let Some(sig) = &bin.signature {
            writeln!(out, "      signed   {}", signature(sig))?;
        }
    }
    if !s.loader_conf.is_empty() {
        let kv: Vec<String> = s
            .loader_conf
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(out, "    loader.conf: {}", kv.join(", "))?;
    }
    for e in &s.entries {
        writeln!(
            out,
            "    {} {}: {}",
            if e.default { "*" } else { " " },
            e.file,
            e.title.as_deref().unwrap_or("(no title)")
        )?;
        if let Some(v) = &e.version {
            writeln!(out, "        version  {v}")?;
        }
        match (e.tries_left, e.tries_done) {
            (Some(left), done) => writeln!(
                out,
                "        tries    {left} left, {} done{}; id {}",
                done.unwrap_or(0),
                if left == 0 {
                    " (out of tries: bad)"
                } else {
                    ""
                },
                e.id
            )?,
            (None, _) => writeln!(out, "        tries    none (no boot counting)")?,
        }
        if let Some(l) = &e.linux {
            writeln!(out, "        linux    {l}")?;
        }
        for i in &e.initrd {
            writeln!(out, "        initrd   {i}")?;
        }
        if let Some(o) = &e.options {
            writeln!(out, "        options  {o}")?;
        }
        if let Some(d) = &e.devicetree {
            writeln!(out, "        dtb      {d}")?;
        }
        if !e.missing.is_empty() {
            writeln!(out, "        MISSING  {}", e.missing.join(" "))?;
        }
    }
    for u in &s.ukis {
        write_uki(out, u)?;
    }
    Ok(())
}

/// A Secure Boot signature: its signer, or why it does not hold.
fn signature(s: &Signature) -> String {
    match (s.valid, &s.signer, &s.certificate_sha256) {
        (true, Some(who), Some(fp)) => format!(
            "by {who} (certificate sha256 {}…), valid for this binary",
            fp.get(..16).unwrap_or(fp)
        ),
        _ => format!(
            "INVALID: {}",
            s.error.as_deref().unwrap_or("no valid signature")
        ),
    }
}

/// A unified kernel image: what it boots and its sections.
fn write_uki(out: &mut dyn Write, u: &Uki) -> io::Result<()> {
    writeln!(
        out,
        "    {} {} ({}): {}",
        if u.default { "*" } else { " " },
        u.path,
        human(u.size),
        u.pretty_name.as_deref().unwrap_or("(no PRETTY_NAME)")
    )?;
    if let Some(v) = &u.uname {
        writeln!(out, "        uname    {v}")?;
    }
    if let Some(c) = &u.cmdline {
        writeln!(out, "        cmdline  {c}")?;
    }
    if let Some(sig) = &u.signature {
        writeln!(out, "        signed   {}", signature(sig))?;
    }
    let sections: Vec<String> = u
        .sections
        .iter()
        .map(|s| format!("{} @{:#x} {}", s.name, s.offset, human(s.size)))
        .collect();
    writeln!(out, "        sections {}", sections.join(", "))?;
    Ok(())
}

/// An extlinux.conf and its labels (the default starred).
fn write_extlinux(out: &mut dyn Write, x: &Extlinux) -> io::Result<()> {
    write!(out, "  extlinux on partition {}: {}", x.partition, x.config)?;
    if let Some(d) = &x.default {
        write!(out, ", default {d}")?;
    }
    if let Some(t) = &x.timeout {
        write!(out, ", timeout {t}")?;
    }
    writeln!(out)?;
    for e in &x.entries {
        writeln!(
            out,
            "    {} {}{}",
            if e.default { "*" } else { " " },
            e.label,
            e.menu_label
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )?;
        for (k, v) in [
            ("linux", &e.linux),
            ("initrd", &e.initrd),
            ("append", &e.append),
            ("fdtdir", &e.fdtdir),
            ("fdt", &e.fdt),
        ] {
            if let Some(v) = v {
                writeln!(out, "        {k:<8} {v}")?;
            }
        }
        if !e.missing.is_empty() {
            writeln!(out, "        MISSING  {}", e.missing.join(" "))?;
        }
    }
    Ok(())
}
