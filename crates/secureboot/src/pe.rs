//! The PE/COFF facts Authenticode needs, read without trusting the file: where the CheckSum
//! and the Certificate Table directory entry are, the sections' file ranges, the certificate
//! table; the image hash ("Calculating the PE Image Hash" of the PE/COFF specification), the
//! CheckSum, and a signature embedded as a `WIN_CERTIFICATE`.

use sha2::{Digest, Sha256};

/// The largest PE image read (a UKI with a big initrd is well below it).
pub const MAX_IMAGE: usize = 1 << 30;

/// Sections read at most (the Windows loader's limit).
pub const MAX_SECTIONS: usize = 96;

/// `WIN_CERTIFICATE.wRevision` of Authenticode signatures.
pub const WIN_CERT_REVISION_2_0: u16 = 0x0200;

/// `WIN_CERTIFICATE.wCertificateType` of a PKCS#7 SignedData.
pub const WIN_CERT_TYPE_PKCS_SIGNED_DATA: u16 = 0x0002;

/// Why a file is not a PE image this crate can sign.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeError {
    /// Larger than [`MAX_IMAGE`].
    #[error("a PE image of {len} bytes is larger than the {MAX_IMAGE} bytes read")]
    TooBig {
        /// Its length.
        len: usize,
    },
    /// A header or field lies (partly) past the end of the file.
    #[error("the PE image ends at {len} bytes, before its {what} (bytes {start}..{end})")]
    Truncated {
        /// The structure that is cut off.
        what: &'static str,
        /// Its first byte.
        start: u64,
        /// One past its last byte.
        end: u64,
        /// The file's length.
        len: usize,
    },
    /// No `MZ` at offset 0 or no `PE\0\0` where `e_lfanew` points.
    #[error("not a PE image: no {what} signature")]
    NoSignature {
        /// `MZ` or `PE`.
        what: &'static str,
    },
    /// An optional header magic other than PE32 (0x10b) or PE32+ (0x20b).
    #[error("unknown PE optional header magic {magic:#x}")]
    Magic {
        /// The magic found.
        magic: u16,
    },
    /// Fewer than five data directories: no Certificate Table entry.
    #[error("the PE optional header has {count} data directories, no Certificate Table entry")]
    NoCertDirectory {
        /// `NumberOfRvaAndSizes` (or what the optional header's size allows).
        count: u32,
    },
    /// More sections than [`MAX_SECTIONS`].
    #[error("the PE image has {count} sections, more than the {MAX_SECTIONS} read")]
    TooManySections {
        /// `NumberOfSections`.
        count: u16,
    },
    /// `SizeOfHeaders` smaller than the headers it must hold.
    #[error("SizeOfHeaders {size} does not hold the headers and section table ({needed} bytes)")]
    Headers {
        /// `SizeOfHeaders`.
        size: u64,
        /// The end of the section table.
        needed: u64,
    },
    /// A section's raw data starts inside the headers or overlaps another section.
    #[error("section {index}'s raw data ({start}..{end}) overlaps the headers or another section")]
    Overlap {
        /// The section's index in the table.
        index: usize,
        /// `PointerToRawData`.
        start: u64,
        /// `PointerToRawData + SizeOfRawData`.
        end: u64,
    },
    /// A certificate table that is not at the end of the file, or inside the sections.
    #[error(
        "the certificate table ({start}..{end}) is not at the end of the {len}-byte file after \
         the sections"
    )]
    CertTable {
        /// Its offset (the directory entry's VirtualAddress, a file offset).
        start: u64,
        /// Offset + size.
        end: u64,
        /// The file's length.
        len: usize,
    },
    /// A signature too big for the certificate table's 32-bit sizes.
    #[error("a signature of {len} bytes does not fit a WIN_CERTIFICATE")]
    SignatureTooBig {
        /// Its length.
        len: usize,
    },
}

