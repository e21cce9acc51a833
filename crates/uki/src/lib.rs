//! Unified Kernel Images (the UAPI Group's UKI specification) as systemd's `ukify build`
//! assembles them, from a systemd EFI stub (`linux<arch>.efi.stub`) and the system's kernel,
//! initrd, command line, os-release and kernel version.
//!
//! * [`pe`]: a bounded reader of PE/COFF headers (the stub, a kernel's EFI header, a UKI read
//!   back); every offset checked, typed errors, no panics on hostile bytes.
//! * [`Sections`] -> [`Sections::parts`]: ukify's `make_uki`: the sections in its order
//!   (`.osrel`, `.cmdline`, `.dtb`, `.uname`, `.initrd`, `.linux`, `.sbat`), the command line
//!   with its whitespace collapsed (`' '.join(cmdline.split())`), `.linux` with the kernel's
//!   own `SizeOfImage` as `VirtualSize` when the kernel is a PE image, `.sbat` merged from the
//!   stub's, the kernel's and ukify's default text ([`sbat`]).
//! * [`assemble`]: ukify's `pe_add_sections` (alignment, characteristics, header updates;
//!   the rules are listed there), giving a [`Layout`]: the stub's bytes with updated headers,
//!   small sections, zeros, and the kernel and initrd as *external* runs the caller supplies,
//!   so they need not be held in memory to be placed.
//! * [`read`]: a UKI read back (its sections, command line, kernel version, os-release's
//!   `PRETTY_NAME`) for `inspect`.
//! * [`sample`]: a small stub-shaped PE image for tests and fuzz seeds.
//!
//! Nothing here reads a file, a clock or the environment: the same inputs give the same
//! bytes, and the stub's `TimeDateStamp` is kept as ukify keeps it.

#![warn(missing_docs)]
#![cfg_attr(test, allow(clippy::unwrap_used))]
// Casts that may truncate, lose a sign or wrap are spelled out (`try_from`); tests may cast.
#![cfg_attr(
    not(test),
    warn(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_possible_wrap
    )
)]

mod assemble;
pub mod pe;
mod read;
pub mod sample;
pub mod sbat;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_debian;

pub use assemble::{assemble, Data, Layout, Part, Piece, Placed};
pub use read::{read, read_prefix, UkiInfo, MAX_TEXT};

/// Why a UKI cannot be assembled or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// Not a PE image, or its headers do not fit in it.
    #[error("not a PE image: {what}")]
    NotPe {
        /// What is wrong.
        what: &'static str,
    },
    /// More sections than a PE image may have.
    #[error("{count} sections, more than the {max} a PE image may have", max = pe::MAX_SECTIONS)]
    TooManySections {
        /// The count.
        count: usize,
    },
    /// `SectionAlignment` or `FileAlignment` is not a power of two, or a stub's
    /// `FileAlignment` is above 64 KiB.
    #[error("{what} {value:#x} is not a power of two (or, of a stub, above 64 KiB)")]
    BadAlignment {
        /// Which field.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// A section's data lies (partly) past the end of the image.
    #[error(
        "section `{name}` ({len} bytes at {offset:#x}) lies past the end of the {file}-byte image"
    )]
    SectionOutside {
        /// The section.
        name: String,
        /// Its `PointerToRawData`.
        offset: u32,
        /// Its length.
        len: u32,
        /// The image's length.
        file: u64,
    },
    /// A section name that is empty, longer than 8 bytes or not printable ASCII (ukify's
    /// `check_name`: the stub reads no longer names).
    #[error("bad section name `{name}`: 1 to 8 printable ASCII characters")]
    BadSectionName {
        /// The name.
        name: String,
    },
    /// The stub carries an Authenticode signature (ukify refuses it too).
    #[error("the stub is signed (it has a certificate table)")]
    SignedStub,
    /// No room left in the headers for one more section header.
    #[error("no room in the stub's headers for the header of section `{name}`")]
    NoHeaderRoom {
        /// The section.
        name: String,
    },
    /// A section the stub already has (`.sbat`) is too small for the new data.
    #[error("section `{name}` of the stub has room for {room} bytes, {needed} needed")]
    NoRoomInSection {
        /// The section.
        name: String,
        /// The new data's length.
        needed: u64,
        /// Its `SizeOfRawData`.
        room: u32,
    },
    /// External data given for a section the stub already has.
    #[error("section `{name}` of the stub can only be replaced by bytes in memory")]
    ExternalInStub {
        /// The section.
        name: String,
    },
    /// A size past what a PE header field (32 bits) or memory holds.
    #[error("size {size} does not fit a PE image")]
    TooBig {
        /// The size.
        size: u64,
    },
    /// Fewer external sections' data given than the layout has.
    #[error("no data given for external section {index}")]
    ExternalMissing {
        /// Its index.
        index: usize,
    },
    /// External data of another length than declared.
    #[error("external section {index} was declared {declared} bytes, {given} given")]
    ExternalLength {
        /// Its index.
        index: usize,
        /// The declared length.
        declared: u64,
        /// The given length.
        given: u64,
    },
    /// A `.sbat` section that is not UTF-8 text (ukify's decode fails).
    #[error("the .sbat section of input {input} is not UTF-8")]
    BadSbat {
        /// Which input (0: the stub, 1: the kernel).
        input: usize,
    },
}

