//! The byte-string targets: readers that take a slice rather than an image file, fuzzed in
//! memory like the text targets. `grub`: an installed i386-pc GRUB setup read back from a
//! disk's first sectors (`core_sector`, `read_core`, and through it `decompress`); `verity`:
//! the veritysetup superblock (`Superblock::parse`); `grub-efi`: GRUB's x86_64-efi
//! `kernel.img` made into the EFI image (`EfiImage::build`, its ELF64 reader); `uki`: PE
//! images as `imgbuild-uki` reads and assembles them ([`uki`]); `authenticode`: a signed PE
//! image (`imgbuild-secureboot`'s PE layout, image hash, PKCS#7 and `verify`). Mutations are structure-aware (see
//! [`grub::mutate`] and [`verity_mutate`]); a case fails on a panic, a hang or too much
//! memory, and on a broken invariant of what a reader accepted (asserted here).

pub mod authenticode;
mod grub;
mod grub_efi;
pub mod seeds;
pub mod uki;

use imgbuild_testutil::harness::{Rng, INTERESTING};

use super::Target;

fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

/// An interesting value, one next to `near`, or a random one.
fn value(rng: &mut Rng, near: u64) -> u64 {
    match rng.next_u64() % 4 {
        0 => near.wrapping_add(1),
        1 => near.wrapping_sub(1),
        2 => rng.next_u64() >> pick(rng, 64),
        _ => INTERESTING[pick(rng, INTERESTING.len())],
    }
}

/// Writes the low `width` bytes of `v`, little-endian, at `at` (when they fit).
fn put(b: &mut [u8], at: usize, width: usize, v: u64) {
    if let Some(s) = b.get_mut(at..at + width) {
        s.copy_from_slice(&v.to_le_bytes()[..width]);
    }
}

/// The little-endian value of `width` bytes at `at` (0 when past the end).
fn get(b: &[u8], at: usize, width: usize) -> u64 {
    b.get(at..at + width).map_or(0, |s| {
        s.iter().rev().fold(0, |n, &x| (n << 8) | u64::from(x))
    })
}

/// A few raw edits anywhere: bits flipped, a span zeroed, the input cut or extended.
fn raw(rng: &mut Rng, b: &mut Vec<u8>) -> &'static str {
    if b.is_empty() {
        return "raw: empty";
    }
    match rng.next_u64() % 4 {
        0 => {
            for _ in 0..1 + pick(rng, 4) {
                let i = pick(rng, b.len());
                b[i] ^= 1 << pick(rng, 8);
            }
            "raw: bits"
        }
        1 => {
            let i = pick(rng, b.len());
            let n = pick(rng, 64).min(b.len() - i);
            b[i..i + n].fill(0);
            "raw: zeroed span"
        }
        2 => {
            b.truncate(pick(rng, b.len()));
            "raw: cut"
        }
        _ => {
            b.resize(b.len() + 512 * (1 + pick(rng, 4)), 0);
            "raw: extended"
        }
    }
}

/// A mutated input of `target` from the seed `name`, and the field kinds it changed.
pub fn mutate(target: Target, name: &str, rng: &mut Rng, seed: &[u8]) -> (Vec<u8>, Vec<String>) {
    match target {
        Target::Grub => grub::mutate(name, rng, seed),
        Target::GrubEfi => grub_efi::mutate(rng, seed),
        Target::Uki => uki::mutate(rng, seed),
        Target::Authenticode => authenticode::mutate(rng, seed),
        _ => verity_mutate(rng, seed),
    }
}

/// Runs the readers of `target` on `input`: the error (its whole chain), if they refused it.
/// Panics when a reader accepted something that breaks what it promises.
pub fn parse(target: Target, input: &[u8]) -> Option<String> {
    let r = match target {
        Target::Grub => grub::read(input),
        Target::GrubEfi => grub_efi::read(input),
        Target::Uki => uki::read(input),
        Target::Authenticode => authenticode::read(input),
        _ => verity_read(input),
    };
    r.err().map(|e| format!("{e:#}"))
}

/// The superblock's fields: (kind, offset, width).
const VERITY_FIELDS: &[(&str, usize, usize)] = &[
    ("signature", 0, 8),
    ("version", 8, 4),
    ("hash type", 12, 4),
    ("uuid", 16, 16),
    ("data block size", 64, 4),
    ("hash block size", 68, 4),
    ("data blocks", 72, 8),
    ("salt size", 80, 2),
    ("padding", 82, 6),
    ("salt", 88, 256),
];

/// Algorithm names: real ones, none, 32 bytes without a NUL, not printable, not ASCII.
const ALGORITHMS: &[&[u8]] = &[
    b"sha256",
    b"sha1",
    b"sha512",
    b"",
    b"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    b"sha 256",
    b"sha\x01",
    b"\xff\xfe",
    b"sha256\0junk",
];

