//! Grammar-aware mutations of the text inputs imgbuild reads: format files (TOML, mutated as
//! a TOML document: keys dropped, added, values replaced by other types and extreme
//! numbers), closureInfo registrations (mutated record by record: lines dropped, duplicated,
//! swapped, numbers and hashes replaced) and bootspec `boot.json` (mutated as JSON), plus a
//! few raw byte edits on top so the parsers' own error paths are reached too.

use std::path::Path;

use imgbuild_testutil::harness::{Rng, INTERESTING};

fn pick(rng: &mut Rng, n: usize) -> usize {
    (rng.next_u64() % n.max(1) as u64) as usize
}

const STRINGS: &[&str] = &[
    "",
    "x",
    "../../etc/passwd",
    "/nix/store/00000000000000000000000000000000-x",
    "0x",
    "-1",
    "18446744073709551616",
    "1e400",
    "nan",
    "GPT",
    "gpt",
    "mbr",
    "ext4",
    "vfat",
    "C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
    "0x0c",
    "sha256:0000",
    "\u{0}",
    "é",
    "\u{202e}",
];

fn number(rng: &mut Rng) -> i64 {
    let v = INTERESTING[pick(rng, INTERESTING.len())];
    match rng.next_u64() % 3 {
        0 => v as i64,
        1 => -(v as i64),
        _ => (rng.next_u64() % 10_000) as i64,
    }
}

fn long_string(rng: &mut Rng) -> String {
    "a".repeat([256, 4096, 70_000][pick(rng, 3)])
}

/// A few raw edits: a byte changed, a span deleted or duplicated, the text cut.
fn bytes(rng: &mut Rng, mut t: Vec<u8>) -> Vec<u8> {
    if t.is_empty() {
        return t;
    }
    match rng.next_u64() % 5 {
        0 => {
            let i = pick(rng, t.len());
            t[i] = rng.next_u64() as u8;
        }
        1 => {
            let i = pick(rng, t.len());
            let n = pick(rng, 32).min(t.len() - i);
            t.drain(i..i + n);
        }
        2 => {
            let i = pick(rng, t.len());
            let n = pick(rng, 64).min(t.len() - i);
            let dup = t[i..i + n].to_vec();
            t.splice(i..i, dup);
        }
        3 => {
            let n = pick(rng, t.len());
            t.truncate(n);
        }
        _ => {
            let i = pick(rng, t.len());
            let s = STRINGS[pick(rng, STRINGS.len())].as_bytes();
            t.splice(i..i, s.iter().copied());
        }
    }
    t
}

fn toml_value(rng: &mut Rng) -> toml::Value {
    match rng.next_u64() % 7 {
        0 => toml::Value::Integer(number(rng)),
        1 => toml::Value::String(STRINGS[pick(rng, STRINGS.len())].to_string()),
        2 => toml::Value::String(long_string(rng)),
        3 => toml::Value::Boolean(rng.next_u64().is_multiple_of(2)),
        4 => toml::Value::Float(f64::from_bits(rng.next_u64())),
        5 => toml::Value::Array(Vec::new()),
        _ => toml::Value::Table(toml::map::Map::new()),
    }
}

/// A random node (table entry or array element) of a TOML document.
fn toml_mutate(rng: &mut Rng, v: &mut toml::Value, depth: usize) {
    match v {
        toml::Value::Table(t)
            if !t.is_empty() && depth < 6 && !rng.next_u64().is_multiple_of(3) =>
        {
            let keys: Vec<String> = t.keys().cloned().collect();
            let k = keys[pick(rng, keys.len())].clone();
            match rng.next_u64() % 6 {
                0 => {
                    t.remove(&k);
                }
                1 => {
                    t.insert(format!("{k}-unknown"), toml_value(rng));
                }
                _ => {
                    if let Some(c) = t.get_mut(&k) {
                        toml_mutate(rng, c, depth + 1);
                    }
                }
            }
        }
        toml::Value::Array(a) if !a.is_empty() && depth < 6 => match rng.next_u64() % 4 {
            0 => {
                let i = pick(rng, a.len());
                a.remove(i);
            }
            1 => {
                let i = pick(rng, a.len());
                let d = a[i].clone();
                a.push(d);
            }
            _ => {
                let i = pick(rng, a.len());
                toml_mutate(rng, &mut a[i], depth + 1);
            }
        },
        _ => *v = toml_value(rng),
    }
}

fn json_value(rng: &mut Rng) -> serde_json::Value {
    match rng.next_u64() % 7 {
        0 => serde_json::json!(number(rng)),
        1 => serde_json::json!(STRINGS[pick(rng, STRINGS.len())]),
        2 => serde_json::json!(long_string(rng)),
        3 => serde_json::Value::Null,
        4 => serde_json::json!(rng.next_u64().is_multiple_of(2)),
        5 => serde_json::json!([]),
        _ => serde_json::json!({}),
    }
}

