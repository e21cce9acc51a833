//! A/B updates by systemd-sysupdate, for a format whose verity store has empty B slots
//! (`appliance`): the names the toplevel's record gives the slots and the UKI, and the
//! version's sysupdate artifacts, written by the same build beside the image.
//!
//! The toplevel says what it is in boot.json's `"org.imgbuild.v1".appliance` (imgbuild's
//! NixOS module writes it): `imageId` and `imageVersion` (`system.image.id`/`.version`),
//! `systemdInitrd` and `dmVerity` (the initrd that opens the store from `usrhash=`).
//! Slot A's GPT names are `<id>_<version>` (store) and `<id>_<version>_verity` (its hash),
//! the B slots' `_empty`, the UKI `EFI/Linux/<id>_<version>.efi`: what the transfers the
//! module configures match (`MatchPattern=<id>_@v`, `<id>_@v_verity`, `<id>_@v.efi`).
//!
//! The artifacts go to `OUT.sysupdate/` (made as `OUT.sysupdate.tmp/`, renamed with the
//! image, before the manifest): `<id>_<version>_<uuid>.usr.raw` (the store partition's
//! protected bytes: the store image, zeros to the verity tree's data size; a hard link to
//! the store image the build wrote anyway, so no byte is copied), `<id>_<version>_<uuid>
//! .usr-verity.raw` (the hash area), `<id>_<version>.efi` (the UKI as it is on the ESP,
//! signed when the build signs) and `SHA256SUMS`. The UUID in a partition artifact's name is
//! what sysupdate's `@u` takes and sets on the partition it writes, so that `usrhash=` finds
//! the new pair by the root hash's halves (systemd-repart's `--split` names its files so).

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use imgbuild_diskmap::sinks::hex;
use imgbuild_nix::BootSpec;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::format::Format;
use crate::layout::Layout;
use crate::output::dir as out_dir;
use crate::verity::VerityStore;
use crate::{quote, Error, Result};

pub use crate::verity::EMPTY_LABEL;
/// A GPT partition name's length limit (UTF-16 units; the names here are ASCII).
const GPT_NAME_MAX: usize = 36;
/// The file listing the artifacts' hashes, as `sha256sum` writes it.
pub const SHA256SUMS: &str = "SHA256SUMS";

/// What the toplevel records of itself as an appliance: `"org.imgbuild.v1".appliance`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApplianceRecord {
    /// `system.image.id`.
    pub image_id: String,
    /// `system.image.version`.
    pub version: String,
}

fn field<'a>(rec: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    rec.get(key).filter(|v| !v.is_null())
}

/// Whether `s` is a name sysupdate's patterns take whole: non-empty, ASCII letters, digits
/// and `extra`, no `_` (which separates the fields of a name).
fn plain(s: &str, extra: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || extra.contains(c))
}

impl ApplianceRecord {
    /// The record of `spec`, or why the toplevel is not configured for an appliance (the
    /// NixOS option to set, by name).
    pub fn of(spec: &BootSpec) -> std::result::Result<ApplianceRecord, String> {
        let rec = spec
            .imgbuild
            .as_ref()
            .and_then(|e| e.other.get("appliance"))
            .filter(|v| !v.is_null())
            .ok_or_else(|| {
                "boot.json has no \"org.imgbuild.v1\".appliance record: it is not configured \
                 as an appliance (a systemd initrd that opens the dm-verity store, \
                 system.image.id and system.image.version)"
                    .to_string()
            })?;
        for (key, option) in [
            ("systemdInitrd", "boot.initrd.systemd.enable"),
            ("dmVerity", "boot.initrd.systemd.dmVerity.enable"),
        ] {
            if field(rec, key).and_then(|v| v.as_bool()) != Some(true) {
                return Err(format!(
                    "its initrd cannot open the dm-verity store from `usrhash=` \
                     (\"org.imgbuild.v1\".appliance.{key} is not true): set {option} = true"
                ));
            }
        }
        let text = |key: &str, option: &str, extra: &str| {
            let s = field(rec, key).and_then(|v| v.as_str()).unwrap_or("");
            if plain(s, extra) {
                Ok(s.to_string())
            } else {
                Err(format!(
                    "{option} is `{}`: an appliance's image id and version name its \
                     systemd-sysupdate artifacts and slots, so they are set, and made of \
                     ASCII letters, digits and `{extra}` (no `_`, which separates them)",
                    quote(s)
                ))
            }
        };
        let r = ApplianceRecord {
            image_id: text("imageId", "system.image.id", ".-")?,
            // No `+`: systemd-boot reads `+<tries>` in the UKI's name as a boot counter.
            version: text("imageVersion", "system.image.version", ".~^-")?,
        };
        let longest = r.verity_label();
        if longest.len() > GPT_NAME_MAX {
            return Err(format!(
                "slot A's GPT name `{}` would be {} characters, over GPT's {GPT_NAME_MAX}: \
                 shorten system.image.id or system.image.version",
                quote(&longest),
                longest.len()
            ));
        }
        Ok(r)
    }

