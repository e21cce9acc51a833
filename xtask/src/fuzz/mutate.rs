//! Mutations of binary seeds (field-aware first, then bytes of hot ranges, then anywhere)
//! and the checksum fixups that let them past the first check: GPT header and entry CRC-32,
//! ext4 `metadata_csum` (superblock, group descriptors, inodes), VHD footer and dynamic
//! header sums, VHDX header and region table CRC-32C, tar header sums.

use std::fs::File;

use imgbuild_testutil::harness::{Mutation, Rng, INTERESTING};

use super::fields::{self, Endian, Field, Map};

/// Which checksums a seed needs recomputed after a mutation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fixup {
    None,
    Gpt,
    Ext4,
    Vhd,
    Vhdx,
    Tar,
    Vma,
}

fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

fn encode(f: &Field, v: u64) -> Vec<u8> {
    let w = usize::from(f.width);
    match f.endian {
        Endian::Le => v.to_le_bytes()[..w.min(8)].to_vec(),
        Endian::Be => v.to_be_bytes()[8 - w.min(8)..].to_vec(),
        Endian::Both => {
            let mut b = v.to_le_bytes()[..w.min(8)].to_vec();
            b.extend_from_slice(&v.to_be_bytes()[8 - w.min(8)..]);
            b
        }
        Endian::Octal => {
            let digits = format!("{:0width$o}", v, width = w - 1);
            if digits.len() < w {
                let mut b = digits.into_bytes();
                b.push(0);
                b
            } else {
                // GNU base-256: 0x80, then the value big-endian.
                let mut b = vec![0u8; w];
                b[0] = 0x80;
                let be = v.to_be_bytes();
                b[w - 8..].copy_from_slice(&be);
                b
            }
        }
    }
}

fn decode(f: &Field, b: &[u8]) -> u64 {
    match f.endian {
        // A both-endian field is read by its little-endian half (`width` bytes).
        Endian::Le | Endian::Both => b.iter().rev().fold(0, |n, &x| (n << 8) | u64::from(x)),
        Endian::Be => b.iter().fold(0, |n, &x| (n << 8) | u64::from(x)),
        Endian::Octal => {
            let s: String = b
                .iter()
                .take_while(|&&c| c != 0)
                .map(|&c| c as char)
                .collect();
            u64::from_str_radix(s.trim(), 8).unwrap_or(0)
        }
    }
}

/// One field mutation; returns the field's kind for the coverage report.
fn field(rng: &mut Rng, file: &File, m: &Map) -> (Mutation, &'static str) {
    let f = &m.fields[pick(rng, m.fields.len())];
    let cur = decode(f, &fields::read(file, f.at, usize::from(f.width)));
    let mask = if f.width >= 8 || f.endian == Endian::Octal {
        u64::MAX
    } else {
        (1u64 << (8 * u32::from(f.width))) - 1
    };
    let v = match rng.next_u64() % 6 {
        0 | 1 => INTERESTING[pick(rng, INTERESTING.len())],
        2 => cur.wrapping_add(1 + rng.next_u64() % 16),
        3 => cur.wrapping_sub(1 + rng.next_u64() % 16),
        4 => cur ^ (1 << (rng.next_u64() % (8 * u64::from(f.width.min(8))))),
        _ => {
            // The value of another field of the same kind (a pointer to another table, a
            // duplicate entry).
            let same: Vec<&Field> = m.fields.iter().filter(|g| g.kind == f.kind).collect();
            let g = same[pick(rng, same.len())];
            decode(g, &fields::read(file, g.at, usize::from(g.width)))
        }
    } & mask;
    (
        Mutation::Write {
            at: f.at,
            bytes: encode(f, v),
        },
        f.kind,
    )
}

/// 1 to 6 mutations of a seed of `len` bytes; the field kinds they hit.
pub fn mutations(
    rng: &mut Rng,
    file: &File,
    m: &Map,
    len: u64,
) -> (Vec<Mutation>, Vec<&'static str>) {
    let n = 1 + (rng.next_u64() % 64).trailing_zeros().min(5) as usize;
    let mut out = Vec::new();
    let mut kinds = Vec::new();
    let ranges: Vec<(u64, u64)> = if m.ranges.is_empty() {
        vec![(0, len.min(1 << 20))]
    } else {
        m.ranges.clone()
    };
    let at_in = |rng: &mut Rng| {
        let (s, e) = ranges[pick(rng, ranges.len())];
        (s + rng.next_u64() % (e - s).max(1)).min(len.saturating_sub(1))
    };
    for _ in 0..n {
        let r = rng.next_u64() % 100;
        if r < 65 && !m.fields.is_empty() {
            let (mu, kind) = field(rng, file, m);
            out.push(mu);
            kinds.push(kind);
            continue;
        }
        let at = if r < 92 {
            at_in(rng)
        } else {
            rng.next_u64() % len.max(1)
        };
        kinds.push(if r < 92 {
            "bytes.hot"
        } else {
            "bytes.anywhere"
        });
        out.push(match rng.next_u64() % 4 {
            0 => Mutation::Flip {
                at,
                bit: (rng.next_u64() % 8) as u8,
            },
            1 => Mutation::Write {
                at,
                bytes: vec![rng.next_u64() as u8],
            },
            2 => {
                let v = INTERESTING[pick(rng, INTERESTING.len())];
                let w = [1usize, 2, 4, 8][pick(rng, 4)];
                Mutation::Write {
                    at,
                    bytes: v.to_le_bytes()[..w].to_vec(),
                }
            }
            _ => Mutation::Copy {
                from: at_in(rng),
                at,
                len: 1 + rng.next_u64() % 64,
            },
        });
    }
    for mu in &mut out {
        if let Mutation::Write { at, bytes } = mu {
            bytes.truncate(len.saturating_sub(*at) as usize);
        }
    }
    (out, kinds)
}