/// What a UKI holds besides the stub: ukify's `--os-release`, `--cmdline`, `--devicetree`,
/// `--uname`, `--initrd` and `--linux`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sections {
    /// The os-release file's bytes (`.osrel`, copied verbatim).
    pub os_release: Vec<u8>,
    /// The kernel command line (`.cmdline`; whitespace collapsed, as ukify does with a
    /// command line given as text).
    pub cmdline: String,
    /// A device tree blob's length, supplied as external data (`.dtb`).
    pub devicetree: Option<u64>,
    /// The kernel version (`.uname`), e.g. `6.12.31`.
    pub uname: Option<String>,
    /// The initrd's length (`.initrd`), supplied as external data.
    pub initrd: u64,
    /// The kernel (`.linux`), supplied as external data.
    pub linux: Kernel,
}

/// What ukify reads of the kernel besides its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Kernel {
    /// Its length.
    pub len: u64,
    /// Its `SizeOfImage` when it is a PE image (an EFI-stub kernel): `.linux`'s `VirtualSize`.
    pub size_of_image: Option<u32>,
    /// Its own `.sbat` section's bytes, if it has one.
    pub sbat: Option<Vec<u8>>,
}

impl Kernel {
    /// Reads what ukify uses of a kernel image: `SizeOfImage` and `.sbat` when it parses as
    /// a PE image (ukify ignores a kernel that does not).
    pub fn read(kernel: &[u8]) -> Self {
        let len = kernel.len() as u64;
        let Ok(pe) = pe::Pe::parse(kernel) else {
            return Self {
                len,
                ..Self::default()
            };
        };
        let sbat = pe
            .section(".sbat")
            .and_then(|s| {
                pe::slice(
                    kernel,
                    s.pointer_to_raw_data.into(),
                    s.size_of_raw_data.into(),
                )
            })
            .map(<[u8]>::to_vec);
        Self {
            len,
            size_of_image: Some(pe.size_of_image),
            sbat,
        }
    }
}

/// The command line as ukify stores one given as text: split at whitespace (Python's
/// `str.split()`), joined by single spaces.
pub fn collapse_whitespace(cmdline: &str) -> String {
    cmdline
        .split(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Sections {
    /// The sections ukify adds, in its order, with the `.sbat` merged from the stub's
    /// (`stub`) and the kernel's. External data, in order: the device tree (if any), the
    /// initrd, the kernel.
    pub fn parts(&self, stub: &[u8]) -> Result<Vec<Part>, Error> {
        let stub_pe = pe::Pe::parse(stub)?;
        let stub_sbat = stub_pe.section(".sbat").map(|s| {
            pe::slice(
                stub,
                s.pointer_to_raw_data.into(),
                s.size_of_raw_data.into(),
            )
            .unwrap_or_default()
        });
        let bytes = |name: &str, b: Vec<u8>| Part {
            name: name.to_owned(),
            data: Data::Bytes(b),
            virtual_size: None,
        };
        let external = |name: &str, len: u64| Part {
            name: name.to_owned(),
            data: Data::External { len },
            virtual_size: None,
        };
        let mut parts = vec![bytes(".osrel", self.os_release.clone())];
        let cmdline = collapse_whitespace(&self.cmdline);
        if !cmdline.is_empty() {
            parts.push(bytes(".cmdline", cmdline.into_bytes()));
        }
        if let Some(len) = self.devicetree {
            parts.push(external(".dtb", len));
        }
        if let Some(u) = self.uname.as_ref().filter(|u| !u.is_empty()) {
            parts.push(bytes(".uname", u.clone().into_bytes()));
        }
        parts.push(external(".initrd", self.initrd));
        parts.push(Part {
            virtual_size: self.linux.size_of_image,
            ..external(".linux", self.linux.len)
        });
        let pes: Vec<&[u8]> = stub_sbat
            .into_iter()
            .chain(self.linux.sbat.as_deref())
            .collect();
        parts.push(bytes(".sbat", sbat::merge(&pes, &[sbat::UKI_DEFAULT])?));
        Ok(parts)
    }
}