fn json_mutate(rng: &mut Rng, v: &mut serde_json::Value, depth: usize) {
    match v {
        serde_json::Value::Object(o)
            if !o.is_empty() && depth < 8 && !rng.next_u64().is_multiple_of(4) =>
        {
            let keys: Vec<String> = o.keys().cloned().collect();
            let k = keys[pick(rng, keys.len())].clone();
            match rng.next_u64() % 6 {
                0 => {
                    o.remove(&k);
                }
                1 => {
                    o.insert(format!("{k}.extra"), json_value(rng));
                }
                _ => {
                    if let Some(c) = o.get_mut(&k) {
                        json_mutate(rng, c, depth + 1);
                    }
                }
            }
        }
        serde_json::Value::Array(a) if !a.is_empty() && depth < 8 => {
            let i = pick(rng, a.len());
            if rng.next_u64().is_multiple_of(3) {
                a.remove(i);
            } else {
                json_mutate(rng, &mut a[i], depth + 1);
            }
        }
        _ => *v = json_value(rng),
    }
}

/// One registration record edit: lines (path, hash, size, deriver, count, references).
fn registration_mutate(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    if lines.is_empty() {
        return text.to_string();
    }
    let i = pick(rng, lines.len());
    match rng.next_u64() % 8 {
        0 => {
            lines.remove(i);
        }
        1 => {
            let d = lines[i].clone();
            lines.insert(i, d);
        }
        2 => {
            let j = pick(rng, lines.len());
            lines.swap(i, j);
        }
        3 => lines[i] = number(rng).to_string(),
        4 => lines[i] = "18446744073709551615000".into(),
        5 => {
            // A hash in another encoding, cut, or with a prefix.
            let l = &lines[i];
            lines[i] = match rng.next_u64() % 3 {
                0 => format!("sha256:{l}"),
                // Cut at a char boundary (an earlier mutation may have put in any string).
                1 => {
                    let mut cut = l.len() / 2;
                    while !l.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    l[..cut].to_string()
                }
                _ => format!("md5:{l}"),
            };
        }
        6 => lines[i] = STRINGS[pick(rng, STRINGS.len())].to_string(),
        _ => lines.truncate(i),
    }
    let mut out = lines.join("\n");
    if rng.next_u64().is_multiple_of(2) {
        out.push('\n');
    }
    out
}

/// A mutated text for `target` (`format`, `registration`, `bootspec`) from `seed`.
pub fn mutate(target: &str, rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(seed).into_owned();
    let structured = rng.next_u64() % 10 < 8;
    let mut out = match target {
        "format" if structured => match text.parse::<toml::Table>() {
            Ok(t) => {
                let mut v = toml::Value::Table(t);
                for _ in 0..1 + pick(rng, 3) {
                    toml_mutate(rng, &mut v, 0);
                }
                toml::to_string(&v).unwrap_or(text).into_bytes()
            }
            Err(_) => seed.to_vec(),
        },
        "bootspec" if structured => match serde_json::from_slice::<serde_json::Value>(seed) {
            Ok(mut v) => {
                for _ in 0..1 + pick(rng, 3) {
                    json_mutate(rng, &mut v, 0);
                }
                serde_json::to_vec(&v).unwrap_or_default()
            }
            Err(_) => seed.to_vec(),
        },
        "registration" if structured => {
            let mut t = text;
            for _ in 0..1 + pick(rng, 3) {
                t = registration_mutate(rng, &t);
            }
            t.into_bytes()
        }
        _ => seed.to_vec(),
    };
    if !structured || rng.next_u64().is_multiple_of(4) {
        out = bytes(rng, out);
    }
    out
}

/// Runs the parser of `target` on `input`; the error message, if it refused it.
pub fn parse(target: &str, input: &[u8]) -> Option<String> {
    let file = Path::new("/fuzz/input");
    let r: Result<(), String> = match target {
        "format" => match std::str::from_utf8(input) {
            Ok(t) => imgbuild_plan::format::Format::parse("fuzz", t)
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        "registration" => match std::str::from_utf8(input) {
            Ok(t) => imgbuild_nix::parse_registration(t, file)
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        "bootspec" => imgbuild_nix::BootSpec::parse(input, file)
            .map(drop)
            .map_err(|e| e.to_string()),
        _ => Err(format!("no text target {target}")),
    };
    r.err()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line of 3-byte chars, cut in half by mutation 5: at a char boundary, no panic
    /// (the fuzz campaign's registration worker died of it once).
    #[test]
    fn registration_mutations_cut_at_char_boundaries() {
        let mut rng = Rng(7);
        let seed = "/nix/store/aaaa-x\n\u{202e}\u{202e}\u{202e}\n3\n";
        for _ in 0..20_000 {
            let _ = registration_mutate(&mut rng, seed);
        }
    }
}
