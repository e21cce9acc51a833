//! The `uki` target: `imgbuild-uki`'s readers of untrusted PE bytes (`read`, `read_prefix`,
//! `Kernel::read`) and the assembly on a mutated stub (`Sections::parts`, `assemble`), whose
//! output must read back. Seeds are made by the crate itself (no real stub is committed):
//! its sample stub, a UKI assembled from it, and an unaligned stub with a trailing symbol
//! table that the assembly strips.

use std::path::Path;

use anyhow::Result;
use imgbuild_testutil::harness::Rng;
use imgbuild_uki::{pe::Pe, sample, Data, Kernel, Part, Sections};

use super::{get, pick, put, raw, value};

/// The seeds' file names.
pub const SEEDS: &[&str] = &["uki-stub.efi", "uki-sample.efi", "uki-unaligned.efi"];

fn sections(initrd: u64, kernel: Kernel) -> Sections {
    Sections {
        os_release: b"ID=nixos\nPRETTY_NAME=\"NixOS\"\n".to_vec(),
        cmdline: "init=/nix/store/x-nixos-system/init console=ttyS0".into(),
        devicetree: None,
        uname: Some("6.12.31".into()),
        initrd,
        linux: kernel,
    }
}

/// Writes the seeds into `dir`.
pub fn build(dir: &Path) -> Result<()> {
    let stub = sample::stub();
    std::fs::write(dir.join(SEEDS[0]), &stub)?;
    let kernel = sample::stub_with(&[(".text", &[0x90; 64], 512)], 512);
    let s = sections(300, Kernel::read(&kernel));
    let layout = imgbuild_uki::assemble(&stub, &s.parts(&stub)?)?;
    std::fs::write(dir.join(SEEDS[1]), layout.to_vec(&[&[0x42; 300], &kernel])?)?;
    let mut unaligned = sample::stub_with(
        &[(".text", &[1; 100], 100), (".sbat", sample::STUB_SBAT, 300)],
        512,
    );
    let at = u32::try_from(unaligned.len())?;
    unaligned.extend_from_slice(&[0xaa; 18]);
    unaligned.extend_from_slice(&4u32.to_le_bytes());
    unaligned[sample::COFF + 8..sample::COFF + 12].copy_from_slice(&at.to_le_bytes());
    unaligned[sample::COFF + 12..sample::COFF + 16].copy_from_slice(&1u32.to_le_bytes());
    std::fs::write(dir.join(SEEDS[2]), unaligned)?;
    Ok(())
}

/// Header fields: (kind, offset from the COFF header, width); negative offsets are the DOS
/// header's `e_lfanew`.
const COFF_FIELDS: &[(&str, usize, usize)] = &[
    ("NumberOfSections", 2, 2),
    ("PointerToSymbolTable", 8, 4),
    ("NumberOfSymbols", 12, 4),
    ("SizeOfOptionalHeader", 16, 2),
    ("Magic", 20, 2),
    ("SizeOfInitializedData", 28, 4),
    ("SectionAlignment", 52, 4),
    ("FileAlignment", 56, 4),
    ("SizeOfImage", 76, 4),
    ("SizeOfHeaders", 80, 4),
    ("NumberOfRvaAndSizes", 128, 4),
    ("Security", 164, 4),
];
/// Section header fields: (kind, offset, width).
const SECTION_FIELDS: &[(&str, usize, usize)] = &[
    ("VirtualSize", 8, 4),
    ("VirtualAddress", 12, 4),
    ("SizeOfRawData", 16, 4),
    ("PointerToRawData", 20, 4),
];
/// Values on the bounds the reader checks (alignments, 96 sections, 32-bit ends).
const VALUES: &[u64] = &[
    0,
    1,
    2,
    3,
    95,
    96,
    97,
    0x1ff,
    0x200,
    0x201,
    0x1000,
    0x10000,
    0x8000_0000,
    0xffff_ffff,
];

