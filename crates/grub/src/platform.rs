//! The files of GRUB's platform directory, as bytes the caller read.

use std::collections::BTreeMap;

use crate::Error;

/// The files of one GRUB platform directory (`lib/grub/i386-pc`), by file name.
///
/// Only the files an image needs are looked up: `kernel.img`, `lzma_decompress.img`,
/// `diskboot.img`, `boot.img`, `moddep.lst` and the `NAME.mod` of each module.
#[derive(Debug, Default, Clone)]
pub struct Platform {
    files: BTreeMap<String, Vec<u8>>,
}

impl Platform {
    /// An empty platform directory.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the file `name` (a file name, no directory) with its bytes.
    pub fn insert(&mut self, name: impl Into<String>, bytes: Vec<u8>) {
        self.files.insert(name.into(), bytes);
    }

    /// The file names, in byte order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.files.keys().map(String::as_str)
    }

    /// The bytes of `name`, or [`Error::MissingFile`].
    pub fn get(&self, name: &str) -> Result<&[u8], Error> {
        self.files
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| Error::MissingFile(name.to_owned()))
    }

    /// The bytes of `name`, which must be exactly `len` bytes long (a boot sector image).
    pub(crate) fn get_sized(&self, name: &str, len: usize) -> Result<&[u8], Error> {
        let bytes = self.get(name)?;
        if bytes.len() == len {
            Ok(bytes)
        } else {
            Err(Error::WrongSize {
                name: name.to_owned(),
                size: bytes.len(),
                expected: len,
            })
        }
    }
}