/// Values that sit on the superblock's bounds (block sizes 512..=512 KiB powers of two, the
/// 256-byte salt field).
const VERITY_VALUES: &[u64] = &[
    0, 1, 2, 255, 256, 257, 511, 512, 513, 1024, 4096, 65536, 524_288, 524_289, 1_048_576,
];

/// One to four of the superblock's fields overwritten (with values at their bounds), the
/// algorithm name replaced, or raw edits.
fn verity_mutate(rng: &mut Rng, seed: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut b = seed.to_vec();
    let mut kinds = Vec::new();
    for _ in 0..1 + pick(rng, 4) {
        match rng.next_u64() % 8 {
            0 => {
                let name = ALGORITHMS[pick(rng, ALGORITHMS.len())];
                if let Some(f) = b.get_mut(32..64) {
                    f.fill(0);
                    f[..name.len().min(32)].copy_from_slice(&name[..name.len().min(32)]);
                }
                kinds.push("verity: algorithm".to_string());
            }
            1 => kinds.push(raw(rng, &mut b).to_string()),
            _ => {
                let (kind, at, width) = VERITY_FIELDS[pick(rng, VERITY_FIELDS.len())];
                if width > 8 {
                    // A byte of the uuid, salt or signature.
                    let i = at + pick(rng, width);
                    if let Some(x) = b.get_mut(i) {
                        *x = rng.next_u64() as u8;
                    }
                } else {
                    let v = if rng.next_u64().is_multiple_of(2) {
                        VERITY_VALUES[pick(rng, VERITY_VALUES.len())]
                    } else {
                        value(rng, get(&b, at, width))
                    };
                    put(&mut b, at, width, v);
                }
                kinds.push(format!("verity: {kind}"));
            }
        }
    }
    (b, kinds)
}

/// `Superblock::parse`, and for an accepted superblock: every accessor, the hash area size
/// its data blocks would need, and its encoding read back to the same superblock.
fn verity_read(input: &[u8]) -> anyhow::Result<()> {
    use imgbuild_verity::Superblock;
    let sb = Superblock::parse(input)?;
    for (which, size) in [
        ("data", sb.data_block_size()),
        ("hash", sb.hash_block_size()),
    ] {
        assert!(
            size.is_power_of_two() && (512..=512 << 10).contains(&size),
            "accepted a {which} block size of {size}"
        );
    }
    assert!(sb.hash_type() <= 1, "accepted hash type {}", sb.hash_type());
    assert!(
        sb.salt().as_bytes().len() <= imgbuild_verity::MAX_SALT_SIZE,
        "accepted a salt of {} bytes",
        sb.salt().as_bytes().len()
    );
    let name = sb.algorithm();
    assert!(
        !name.is_empty() && name.len() <= 32 && name.bytes().all(|c| c.is_ascii_graphic()),
        "accepted the algorithm name {name:?}"
    );
    let _ = (sb.uuid().to_string(), sb.salt().to_hex());
    let again = Superblock::parse(&sb.encode());
    assert!(
        again.as_ref() == Ok(&sb),
        "the encoding of an accepted superblock reads back as {again:?}, not {sb:?}"
    );
    let data = sb
        .data_blocks()
        .checked_mul(u64::from(sb.data_block_size()));
    if let Some(size) = data {
        let _ = imgbuild_verity::hash_area_size(size);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every verity seed is accepted as it is (ours always; veritysetup's when installed),
    /// and the mutations reach every field kind and past the parser (some accepted, some
    /// refused) without a broken invariant.
    #[test]
    fn verity_seeds_parse_and_mutations_reach_every_field() {
        let dir = tempfile::tempdir().unwrap();
        seeds::build(dir.path()).unwrap();
        let seeds: Vec<Vec<u8>> = seeds::VERITY
            .iter()
            .filter_map(|n| std::fs::read(dir.path().join(n)).ok())
            .collect();
        assert!(seeds.len() >= 3);
        for s in &seeds {
            verity_read(s).unwrap();
        }
        let mut rng = Rng(5);
        let (mut kinds, mut accepted, mut refused) = (BTreeSet::new(), 0, 0);
        for i in 0..5000 {
            let (b, k) = verity_mutate(&mut rng, &seeds[i % seeds.len()]);
            kinds.extend(k);
            match verity_read(&b) {
                Ok(()) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
        for (kind, ..) in VERITY_FIELDS {
            assert!(
                kinds.contains(&format!("verity: {kind}")),
                "{kind} never mutated"
            );
        }
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }
}