/// One to four header or section fields overwritten (values at their bounds, or near the
/// old one), a section name changed, or raw edits.
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut b = seed.to_vec();
    let mut kinds = Vec::new();
    let Ok(pe) = Pe::parse(seed) else {
        kinds.push(raw(rng, &mut b).to_string());
        return (b, kinds);
    };
    for _ in 0..1 + pick(rng, 4) {
        let (kind, at, width) = match rng.next_u64() % 8 {
            0 => {
                kinds.push(raw(rng, &mut b).to_string());
                continue;
            }
            1 => ("e_lfanew", 0x3c, 4),
            2 | 3 => {
                let i = pick(rng, pe.sections.len());
                let (kind, off, width) = SECTION_FIELDS[pick(rng, SECTION_FIELDS.len())];
                if rng.next_u64().is_multiple_of(8) {
                    let name = [".sbat", ".linux", "", ".osrel\0\0", ".a\u{1}"][pick(rng, 5)];
                    let at = pe.section_table + i * 40;
                    if let Some(f) = b.get_mut(at..at + 8) {
                        f.fill(0);
                        f[..name.len()].copy_from_slice(name.as_bytes());
                    }
                    kinds.push("uki: section Name".to_string());
                    continue;
                }
                (kind, pe.section_table + i * 40 + off, width)
            }
            _ => {
                let (kind, off, width) = COFF_FIELDS[pick(rng, COFF_FIELDS.len())];
                (kind, pe.coff + off, width)
            }
        };
        let v = if rng.next_u64().is_multiple_of(2) {
            VALUES[pick(rng, VALUES.len())]
        } else {
            value(rng, get(&b, at, width))
        };
        put(&mut b, at, width, v);
        kinds.push(format!("uki: {kind}"));
    }
    (b, kinds)
}

/// Every reader on `input`; an accepted stub is assembled into a UKI (external data
/// made up, when the result is small) that must read back with the sections added.
pub fn read(input: &[u8]) -> Result<()> {
    let len = input.len() as u64;
    let whole = imgbuild_uki::read(input);
    let prefix = imgbuild_uki::read_prefix(&input[..input.len().min(4096)], len);
    if let (Ok(w), Ok(p)) = (&whole, &prefix) {
        assert_eq!(w.sections, p.sections, "read and read_prefix disagree");
    }
    let _ = Kernel::read(input);
    let info = whole?;
    for s in &info.sections {
        assert!(
            s.len == 0 || s.offset + s.len <= len,
            "accepted section {} past the end",
            s.name
        );
    }
    let s = sections(100, Kernel::read(input));
    let parts = s.parts(input)?;
    let layout = imgbuild_uki::assemble(input, &parts)?;
    if layout.len > 16 << 20 {
        return Ok(());
    }
    let img = layout.to_vec(&[&[7; 100], input])?;
    let back = imgbuild_uki::read(&img).unwrap_or_else(|e| {
        let _ = std::fs::write(std::env::temp_dir().join("uki-fuzz-failed.efi"), input);
        panic!("an assembled UKI does not read back: {e}")
    });
    assert_eq!(back.uname.as_deref(), Some("6.12.31"));
    let extra = Part {
        name: ".extra".into(),
        data: Data::Bytes(vec![1]),
        virtual_size: None,
    };
    let _ = imgbuild_uki::assemble(input, &[extra]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// The seeds are accepted and assemble; the mutations reach every field kind, and are
    /// sometimes accepted, sometimes refused, never breaking an invariant.
    #[test]
    fn uki_seeds_read_and_mutations_reach_every_field() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path()).unwrap();
        let seeds: Vec<Vec<u8>> = SEEDS
            .iter()
            .map(|n| std::fs::read(dir.path().join(n)).unwrap())
            .collect();
        read(&seeds[0]).unwrap();
        read(&seeds[2]).unwrap();
        // A UKI is read, but not taken as a stub again (its .linux is not bytes in memory).
        assert_eq!(
            imgbuild_uki::read(&seeds[1]).unwrap().uname.as_deref(),
            Some("6.12.31")
        );
        let e = read(&seeds[1]).unwrap_err();
        assert!(
            e.to_string()
                .contains("can only be replaced by bytes in memory"),
            "{e:#}"
        );
        let mut rng = Rng(7);
        let (mut kinds, mut accepted, mut refused) = (BTreeSet::new(), 0, 0);
        for i in 0..4000 {
            let (b, k) = mutate(&mut rng, &seeds[i % seeds.len()]);
            kinds.extend(k);
            match read(&b) {
                Ok(()) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
        for (kind, ..) in COFF_FIELDS.iter().chain(SECTION_FIELDS) {
            assert!(
                kinds.contains(&format!("uki: {kind}")),
                "{kind} never mutated"
            );
        }
        assert!(
            accepted > 100 && refused > 100,
            "{accepted} accepted, {refused} refused"
        );
    }
}