    /// `<id>_<version>`: the store partition's GPT name in slot A.
    pub fn store_label(&self) -> String {
        format!("{}_{}", self.image_id, self.version)
    }

    /// `<id>_<version>_verity`: its hash partition's.
    pub fn verity_label(&self) -> String {
        format!("{}_{}_verity", self.image_id, self.version)
    }

    /// `<id>_<version>.efi`: the UKI's file name in `EFI/Linux/`.
    pub fn uki_file(&self) -> String {
        format!("{}_{}.efi", self.image_id, self.version)
    }

    /// `<id>_*`: loader.conf's `default`, every version's UKI (systemd-boot sorts them by
    /// version, newest first, entries whose tries are used up last, and boots the first match).
    pub fn uki_default(&self) -> String {
        format!("{}_*", self.image_id)
    }
}

/// The record of `spec` for a format with B slots (`None` without), refused as the system
/// check refuses it.
pub(crate) fn record_for(format: &Format, spec: &BootSpec) -> Result<Option<ApplianceRecord>> {
    if format.empty_slots().is_empty() {
        return Ok(None);
    }
    ApplianceRecord::of(spec)
        .map(Some)
        .map_err(|reason| Error::not_for_format(&format.name, reason))
}

/// One artifact in the manifest.
#[derive(Clone, Debug, Serialize)]
pub struct Artifact {
    /// Its file name in the directory.
    pub name: String,
    /// `usr`, `usr-verity` or `uki`.
    pub kind: &'static str,
    /// Bytes.
    pub size: u64,
    /// SHA-256, hex (as `SHA256SUMS` lists it).
    pub sha256: String,
}

/// An empty B slot in the manifest.
#[derive(Clone, Debug, Serialize)]
pub struct EmptySlot {
    /// The partition's name in the format.
    pub name: String,
    /// Its number in the table, from 1.
    pub number: usize,
    /// Its first byte.
    pub offset: u64,
    /// Its length.
    pub size: u64,
    /// Its GPT type GUID.
    #[serde(rename = "type")]
    pub type_guid: String,
    /// The format name of its A slot.
    pub of: String,
}

/// The manifest's `sysupdate` object.
#[derive(Clone, Debug, Serialize)]
pub struct SysupdateManifest {
    /// `system.image.id`.
    pub image_id: String,
    /// `system.image.version`.
    pub version: String,
    /// The artifacts' directory, beside the image (its file name); empty for a dry run.
    pub directory: String,
    /// The artifacts, sorted by name (as `SHA256SUMS` lists them).
    pub artifacts: Vec<Artifact>,
    /// The empty B slots, in table order.
    pub empty_slots: Vec<EmptySlot>,
}

/// The artifacts' directory of a build writing `output`: `OUT.sysupdate`.
pub(crate) fn dir_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_os_string();
    s.push(".sysupdate");
    PathBuf::from(s)
}

