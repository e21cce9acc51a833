//! Is the toplevel a container system? A container format's image has no kernel, no boot
//! loader and no file systems of its own: the host's container manager starts `/sbin/init`.
//! A system built for a disk would start, but without `boot.isContainer` NixOS tries to
//! mount file systems, load modules and install a boot loader, and fails in a container.
//! NixOS writes no boot.json for a container system, so imgbuild's NixOS module records
//! `boot.isContainer` in a file of its own, `<toplevel>/imgbuild.json`
//! (`"org.imgbuild.v1".container.isContainer`, read by `imgbuild_nix` into
//! `BootSpec::container`); this check wants that marker, and no kernel or boot loader beside
//! it.

use imgbuild_nix::{IMGBUILD_JSON, IMGBUILD_V1};
use serde_json::Value;

use crate::format::Format;
use crate::{Error, Inputs, Result};

/// Refuses a toplevel not configured as a container, naming what is wrong.
pub(crate) fn check(format: &Format, inputs: &Inputs) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::NotForFormat {
            format: format.name.clone(),
            reason,
            fix: format!(
                "build the system with imgbuild's NixOS module and imgbuild.format = \"{}\" (it \
                 sets boot.isContainer = true and records it in the toplevel's imgbuild.json), \
                 or pass \
                 --no-system-check",
                format.name
            ),
        })
    };
    let marker = inputs
        .bootspec
        .container
        .as_ref()
        .and_then(|c| c.get("isContainer"));
    if marker != Some(&Value::Bool(true)) {
        return bad(format!(
            "its toplevel has no {IMGBUILD_JSON} with \"{IMGBUILD_V1}\".container.isContainer = \
             true: the system was not built as a container (boot.isContainer)"
        ));
    }
    if inputs
        .bootspec
        .extensions
        .contains_key("org.nixos.systemd-boot")
    {
        return bad("it installs systemd-boot: a container has no boot loader".into());
    }
    let kernel = inputs.toplevel.join("kernel");
    if inputs.bootspec.kernel.is_some() || inputs.store.resolve_in_store(&kernel).is_ok() {
        return bad(format!(
            "its toplevel has a kernel ({}): a container system (boot.isContainer) has none",
            kernel.display()
        ));
    }
    Ok(())
}
