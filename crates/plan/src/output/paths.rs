//! The files a build writes, named from the output path and the output kind.

use std::path::{Path, PathBuf};

use imgbuild_blockio::OutputFile;

use crate::options::Output;

/// The raw image's path when the output is compressed: `foo.img.zst` -> `foo.img`.
pub(crate) fn raw_path_for(output: &Path) -> PathBuf {
    let s = output.as_os_str().to_string_lossy();
    match s.strip_suffix(".zst") {
        Some(base) => PathBuf::from(base),
        None => PathBuf::from(format!("{s}.raw")),
    }
}

/// The files a build writes.
pub(crate) struct Outputs {
    pub image: PathBuf,
    /// The raw disk: the image itself, or beside a compressed image or a container with
    /// --keep-raw.
    pub raw: Option<PathBuf>,
    /// The raw disk's block map: beside a raw or zstd image (bmaptool writes either), or
    /// beside the raw disk kept next to a container.
    pub bmap: Option<PathBuf>,
    /// The manifest (none for `imgbuild ext4`).
    pub manifest: Option<PathBuf>,
}

impl Outputs {
    /// A disk image's files.
    pub fn of(out: &Output) -> Outputs {
        let image = out.path.clone();
        let kind = out.container.kind();
        let is_raw = kind.is_raw_disk(out.compression);
        let raw_name = if is_raw {
            image.clone()
        } else {
            raw_path_for(&image)
        };
        let raw = if is_raw {
            Some(image.clone())
        } else {
            out.keep_raw.then(|| raw_name.clone())
        };
        Outputs {
            bmap: (kind.bmap() || raw.is_some()).then(|| suffixed(&raw_name, ".bmap")),
            manifest: Some(suffixed(&image, ".json")),
            image,
            raw,
        }
    }

    /// A bare raw file, nothing beside it (`imgbuild ext4`).
    pub fn bare(path: &Path) -> Outputs {
        Outputs {
            image: path.to_path_buf(),
            raw: Some(path.to_path_buf()),
            bmap: None,
            manifest: None,
        }
    }

    /// Every path a build may create: each file and its temporary.
    pub fn all(&self) -> Vec<PathBuf> {
        let mut finals = vec![self.image.clone()];
        finals.extend(self.raw.clone().filter(|r| *r != self.image));
        finals.extend(self.bmap.clone());
        finals.extend(self.manifest.clone());
        let mut all = Vec::new();
        for f in finals {
            let tmp = OutputFile::tmp_path(&f);
            all.push(f);
            all.push(tmp);
        }
        all
    }
}

/// `path` with `suffix` appended (`nixos.img` -> `nixos.img.json`).
pub(crate) fn suffixed(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `dir/nixos.img` -> `nixos.img`: the manifest names the outputs beside it, not the host's
/// directories.
pub(crate) fn file_name(p: &Path) -> String {
    p.file_name().map_or_else(
        || p.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