fn tmp_dir(dir: &Path) -> PathBuf {
    let mut s = dir.as_os_str().to_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

/// Whether `e` is a file an artifacts directory of imgbuild's holds.
fn artifact(e: &fs::DirEntry) -> bool {
    let name = e.file_name();
    let name = name.to_string_lossy();
    let ours = name == SHA256SUMS
        || [".usr.raw", ".usr-verity.raw", ".efi"]
            .iter()
            .any(|s| name.ends_with(s));
    ours && e.file_type().is_ok_and(|t| t.is_file())
}

/// What the refusals call this build.
const WHAT: &str = "an appliance build";

/// Refuses, before the build, an `OUT.sysupdate` that is not a directory of artifacts
/// (replacing it would lose what else is there).
pub(crate) fn check_dir(output: &Path) -> Result<()> {
    let dir = dir_path(output);
    let bad = |reason: String| {
        Err(Error::BadOutput {
            path: output.to_path_buf(),
            reason,
        })
    };
    match fs::symlink_metadata(&dir) {
        Err(_) => return Ok(()),
        Ok(m) if !m.is_dir() => {
            return bad(format!(
                "would need `{}` for its sysupdate artifacts, which exists and is not a \
                 directory",
                dir.display()
            ))
        }
        Ok(_) => {}
    }
    match out_dir::stranger(&dir, &artifact)? {
        None => Ok(()),
        Some(name) => bad(format!(
            "would replace `{}`, which holds `{}`, not a sysupdate artifact",
            dir.display(),
            quote(&name)
        )),
    }
}

/// The artifacts written to `OUT.sysupdate.tmp`, renamed into place by [`Pending::persist`];
/// the temporary directory is removed when this is dropped unpersisted.
pub(crate) struct Pending {
    tmp: PathBuf,
    dir: PathBuf,
    done: bool,
}

impl Pending {
    /// Puts the new directory in place of `OUT.sysupdate` (artifacts of an earlier build,
    /// [`check_dir`] made sure), as the netboot directory is (`output::dir`).
    pub(crate) fn persist(mut self) -> Result<()> {
        out_dir::put_in_place(&self.tmp, &self.dir, &artifact, WHAT)?;
        self.done = true;
        Ok(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: what a failed build leaves behind is only its temporary directory.
            let _ = fs::remove_dir_all(&self.tmp);
        }
    }
}

/// The manifest's account of the version and the empty slots (`artifacts` empty).
pub(crate) fn manifest(
    format: &Format,
    rec: &ApplianceRecord,
    layout: &Layout,
) -> SysupdateManifest {
    let empty_slots = format
        .empty_slots()
        .iter()
        .filter_map(|(p, a)| {
            let pl = layout.partitions.iter().find(|l| l.name == p.name)?;
            Some(EmptySlot {
                name: p.name.clone(),
                number: pl.number,
                offset: pl.start,
                size: pl.size,
                type_guid: p.type_id.map(|t| t.to_string()).unwrap_or_default(),
                of: format.partitions[*a].name.clone(),
            })
        })
        .collect();
    SysupdateManifest {
        image_id: rec.image_id.clone(),
        version: rec.version.clone(),
        directory: String::new(),
        artifacts: Vec::new(),
        empty_slots,
    }
}

/// Writes the version's artifacts to `OUT.sysupdate.tmp` and lists them in `m`: the store
/// image (linked, or copied where the file system has no hard links) as the `.usr.raw`, the
/// hash area, `uki` (the UKI's bytes as on the ESP) and `SHA256SUMS`.
pub(crate) fn write(
    output: &Path,
    rec: &ApplianceRecord,
    store: &VerityStore,
    uki: &[u8],
    m: &mut SysupdateManifest,
) -> Result<Pending> {
    let dir = dir_path(output);
    let tmp = tmp_dir(&dir);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { op, path, source }
    };
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(io("removing a stale", &tmp))?;
    }
    fs::create_dir(&tmp).map_err(io("creating", &tmp))?;
    let pending = Pending {
        tmp: tmp.clone(),
        dir: dir.clone(),
        done: false,
    };
    let info = &store.info;
    let uuids = info.partition_uuids();
    let stem = format!("{}_{}", rec.image_id, rec.version);
    let usr = format!("{stem}_{}.usr.raw", uuids.data);
    let usr_path = tmp.join(&usr);
    if fs::hard_link(&store.image.path, &usr_path).is_err() {
        fs::copy(&store.image.path, &usr_path)
            .map_err(io("copying the store image to", &usr_path))?;
    }
    // Readable as the other artifacts are (the store image was made private to the build).
    fs::set_permissions(&usr_path, fs::Permissions::from_mode(0o644))
        .map_err(io("setting the mode of", &usr_path))?;
    let mut artifacts = vec![Artifact {
        name: usr,
        kind: "usr",
        size: info.data_size,
        sha256: hex(&info.data_sha256),
    }];
    let mut small = |name: String, kind: &'static str, bytes: &[u8]| -> Result<()> {
        let path = tmp.join(&name);
        write_file(&path, bytes).map_err(io("writing", &path))?;
        artifacts.push(Artifact {
            name,
            kind,
            size: bytes.len() as u64,
            sha256: hex(&Sha256::digest(bytes)),
        });
        Ok(())
    };
    small(
        format!("{stem}_{}.usr-verity.raw", uuids.verity),
        "usr-verity",
        &store.hash_area,
    )?;
    small(rec.uki_file(), "uki", uki)?;
    artifacts.sort_by(|a, b| a.name.cmp(&b.name));
    let sums: String = artifacts
        .iter()
        .map(|a| format!("{}  {}\n", a.sha256, a.name))
        .collect();
    let path = tmp.join(SHA256SUMS);
    write_file(&path, sums.as_bytes()).map_err(io("writing", &path))?;
    out_dir::sync(&tmp)?;
    m.directory = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    m.artifacts = artifacts;
    Ok(pending)
}

