//! The `authenticode` target: a signed PE image read back by `imgbuild-secureboot` (the PE
//! layout, the image hash, the certificate table, the PKCS#7 SignedData, its X.509
//! certificate and the RSA signature check: `verify`), and the seeds: a generated PE signed
//! by us and by `sbsign`, with a key `openssl` makes once (a missing tool leaves those seeds
//! out, said on stderr; the stamp is written only when all are there).

use std::path::Path;

use anyhow::{Context, Result};
use imgbuild_secureboot as sb;
use imgbuild_testutil::harness::Rng;

use super::{get, pick, put, raw, value};
use crate::util::{self, cmd};

/// Bump when these seeds change.
const STAMP: &str = "authenticode v1\n";

/// The seeds: ours (a 5-byte tail, so padded), ours with an aligned tail, `sbsign`'s.
pub const SEEDS: &[&str] = &["pe-ours.efi", "pe-ours-aligned.efi", "pe-sbsign.efi"];

/// Makes the seeds in `dir` unless its stamp says they are there.
pub fn build(dir: &Path) -> Result<()> {
    let stamp = dir.join("stamp-authenticode");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == STAMP) {
        return Ok(());
    }
    if !util::have_tool("openssl") {
        eprintln!("fuzz seeds: openssl is not installed: no authenticode seeds");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let (key, cert) = imgbuild_testutil::self_signed_keys(tmp.path(), "fuzz");
    let cert_bytes = std::fs::read(&cert)?;
    let signer = sb::Signer::new(
        &std::fs::read(&key)?,
        sb::Cert::from_pem_or_der(&cert_bytes)?,
    )?;
    for (name, tail) in SEEDS[..2].iter().zip([5, 8]) {
        let signed = sb::sign(&imgbuild_testutil::tiny_pe(tail), &signer)
            .with_context(|| format!("signing the seed {name}"))?;
        std::fs::write(dir.join(name), signed)?;
    }
    if !util::have_tool("sbsign") {
        eprintln!("fuzz seeds: sbsign is not installed (apt-get install sbsigntool): authenticode seeds from imgbuild-secureboot only");
        return Ok(());
    }
    let input = tmp.path().join("in.efi");
    std::fs::write(&input, imgbuild_testutil::tiny_pe(3))?;
    util::output_quiet(
        cmd("sbsign")
            .arg("--key")
            .arg(&key)
            .arg("--cert")
            .arg(&cert)
            .arg("--output")
            .arg(dir.join(SEEDS[2]))
            .arg(&input),
    )?;
    std::fs::write(&stamp, STAMP)?;
    Ok(())
}

/// The header fields of a PE image (kind, offset, width), found from the seed's own
/// `e_lfanew` and section count; the certificate table's `WIN_CERTIFICATE` header too.
fn fields(b: &[u8]) -> Vec<(String, usize, usize)> {
    let pe = usize::try_from(get(b, 0x3c, 4)).unwrap_or(0);
    let opt = pe + 24;
    let mut f = vec![
        ("e_lfanew".to_string(), 0x3c, 4),
        ("NumberOfSections".into(), pe + 6, 2),
        ("SizeOfOptionalHeader".into(), pe + 20, 2),
        ("Magic".into(), opt, 2),
        ("SizeOfHeaders".into(), opt + 60, 4),
        ("CheckSum".into(), opt + 64, 4),
        ("NumberOfRvaAndSizes".into(), opt + 108, 4),
        ("cert table offset".into(), opt + 144, 4),
        ("cert table size".into(), opt + 148, 4),
    ];
    let table = opt + usize::try_from(get(b, pe + 20, 2)).unwrap_or(0);
    for i in 0..usize::try_from(get(b, pe + 6, 2)).unwrap_or(0).min(4) {
        let s = table + i * 40;
        f.push(("SizeOfRawData".into(), s + 16, 4));
        f.push(("PointerToRawData".into(), s + 20, 4));
    }
    let cert = usize::try_from(get(b, opt + 144, 4)).unwrap_or(0);
    f.push(("WIN_CERTIFICATE length".into(), cert, 4));
    f.push(("WIN_CERTIFICATE type".into(), cert + 6, 2));
    f
}