/// CRC-32C as VHDX uses it (the standard, inverted form).
pub fn crc32c(b: &[u8]) -> u32 {
    crc32c::crc32c(b)
}

/// ext4's CRC-32C: the running value from `seed`, without the final inversion.
pub fn crc32c_raw(seed: u32, b: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, b)
}

fn write(at: u64, bytes: &[u8]) -> Mutation {
    Mutation::Write {
        at,
        bytes: bytes.to_vec(),
    }
}

/// The writes that make the checksums of the (already mutated) file match again.
pub fn fixups(kind: Fixup, path: &std::path::Path, file: &File, len: u64) -> Vec<Mutation> {
    match kind {
        Fixup::None => Vec::new(),
        Fixup::Gpt => imgbuild_testutil::harness::gpt_crc_fixups(path, len),
        Fixup::Ext4 => fields::partitions(file, len)
            .into_iter()
            .flat_map(|(s, _)| ext4_fixups(file, s))
            .collect(),
        Fixup::Vhd => {
            let mut out = Vec::new();
            let mut sum_at = |at: u64, size: usize, field: usize| {
                let mut b = fields::read(file, at, size);
                if b.len() == size {
                    b[field..field + 4].fill(0);
                    let sum = !b.iter().fold(0u32, |s, &x| s.wrapping_add(u32::from(x)));
                    out.push(write(at + field as u64, &sum.to_be_bytes()));
                }
            };
            sum_at(len - 512, 512, 64);
            let h = fields::read(file, 0, 512);
            if h.starts_with(b"conectix") {
                sum_at(0, 512, 64);
                sum_at(fields::be64(&h, 16), 1024, 36);
            }
            out
        }
        Fixup::Vhdx => {
            let mut out = Vec::new();
            for (at, size) in [(64 << 10, 4096), (128 << 10, 4096), (192 << 10, 65536)] {
                let mut b = fields::read(file, at, size);
                if b.len() == size {
                    b[4..8].fill(0);
                    out.push(write(at + 4, &crc32c(&b).to_le_bytes()));
                }
            }
            out
        }
        Fixup::Vma => {
            let md5 = |mut b: Vec<u8>, at: usize| {
                b[at..at + 16].fill(0);
                let sum: [u8; 16] = <md5::Md5 as md5::Digest>::digest(&b).into();
                sum
            };
            let size = fields::be32(&fields::read(file, 0, 64), 56) as usize;
            let h = fields::read(file, 0, size.min(1 << 20));
            let mut out = Vec::new();
            if h.len() >= 48 {
                out.push(write(32, &md5(h, 32)));
            }
            for (at, e) in fields::vma_extents(file, len, 64) {
                out.push(write(at + 24, &md5(e, 24)));
            }
            out
        }
        Fixup::Tar => {
            let mut out = Vec::new();
            let mut pos = 0;
            while pos + 512 <= len && out.len() < 64 {
                let h = fields::read(file, pos, 512);
                if h.iter().all(|&b| b == 0) {
                    break;
                }
                out.push(write(pos + 148, &tar_checksum(&h)));
                let size = u64::from_str_radix(
                    String::from_utf8_lossy(&h[124..136])
                        .trim_matches(|c: char| c == '\0' || c == ' '),
                    8,
                )
                .unwrap_or(0);
                pos = pos.saturating_add(512 + size.next_multiple_of(512));
            }
            out
        }
    }
}

/// A tar header's checksum field (`148..156`) for its other bytes.
pub fn tar_checksum(h: &[u8]) -> Vec<u8> {
    let sum: u32 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(b)
            }
        })
        .sum();
    let mut f = format!("{sum:06o}").into_bytes();
    f.truncate(6);
    f.extend([0, b' ']);
    f
}

