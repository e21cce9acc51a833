//! What a build prints when it is done: the boot assumption, the verity root hash, and
//! the manifest (JSON on stdout) or one line on stderr.

use anyhow::{Context, Result};

use crate::stdout;
use imgbuild_plan as plan;

/// After a build: the boot assumption, then the manifest as JSON on stdout or one line on
/// stderr.
pub(crate) fn report(
    manifest: &plan::Manifest,
    output: &std::path::Path,
    json: bool,
) -> Result<()> {
    if let Some(assumed) = &manifest.boot.assumed {
        eprintln!("boot: {assumed}");
    }
    if let Some(v) = &manifest.verity {
        print_verity(v);
    }
    if let Some(s) = &manifest.sysupdate {
        print_sysupdate(s);
    }
    if json {
        // The image is built: a reader that closed the pipe (`| head`) is not an error.
        let json = serde_json::to_string_pretty(manifest)? + "\n";
        stdout(json.as_bytes()).context("printing the manifest")?;
    } else {
        eprintln!(
            "wrote {} ({}{}, {} store paths, {})",
            output.display(),
            match manifest.image_size {
                Some(n) => format!("{n} bytes"),
                None => "size withheld".into(),
            },
            if manifest.image_size != Some(manifest.disk_size) {
                format!(", disk {} bytes", manifest.disk_size)
            } else {
                String::new()
            },
            manifest.store_paths,
            match &manifest.sha256 {
                Some(h) => format!("sha256 {h}"),
                None =>
                    "sha256 withheld: it holds --add files (see `hashes` in the manifest)".into(),
            }
        );
    }
    Ok(())
}

/// An A/B appliance's version, empty slots and artifacts, on stderr (the manifest's
/// `sysupdate` has all).
pub(crate) fn print_sysupdate(s: &plan::sysupdate::SysupdateManifest) {
    let slots: Vec<String> = s
        .empty_slots
        .iter()
        .map(|e| format!("{} (partition {}, B of `{}`)", e.name, e.number, e.of))
        .collect();
    eprintln!(
        "sysupdate: {} version {}; empty slots: {}",
        s.image_id,
        s.version,
        slots.join(", ")
    );
    if !s.artifacts.is_empty() {
        let names: Vec<&str> = s.artifacts.iter().map(|a| a.name.as_str()).collect();
        eprintln!(
            "sysupdate: artifacts in {}: {} and SHA256SUMS",
            s.directory,
            names.join(", ")
        );
    }
}

/// The verity store's root hash and partitions, on stderr (the manifest's `verity` has all).
pub(crate) fn print_verity(v: &plan::VerityManifest) {
    eprintln!(
        "verity: root hash {} (boot entry: {}); data `{}` partition {} at {} ({} bytes, store \
         image {}), hash `{}` partition {} at {} ({} bytes)",
        v.root_hash,
        v.command_line.join(" "),
        v.data.name,
        v.data.number,
        v.data.offset,
        v.data.size,
        v.store_image_size,
        v.hash.name,
        v.hash.number,
        v.hash.offset,
        v.hash.size
    );
}