/// One to four header fields set (to values near theirs or at the bounds), a byte of the
/// PKCS#7 changed (its DER lengths, tags, the certificate, the signature), or raw edits.
pub fn mutate(rng: &mut Rng, seed: &[u8]) -> (Vec<u8>, Vec<String>) {
    let mut b = seed.to_vec();
    let fields = fields(seed);
    let cert = usize::try_from(get(seed, fields[7].1, 4)).unwrap_or(0);
    let mut kinds = Vec::new();
    for _ in 0..1 + pick(rng, 4) {
        match rng.next_u64() % 8 {
            0 => kinds.push(raw(rng, &mut b).to_string()),
            1 | 2 if cert + 8 < b.len() => {
                // Within the SignedData's first 64 bytes (its lengths and tags) or anywhere.
                let span = if rng.next_u64().is_multiple_of(2) {
                    64.min(b.len() - cert - 8)
                } else {
                    b.len() - cert - 8
                };
                let i = cert + 8 + pick(rng, span);
                b[i] = rng.next_u64() as u8;
                kinds.push("pkcs7: byte".to_string());
            }
            _ => {
                let (kind, at, width) = &fields[pick(rng, fields.len())];
                let v = value(rng, get(&b, *at, *width));
                put(&mut b, *at, *width, v);
                kinds.push(format!("pe: {kind}"));
            }
        }
    }
    (b, kinds)
}

/// The readers: the headers' certificate entry, the layout, the image hash, the certificate table and `verify`. An accepted
/// signature covers the image's own hash.
pub fn read(input: &[u8]) -> Result<()> {
    // `inspect` asks the headers first (of a UKI's first MiB): they agree with the layout
    let declared = sb::pe::declares_certificates(input);
    let layout = sb::pe::Layout::parse(input)?;
    assert_eq!(
        declared.ok(),
        Some(layout.cert_table.is_some()),
        "the headers and the layout disagree on the certificate table"
    );
    let hash = sb::pe::image_hash(input)?;
    let sigs = sb::pe::signatures(input)?;
    assert!(
        layout.cert_table.is_some() || sigs.is_empty(),
        "signatures read from an image without a certificate table"
    );
    let v = sb::verify(input, None)?;
    assert_eq!(
        v.image_hash, hash,
        "verify accepted a signature of another hash"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every seed verifies as it is, and the mutations reach every header field and the
    /// PKCS#7, some accepted, most refused, none breaking an invariant.
    #[test]
    fn seeds_verify_and_mutations_reach_every_field() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path()).unwrap();
        let seeds: Vec<Vec<u8>> = SEEDS
            .iter()
            .filter_map(|n| std::fs::read(dir.path().join(n)).ok())
            .collect();
        if seeds.is_empty() {
            eprintln!("skipped: no authenticode seeds (openssl missing)");
            return;
        }
        for s in &seeds {
            read(s).unwrap();
        }
        let mut rng = Rng(7);
        let (mut kinds, mut accepted, mut refused) = (BTreeSet::new(), 0, 0);
        for i in 0..3000 {
            let (b, k) = mutate(&mut rng, &seeds[i % seeds.len()]);
            kinds.extend(k);
            match read(&b) {
                Ok(()) => accepted += 1,
                Err(_) => refused += 1,
            }
        }
        for (kind, ..) in fields(&seeds[0]) {
            assert!(
                kinds.contains(&format!("pe: {kind}")),
                "{kind} never mutated"
            );
        }
        assert!(kinds.contains("pkcs7: byte"));
        assert!(
            accepted > 10 && refused > 1000,
            "{accepted} accepted, {refused} refused"
        );
    }
}