fn write_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(appliance: serde_json::Value) -> BootSpec {
        crate::system_check::tests::spec_with(&format!(
            r#", "org.imgbuild.v1": {{"appliance": {appliance}}}"#
        ))
    }

    #[test]
    fn a_complete_record_names_the_slots_and_the_uki() {
        let r = ApplianceRecord::of(&spec(serde_json::json!({
            "imageId": "kiosk", "imageVersion": "1.2", "systemdInitrd": true, "dmVerity": true
        })))
        .unwrap();
        assert_eq!(r.store_label(), "kiosk_1.2");
        assert_eq!(r.verity_label(), "kiosk_1.2_verity");
        assert_eq!(r.uki_file(), "kiosk_1.2.efi");
        assert_eq!(r.uki_default(), "kiosk_*");
    }

    #[test]
    fn an_incomplete_record_names_the_option_to_set() {
        let ok = serde_json::json!({
            "imageId": "kiosk", "imageVersion": "1", "systemdInitrd": true, "dmVerity": true
        });
        let with = |k: &str, v: serde_json::Value| {
            let mut r = ok.clone();
            r[k] = v;
            ApplianceRecord::of(&spec(r)).unwrap_err()
        };
        assert!(with("systemdInitrd", false.into()).contains("boot.initrd.systemd.enable"));
        assert!(with("dmVerity", serde_json::Value::Null).contains("dmVerity.enable"));
        assert!(with("imageId", "".into()).contains("system.image.id"));
        assert!(with("imageVersion", "1_2".into()).contains("system.image.version"));
        assert!(with("imageVersion", "1+2".into()).contains("system.image.version"));
        assert!(with("imageId", "a".repeat(40).into()).contains("over GPT's 36"));
        let none = crate::system_check::tests::spec_with("");
        assert!(ApplianceRecord::of(&none)
            .unwrap_err()
            .contains("no \"org.imgbuild.v1\".appliance"));
    }

    #[test]
    fn only_artifacts_are_replaced() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("a.img");
        check_dir(&out).unwrap();
        fs::create_dir(dir_path(&out)).unwrap();
        fs::write(dir_path(&out).join("SHA256SUMS"), "x").unwrap();
        check_dir(&out).unwrap();
        fs::write(dir_path(&out).join("notes.txt"), "mine").unwrap();
        let e = check_dir(&out).unwrap_err().to_string();
        assert!(e.contains("notes.txt"), "{e}");
    }
}
