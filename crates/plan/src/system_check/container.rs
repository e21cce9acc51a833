//! Is the toplevel a container system? A container format's image has no kernel, no boot
//! loader and no file systems of its own: the host's container manager starts `/sbin/init`.
//! A system built for a disk would start, but without `boot.isContainer` NixOS tries to
//! mount file systems, load modules and install a boot loader, and fails in a container.
//! imgbuild's NixOS module records `boot.isContainer` in boot.json
//! (`"org.imgbuild.v1".container.isContainer`); this check wants that marker, and no kernel
//! or boot loader beside it.

use imgbuild_nix::IMGBUILD_V1;
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
                 sets boot.isContainer = true and records it in boot.json), or pass \
                 --no-system-check",
                format.name
            ),
        })
    };
    let marker = inputs
        .bootspec
        .extensions
        .get(IMGBUILD_V1)
        .and_then(|v| v.get("container"))
        .and_then(|c| c.get("isContainer"));
    if marker != Some(&Value::Bool(true)) {
        return bad(format!(
            "boot.json has no \"{}\".container.isContainer = true: the system was not built as \
             a container (boot.isContainer)",
            IMGBUILD_V1
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
    if inputs.store.resolve_in_store(&kernel).is_ok() {
        return bad(format!(
            "its toplevel has a kernel ({}): a container system (boot.isContainer) has none",
            kernel.display()
        ));
    }
    Ok(())
}