/// ext4 `metadata_csum`: superblock, the first group descriptors and the first inodes.
fn ext4_fixups(file: &File, base: u64) -> Vec<Mutation> {
    let mut out = Vec::new();
    let sb = fields::read(file, base + 1024, 1024);
    if sb.len() < 1024 || fields::le16(&sb, 56) != 0xEF53 || fields::le32(&sb, 100) & 0x400 == 0 {
        return out;
    }
    out.push(write(
        base + 1024 + 0x3FC,
        &crc32c_raw(!0, &sb[..0x3FC]).to_le_bytes(),
    ));
    let seed = if fields::le32(&sb, 96) & 0x2000 != 0 {
        fields::le32(&sb, 0x270)
    } else {
        crc32c_raw(!0, &sb[104..120])
    };
    let bs = 1024u64 << fields::le32(&sb, 24).min(6);
    let desc = if fields::le32(&sb, 96) & 0x80 != 0 {
        u64::from(fields::le16(&sb, 254)).clamp(32, 64)
    } else {
        32
    };
    let gdt = base + (u64::from(fields::le32(&sb, 20)) + 1) * bs;
    for g in 0..4u32 {
        let at = gdt + u64::from(g) * desc;
        let mut d = fields::read(file, at, desc as usize);
        if d.len() < 32 {
            break;
        }
        d[0x1E..0x20].fill(0);
        let c = crc32c_raw(crc32c_raw(seed, &g.to_le_bytes()), &d);
        out.push(write(at + 0x1E, &(c as u16).to_le_bytes()));
    }
    let d0 = fields::read(file, gdt, 64);
    let table = base + u64::from(fields::le32(&d0, 8)) * bs;
    let isz = u64::from(fields::le16(&sb, 88)).clamp(128, 1024);
    for ino in 1..=40u32 {
        let at = table + u64::from(ino - 1) * isz;
        let mut i = fields::read(file, at, isz as usize);
        if i.len() < 128 || fields::le16(&i, 0) == 0 {
            continue;
        }
        let large = isz > 128 && fields::le16(&i, 128) >= 4;
        i[0x7C..0x7E].fill(0);
        if large {
            i[0x82..0x84].fill(0);
        }
        // Inode number, generation, then the inode with its checksum fields zeroed.
        let c = crc32c_raw(crc32c_raw(seed, &ino.to_le_bytes()), &i[0x64..0x68]);
        let c = crc32c_raw(c, &i);
        out.push(write(at + 0x7C, &(c as u16).to_le_bytes()));
        if large {
            out.push(write(at + 0x82, &((c >> 16) as u16).to_le_bytes()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn tar_numbers_round_trip() {
        let f = Field {
            at: 0,
            width: 12,
            endian: Endian::Octal,
            kind: "t",
        };
        assert_eq!(decode(&f, &encode(&f, 0o1234)), 0o1234);
        assert_eq!(encode(&f, u64::MAX)[0], 0x80);
    }
}

#[cfg(test)]
mod ext4_tests {
    use super::*;
    use std::os::unix::fs::FileExt;
    use std::process::Command;

    /// After a field mutation, the fixups make every checksum e2fsck verifies match again:
    /// e2fsck then complains about the values, not the checksums.
    #[test]
    fn ext4_fixups_satisfy_e2fsck() {
        if !crate::util::have_tool("mkfs.ext4") {
            eprintln!("no mkfs.ext4: skipped");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let img = t.path().join("x.ext4");
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), b"hello").unwrap();
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "metadata_csum", "-d"])
            .arg(t.path().join("d"))
            .arg(&img)
            .arg("4M")
            .status()
            .unwrap();
        assert!(ok.success());
        // The image is the "partition" at 0: wrap it in nothing; fixups take a base.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .unwrap();
        // Free inodes count (superblock) and the root inode's link count (inode 2).
        f.write_all_at(&7u32.to_le_bytes(), 1024 + 16).unwrap();
        let sb = fields::read(&f, 1024, 1024);
        let bs = 1024u64 << fields::le32(&sb, 24);
        let gdt = (u64::from(fields::le32(&sb, 20)) + 1) * bs;
        let d0 = fields::read(&f, gdt, 64);
        let table = u64::from(fields::le32(&d0, 8)) * bs;
        let isz = u64::from(fields::le16(&sb, 88));
        f.write_all_at(&9u16.to_le_bytes(), table + isz + 26)
            .unwrap();
        let check = || {
            let o = Command::new("e2fsck")
                .arg("-fn")
                .arg(&img)
                .output()
                .unwrap();
            String::from_utf8_lossy(&o.stdout).to_lowercase() + &String::from_utf8_lossy(&o.stderr)
        };
        assert!(
            check().contains("checksum"),
            "without fixups the checksums fail"
        );
        for m in ext4_fixups(&f, 0) {
            if let Mutation::Write { at, bytes } = m {
                f.write_all_at(&bytes, at).unwrap();
            }
        }
        let said = check();
        assert!(!said.contains("checksum"), "{said}");
        assert!(said.contains("count"), "{said}");
    }
}