/// Where Authenticode's fields are in one PE image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Offset of the optional header's CheckSum (4 bytes).
    pub checksum: usize,
    /// Offset of the Certificate Table data directory entry (8 bytes).
    pub cert_dir: usize,
    /// `SizeOfHeaders`.
    pub size_of_headers: usize,
    /// Sections with raw data as (file offset, length), in file order.
    pub sections: Vec<(usize, usize)>,
    /// The certificate table as (file offset, length), when the image is signed.
    pub cert_table: Option<(usize, usize)>,
}

fn bytes<'a>(b: &'a [u8], what: &'static str, at: usize, n: usize) -> Result<&'a [u8], PeError> {
    let end = at.checked_add(n);
    match end.and_then(|end| b.get(at..end)) {
        Some(s) => Ok(s),
        None => Err(PeError::Truncated {
            what,
            start: at as u64,
            end: end.map_or(u64::MAX, |e| e as u64),
            len: b.len(),
        }),
    }
}

fn u16_at(b: &[u8], what: &'static str, at: usize) -> Result<u16, PeError> {
    let s = bytes(b, what, at, 2)?;
    Ok(u16::from_le_bytes([s[0], s[1]]))
}

fn u32_at(b: &[u8], what: &'static str, at: usize) -> Result<u32, PeError> {
    let s = bytes(b, what, at, 4)?;
    Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn usize_of(v: u32) -> usize {
    // u32 always fits usize on the 32- and 64-bit targets imgbuild builds for.
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// The COFF and optional headers' fields the layout starts from.
struct Headers {
    /// Sections in the table.
    count: u16,
    /// Where the optional header starts, and its size.
    opt: usize,
    opt_size: usize,
    /// Where the Certificate Table entry is, and what it says.
    cert_dir: usize,
    cert_off: usize,
    cert_len: usize,
}

impl Headers {
    /// Reads the headers at the start of `image` (the first KiB of a usual image suffices).
    fn parse(image: &[u8]) -> Result<Headers, PeError> {
        if bytes(image, "DOS header", 0, 64)?[..2] != *b"MZ" {
            return Err(PeError::NoSignature { what: "MZ" });
        }
        let pe = usize_of(u32_at(image, "DOS header", 0x3c)?);
        if bytes(image, "PE signature", pe, 4)? != b"PE\0\0" {
            return Err(PeError::NoSignature { what: "PE" });
        }
        let coff = pe + 4;
        let count = u16_at(image, "COFF header", coff + 2)?;
        let opt_size = usize::from(u16_at(image, "COFF header", coff + 16)?);
        let opt = coff + 20;
        let magic = u16_at(image, "optional header", opt)?;
        // Offsets of NumberOfRvaAndSizes and the data directories (PE32, PE32+).
        let (rvas, dirs) = match magic {
            0x10b => (92, 96),
            0x20b => (108, 112),
            magic => return Err(PeError::Magic { magic }),
        };
        let n_dirs = u32_at(image, "optional header", opt + rvas)?;
        let fit = opt_size.saturating_sub(dirs) / 8;
        if n_dirs < 5 || fit < 5 {
            return Err(PeError::NoCertDirectory {
                count: n_dirs.min(u32::try_from(fit).unwrap_or(u32::MAX)),
            });
        }
        let cert_dir = opt + dirs + 4 * 8;
        Ok(Headers {
            count,
            opt,
            opt_size,
            cert_dir,
            cert_off: usize_of(u32_at(image, "Certificate Table entry", cert_dir)?),
            cert_len: usize_of(u32_at(image, "Certificate Table entry", cert_dir + 4)?),
        })
    }
}

/// Whether the headers at the start of a PE image declare a certificate table (as a signed
/// image's do): tells from an image's first KiB whether reading it all for its signature
/// is worth it. Nothing past the Certificate Table entry is checked.
pub fn declares_certificates(headers: &[u8]) -> Result<bool, PeError> {
    Ok(Headers::parse(headers)?.cert_len != 0)
}

impl Layout {
    /// Reads the layout of `image`, every offset checked against its length.
    pub fn parse(image: &[u8]) -> Result<Layout, PeError> {
        if image.len() > MAX_IMAGE {
            return Err(PeError::TooBig { len: image.len() });
        }
        let Headers {
            count,
            opt,
            opt_size,
            cert_dir,
            cert_off,
            cert_len,
        } = Headers::parse(image)?;
        let size_of_headers = usize_of(u32_at(image, "optional header", opt + 60)?);
        if usize::from(count) > MAX_SECTIONS {
            return Err(PeError::TooManySections { count });
        }
        let table = opt + opt_size;
        let table_end = table + usize::from(count) * 40;
        bytes(image, "section table", table, table_end - table)?;
        if size_of_headers < table_end || size_of_headers > image.len() {
            return Err(PeError::Headers {
                size: size_of_headers as u64,
                needed: table_end as u64,
            });
        }
        let mut sections = Vec::with_capacity(usize::from(count));
        for i in 0..usize::from(count) {
            let s = table + i * 40;
            let len = usize_of(u32_at(image, "section header", s + 16)?);
            let at = usize_of(u32_at(image, "section header", s + 20)?);
            if len == 0 {
                continue;
            }
            bytes(image, "section data", at, len)?;
            sections.push((at, len, i));
        }
        sections.sort_unstable();
        let mut end = size_of_headers;
        for &(at, len, index) in &sections {
            if at < end {
                return Err(PeError::Overlap {
                    index,
                    start: at as u64,
                    end: (at + len) as u64,
                });
            }
            end = at + len;
        }
        let cert_table = match cert_len {
            0 => None,
            _ => {
                let stop = cert_off.checked_add(cert_len);
                if cert_off < end || stop != Some(image.len()) {
                    return Err(PeError::CertTable {
                        start: cert_off as u64,
                        end: stop.map_or(u64::MAX, |e| e as u64),
                        len: image.len(),
                    });
                }
                Some((cert_off, cert_len))
            }
        };
        Ok(Layout {
            checksum: opt + 64,
            cert_dir,
            size_of_headers,
            sections: sections.into_iter().map(|(a, l, _)| (a, l)).collect(),
            cert_table,
        })
    }

    /// The image without its certificate table (the bytes a signature covers, padded).
    fn data_end(&self, len: usize) -> usize {
        self.cert_table.map_or(len, |(at, _)| at)
    }
}

/// The image as it is signed: without an existing certificate table (a new signature replaces
/// it), zero-padded to 8 bytes (where the certificate table must start), with the
/// Certificate Table entry cleared. Returns the bytes and their layout.
pub fn unsigned(image: &[u8]) -> Result<(Vec<u8>, Layout), PeError> {
    let layout = Layout::parse(image)?;
    let end = layout.data_end(image.len());
    let mut out = image[..end].to_vec();
    out.resize(end.next_multiple_of(8), 0);
    out[layout.cert_dir..layout.cert_dir + 8].fill(0);
    let layout = Layout {
        cert_table: None,
        ..layout
    };
    Ok((out, layout))
}

/// The Authenticode SHA-256 image hash of `image`: the headers without the CheckSum and the
/// Certificate Table entry, the sections' raw data in file order, then whatever follows the
/// last section up to the certificate table. An unsigned image is hashed as it is signed:
/// zero-padded to a multiple of 8 bytes (as `sbsign` and `osslsigncode` pad it).
pub fn image_hash(image: &[u8]) -> Result<[u8; 32], PeError> {
    let layout = Layout::parse(image)?;
    let mut h = Sha256::new();
    h.update(&image[..layout.checksum]);
    h.update(&image[layout.checksum + 4..layout.cert_dir]);
    h.update(&image[layout.cert_dir + 8..layout.size_of_headers]);
    let mut hashed = layout.size_of_headers;
    for &(at, len) in &layout.sections {
        h.update(&image[at..at + len]);
        hashed += len;
    }
    let end = layout.data_end(image.len());
    if hashed < end {
        h.update(&image[hashed..end]);
    }
    if layout.cert_table.is_none() {
        let pad = end.next_multiple_of(8) - end;
        h.update(&[0u8; 8][..pad]);
    }
    Ok(h.finalize().into())
}

/// The PE CheckSum of `image` with its CheckSum field at `checksum` counted as zero: the
/// 16-bit one's-complement-style sum of the file's little-endian words (carries folded), plus
/// the file's length.
pub fn checksum(image: &[u8], checksum: usize) -> u32 {
    let mut sum: u64 = 0;
    for (i, w) in image.chunks(2).enumerate() {
        let at = i * 2;
        if at == checksum || at == checksum + 2 {
            continue;
        }
        let word = u64::from(w[0]) | w.get(1).map_or(0, |&b| u64::from(b) << 8);
        sum += word;
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    let sum = u32::try_from(sum).expect("folded to 17 bits at most");
    // The length modulo 2^32, as the loader computes it (images here are at most 1 GiB).
    let len = u32::try_from(image.len() & 0xffff_ffff).expect("masked to 32 bits");
    sum.wrapping_add(len)
}

/// `image` with `pkcs7` (a DER ContentInfo of a SignedData) as its only certificate: any
/// certificate table removed, the file padded to 8 bytes, one `WIN_CERTIFICATE` (revision
/// 2.0, PKCS_SIGNED_DATA, its length including the padding to 8 bytes) appended, the
/// Certificate Table entry pointing at it and the CheckSum recomputed.
pub fn embed(image: &[u8], pkcs7: &[u8]) -> Result<Vec<u8>, PeError> {
    let (mut out, layout) = unsigned(image)?;
    let entry = (8 + pkcs7.len()).next_multiple_of(8);
    let too_big = || PeError::SignatureTooBig { len: pkcs7.len() };
    let entry32 = u32::try_from(entry).map_err(|_| too_big())?;
    let at = u32::try_from(out.len()).map_err(|_| too_big())?;
    if out.len() + entry > MAX_IMAGE {
        return Err(too_big());
    }
    out.extend_from_slice(&entry32.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_REVISION_2_0.to_le_bytes());
    out.extend_from_slice(&WIN_CERT_TYPE_PKCS_SIGNED_DATA.to_le_bytes());
    out.extend_from_slice(pkcs7);
    out.resize(out.len().next_multiple_of(8), 0);
    out[layout.cert_dir..layout.cert_dir + 4].copy_from_slice(&at.to_le_bytes());
    out[layout.cert_dir + 4..layout.cert_dir + 8].copy_from_slice(&entry32.to_le_bytes());
    let sum = checksum(&out, layout.checksum);
    out[layout.checksum..layout.checksum + 4].copy_from_slice(&sum.to_le_bytes());
    Ok(out)
}

/// The PKCS#7 blobs of `image`'s certificate table (the `WIN_CERTIFICATE`s of type
/// PKCS_SIGNED_DATA), in order; none for an unsigned image.
pub fn signatures(image: &[u8]) -> Result<Vec<&[u8]>, PeError> {
    let layout = Layout::parse(image)?;
    let Some((mut at, len)) = layout.cert_table else {
        return Ok(Vec::new());
    };
    let end = at + len;
    let mut out = Vec::new();
    while at + 8 <= end {
        let size = usize_of(u32_at(image, "WIN_CERTIFICATE", at)?);
        let kind = u16_at(image, "WIN_CERTIFICATE", at + 6)?;
        if size < 8 || at + size > end {
            return Err(PeError::Truncated {
                what: "WIN_CERTIFICATE",
                start: at as u64,
                end: (at + size) as u64,
                len: image.len(),
            });
        }
        if kind == WIN_CERT_TYPE_PKCS_SIGNED_DATA {
            out.push(&image[at + 8..at + size]);
        }
        at += size.next_multiple_of(8);
    }
    Ok(out)
}
