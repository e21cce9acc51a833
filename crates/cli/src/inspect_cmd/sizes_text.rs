//! `imgbuild inspect --sizes`'s text output.

use std::io::{self, Write};

use imgbuild_inspect as inspect;

/// The closure's store paths by size, then each partition's use.
pub(super) fn write_sizes(out: &mut dyn Write, s: &inspect::Sizes) -> io::Result<()> {
    let h = imgbuild_units::human_size;
    writeln!(out, "image: {} (disk {})", s.image, h(s.disk_size))?;
    writeln!(
        out,
        "closure: {} store paths (from {}), {} on disk; {} of it in files several paths share, counted once",
        s.store_paths.len(),
        s.closure_from,
        h(s.closure_total),
        h(s.shared)
    )?;
    for w in &s.warnings {
        writeln!(out, "warning: {w}")?;
    }
    writeln!(out)?;
    writeln!(out, "{:>11} {:>11}  STORE PATH", "SIZE", "EXCLUSIVE")?;
    for p in &s.store_paths {
        writeln!(out, "{:>11} {:>11}  {}", h(p.bytes), h(p.exclusive), p.path)?;
    }
    for p in &s.partitions {
        writeln!(out)?;
        writeln!(
            out,
            "partition {} ({}{}): {}, used {}, free {}",
            p.number,
            p.kind,
            p.label
                .as_deref()
                .map(|l| format!(", {l}"))
                .unwrap_or_default(),
            h(p.size),
            h(p.used),
            h(p.free)
        )?;
        for c in &p.parts {
            writeln!(out, "{:>11}  {}", h(c.bytes), c.name)?;
        }
        if p.number != s.root_partition && !p.files.is_empty() {
            writeln!(out, "  files:")?;
            for f in &p.files {
                writeln!(out, "{:>11}  {}", h(f.bytes), f.name)?;
            }
        }
    }
    Ok(())
}
