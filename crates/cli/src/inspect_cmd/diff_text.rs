//! `imgbuild diff`'s text and Markdown output.

use std::io::{self, Write};

use imgbuild_inspect::{self as inspect, Fact, StoreDiff};

fn signed(n: i64) -> String {
    let s = imgbuild_units::human_size(n.unsigned_abs());
    if n < 0 {
        format!("-{s}")
    } else {
        format!("+{s}")
    }
}

/// The comparison as text, or as Markdown (`md`).
pub(super) fn write_diff(out: &mut dyn Write, d: &inspect::Diff, md: bool) -> io::Result<()> {
    let h = imgbuild_units::human_size;
    if md {
        writeln!(out, "### `{}` → `{}`\n", d.old, d.new)?;
    } else {
        writeln!(out, "old: {}\nnew: {}", d.old, d.new)?;
    }
    if d.identical {
        writeln!(out, "identical")?;
        return Ok(());
    }
    if let Some(t) = &d.toplevel {
        let (o, n) = (
            t.old.as_deref().unwrap_or("-"),
            t.new.as_deref().unwrap_or("-"),
        );
        if md {
            writeln!(out, "toplevel: `{o}` → `{n}`\n")?;
        } else {
            writeln!(out, "toplevel: {o} -> {n}")?;
        }
    }
    let s = &d.store;
    writeln!(
        out,
        "store paths: {} -> {}, {} -> {} ({}); {} added, {} removed, {} changed{}",
        s.old_paths,
        s.new_paths,
        h(s.old_bytes),
        h(s.new_bytes),
        signed(s.delta),
        s.added.len(),
        s.removed.len(),
        s.changed.len(),
        if md { "\n" } else { "" }
    )?;
    write_store_rows(out, s, md)?;
    write_facts(out, &d.boot, &d.partitions, md)?;
    Ok(())
}

/// A Markdown table cell: `|` escaped.
fn cell(s: &str, md: bool) -> String {
    if md {
        s.replace('|', "\\|")
    } else {
        s.to_string()
    }
}

/// One row per store path added, removed or changed.
fn write_store_rows(out: &mut dyn Write, s: &StoreDiff, md: bool) -> io::Result<()> {
    let h = imgbuild_units::human_size;
    let rows: Vec<(&str, &inspect::PathChange)> = s
        .added
        .iter()
        .map(|c| ("added", c))
        .chain(s.removed.iter().map(|c| ("removed", c)))
        .chain(s.changed.iter().map(|c| ("changed", c)))
        .collect();
    if !rows.is_empty() {
        if md {
            writeln!(
                out,
                "| | name | version | size | delta |\n|---|---|---|---:|---:|"
            )?;
        }
        for (what, c) in rows {
            let version = match (&c.old_version, &c.new_version) {
                (Some(o), Some(n)) => format!("{o} -> {n}"),
                _ if what == "changed" => "rebuilt".to_string(),
                _ => String::new(),
            };
            let size = match what {
                "added" => h(c.new_bytes),
                "removed" => h(c.old_bytes),
                _ => format!("{} -> {}", h(c.old_bytes), h(c.new_bytes)),
            };
            let mark = match what {
                "added" => "+",
                "removed" => "-",
                _ => "~",
            };
            if md {
                writeln!(
                    out,
                    "| {mark} | {} | {} | {size} | {} |",
                    cell(&c.name, md),
                    cell(&version, md),
                    signed(c.delta)
                )?;
            } else {
                writeln!(
                    out,
                    "  {mark} {:<40} {:<24} {:>24} {:>12}",
                    c.name,
                    version,
                    size,
                    signed(c.delta)
                )?;
            }
        }
    }
    Ok(())
}

/// The boot and partition facts that differ.
fn write_facts(
    out: &mut dyn Write,
    boot: &[Fact],
    partitions: &[Fact],
    md: bool,
) -> io::Result<()> {
    for (title, facts) in [("boot", boot), ("partitions", partitions)] {
        if facts.is_empty() {
            continue;
        }
        writeln!(out)?;
        if md {
            writeln!(out, "**{title}**\n\n| what | old | new |\n|---|---|---|")?;
        } else {
            writeln!(out, "{title}:")?;
        }
        for f in facts {
            let (o, n) = (
                f.old.as_deref().unwrap_or("-"),
                f.new.as_deref().unwrap_or("-"),
            );
            if md {
                writeln!(
                    out,
                    "| {} | {} | {} |",
                    cell(&f.what, md),
                    cell(o, md),
                    cell(n, md)
                )?;
            } else {
                writeln!(out, "  {}: {o} -> {n}", f.what)?;
            }
        }
    }
    Ok(())
}
