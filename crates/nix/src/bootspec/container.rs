//! `<toplevel>/imgbuild.json`: what imgbuild's NixOS module records for a container system.
//! NixOS writes no boot.json (nor `kernel`, `initrd`, `kernel-params`) for a
//! `boot.isContainer` toplevel, so the module writes this file of its own, through
//! `system.systemBuilderCommands`: `{"org.imgbuild.v1": {"container": {...}}}`.

use std::path::Path;

use serde_json::Value;

use super::{read_limited, IMGBUILD_V1};
use crate::{Error, Result, StorePath, StoreRoot};

/// The marker file's name in the toplevel.
pub const IMGBUILD_JSON: &str = "imgbuild.json";

/// `"org.imgbuild.v1".container` of `<toplevel>/imgbuild.json`, or `None` when the toplevel
/// has no such file. A file that is not JSON, or whose record is not an object, is refused
/// naming the file.
pub(super) fn read(
    root: &StoreRoot,
    toplevel: &StorePath,
) -> Result<Option<serde_json::Map<String, Value>>> {
    let logical = toplevel.join(IMGBUILD_JSON);
    let host = match root.resolve_in_store(&logical) {
        Ok(h) => h,
        Err(Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(e),
    };
    let bytes = read_limited(&host, &logical)?;
    parse(&bytes, &logical).map(Some)
}

/// `"org.imgbuild.v1".container` of an imgbuild.json document; `file` names it in errors.
pub(super) fn parse(json: &[u8], file: &Path) -> Result<serde_json::Map<String, Value>> {
    let value: Value = serde_json::from_slice(json).map_err(|error| Error::Json {
        file: file.to_owned(),
        error,
    })?;
    let bad = |reason: String| Error::Bootspec {
        file: file.to_owned(),
        reason,
    };
    match value.get(IMGBUILD_V1).map(|v| v.get("container")) {
        Some(Some(Value::Object(record))) => Ok(record.clone()),
        Some(Some(_)) => Err(bad(format!("\"{IMGBUILD_V1}\".container is not an object"))),
        Some(None) => Err(bad(format!("\"{IMGBUILD_V1}\" has no `container` record"))),
        None => Err(bad(format!("no \"{IMGBUILD_V1}\" object"))),
    }
}
