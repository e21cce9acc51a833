//! Stage 1, the inputs: the toplevel, its closure (closureInfo, the Nix database, or a scan)
//! and its boot spec.

use std::path::PathBuf;

use imgbuild_boot as boot;
use imgbuild_nix::{BootSpec, Closure, StorePath, StoreRoot, StoreSubpath};

use crate::error::nix;
use crate::format::Format;
use crate::{Error, Result};

/// Where the closure comes from.
#[derive(Clone, Debug)]
pub struct InputSpec {
    /// `./result` or a store path.
    pub closure: PathBuf,
    /// Where `/nix/store` lives on this host (`/` normally).
    pub store_root: PathBuf,
    /// nixpkgs `closureInfo` output, if any.
    pub closure_info: Option<PathBuf>,
}

/// How the closure was enumerated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ClosureSource {
    /// From nixpkgs' closureInfo (`--closure-info`).
    ClosureInfo,
    /// From the Nix database of the store root.
    Database,
    /// By scanning the store paths' references.
    Scan,
}

/// The loaded inputs: toplevel, its closure and its boot spec.
pub struct Inputs {
    /// What was asked for (paths as given), so the output can be checked against them.
    pub spec: InputSpec,
    /// The store the closure is read from.
    pub store: StoreRoot,
    /// The system toplevel's store path.
    pub toplevel: StorePath,
    /// Every store path the toplevel needs, with NAR sizes and hashes.
    pub closure: Closure,
    /// The toplevel's `boot.json`.
    pub bootspec: BootSpec,
    /// How the closure was enumerated.
    pub source: ClosureSource,
}

impl Inputs {
    /// Resolve the toplevel and enumerate its closure: closureInfo if given, else the Nix
    /// database under the store root, else a scan of the store like Nix's reference scanner
    /// (NAR hashes on `threads` threads: none or 0 for every core).
    pub fn load(spec: &InputSpec, threads: Option<usize>) -> Result<Inputs> {
        crate::pool(crate::threads(threads))?.install(|| Self::load_here(spec))
    }

    fn load_here(spec: &InputSpec) -> Result<Inputs> {
        let store = StoreRoot::new(&spec.store_root);
        let toplevel = imgbuild_nix::resolve_toplevel(&spec.closure, &spec.store_root)
            .map_err(nix(format!("--closure `{}`", spec.closure.display())))?;
        let db = spec.store_root.join(imgbuild_nix::DB_PATH);
        let (closure, source) = if let Some(ci) = &spec.closure_info {
            let c = Closure::from_closure_info(ci, &toplevel)
                .map_err(nix(format!("--closure-info `{}`", ci.display())))?;
            (c, ClosureSource::ClosureInfo)
        } else if db.exists() {
            let c = Closure::from_db(&spec.store_root, &toplevel)
                .map_err(nix("reading the closure from the Nix database"))?;
            (c, ClosureSource::Database)
        } else {
            let c = Closure::from_scan(&spec.store_root, &toplevel)
                .map_err(nix(format!("scanning the closure of {toplevel}")))?;
            (c, ClosureSource::Scan)
        };
        closure
            .check_present(&spec.store_root)
            .map_err(nix("checking the closure"))?;
        let bootspec = BootSpec::read(&spec.store_root, &toplevel)
            .map_err(nix(format!("boot spec of {toplevel}")))?;
        Ok(Inputs {
            spec: spec.clone(),
            store,
            toplevel,
            closure,
            bootspec,
            source,
        })
    }
}

/// The kernel `spec` boots, or [`Error::NoKernel`] for `format`: a container system's
/// toplevel (boot.isContainer) has none.
pub(crate) fn kernel<'a>(format: &Format, spec: &'a BootSpec) -> Result<&'a StoreSubpath> {
    spec.kernel.as_ref().ok_or_else(|| Error::NoKernel {
        format: format.name.clone(),
        toplevel: spec.toplevel.to_string(),
    })
}

/// The boot entry the boot loader files describe (refused without a kernel, see [`kernel`]).
pub(crate) fn boot_entry(
    format: &Format,
    spec: &BootSpec,
    dtbs: Option<String>,
) -> Result<boot::BootEntry> {
    Ok(boot::BootEntry {
        toplevel: spec.toplevel.to_string(),
        init: spec.init.to_path_buf().display().to_string(),
        kernel: kernel(format, spec)?.to_path_buf().display().to_string(),
        initrd: spec
            .initrd
            .as_ref()
            .map(|i| i.to_path_buf().display().to_string()),
        kernel_params: spec.kernel_params.clone(),
        label: spec.label.clone(),
        system: spec.system.clone(),
        dtbs,
        devicetree: None,
    })
}

/// The `dtbs` store directory of the toplevel (`<toplevel>/dtbs`), resolved logically.
pub(crate) fn toplevel_dtbs(inputs: &Inputs) -> Result<Option<String>> {
    let link = inputs.toplevel.join("dtbs");
    let host = inputs
        .store
        .root()
        .join(link.strip_prefix("/").unwrap_or(&link));
    if std::fs::symlink_metadata(&host).is_err() {
        return Ok(None);
    }
    let sub = inputs
        .store
        .canonicalize_logical(&link)
        .map_err(nix(format!("resolving {}", link.display())))?;
    Ok(Some(sub.to_path_buf().display().to_string()))
}
