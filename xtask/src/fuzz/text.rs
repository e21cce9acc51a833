//! Grammar-aware mutations of the text inputs imgbuild reads: format files (TOML, mutated as
//! a TOML document: keys dropped, added, values replaced by other types and extreme
//! numbers), closureInfo registrations (mutated record by record: lines dropped, duplicated,
//! swapped, numbers and hashes replaced) and bootspec `boot.json` (mutated as JSON), plus a
//! few raw byte edits on top so the parsers' own error paths are reached too.
//!
//! The hostile-file cases of issue 27: lines of up to 2 MB, NUL and invalid UTF-8, and files
//! that are not format files as a format's `base` (a FIFO, `/dev/zero`, `/proc` files, a
//! shadow-like file, a 50 MB file, symlinks to them; made once per worker in its scratch
//! directory), and as closureInfo's `registration`. Besides panics, hangs and memory, a case
//! fails when an error message is longer than [`MAX_MESSAGE`] or quotes the shadow-like
//! file's secret or the worker's environment (a token the campaign puts there).

use std::path::{Path, PathBuf};

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

/// A line of up to 2 MB: one character repeated, or a long key.
fn huge_line(rng: &mut Rng) -> Vec<u8> {
    let n = [100_000, 1_000_000, 2_000_000][pick(rng, 3)];
    let mut l = match rng.next_u64() % 3 {
        0 => vec![b'x'; n],
        1 => [b"key = \"".as_slice(), &vec![b'v'; n], b"\""].concat(),
        _ => [vec![b'k'; n], b" = 1".to_vec()].concat(),
    };
    l.push(b'\n');
    l
}

/// Byte sequences that are not UTF-8, and NUL.
const NOT_UTF8: &[&[u8]] = &[
    b"\xff",
    b"\xfe\xff",
    b"\xc3",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\0",
];

/// What a format's `base` or closureInfo's `registration` may name: special files, files
/// of the host, and the ones [`specials`] makes (relative names).
const SPECIAL: &[&str] = &[
    "/dev/zero",
    "/dev/null",
    "/dev/urandom",
    "/dev/stdin",
    "/proc/self/environ",
    "/proc/self/status",
    "/proc/self/fd/0",
    "/etc/passwd",
    "/",
    ".",
    "fifo.toml",
    "zero.toml",
    "env.toml",
    "shadow",
    "../specials/shadow",
    "huge.toml",
    "dir.toml",
    "loop.toml",
    "self.toml",
    "missing.toml",
];

/// The shadow-like file's one line: no message may quote it.
const SECRET: &str = "root:$6$fuzzSECRETsalt$0123456789abcdefghij:19000:0:99999:7:::";

/// The most bytes an error message may have.
pub const MAX_MESSAGE: usize = 2048;

/// A registration input naming a special file instead of holding text: `special:NAME`.
const SPECIAL_PREFIX: &[u8] = b"special:";

/// A few raw edits: a byte changed, a span deleted or duplicated, the text cut.
fn bytes(rng: &mut Rng, mut t: Vec<u8>) -> Vec<u8> {
    if t.is_empty() {
        return t;
    }
    // Huge lines are rarer: they cost milliseconds each.
    let kind = match rng.next_u64() % 64 {
        0 => 6,
        k => k % 6,
    };
    match kind {
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
        4 => {
            let i = pick(rng, t.len());
            let s = STRINGS[pick(rng, STRINGS.len())].as_bytes();
            t.splice(i..i, s.iter().copied());
        }
        5 => {
            let i = pick(rng, t.len());
            let s = NOT_UTF8[pick(rng, NOT_UTF8.len())];
            t.splice(i..i, s.iter().copied());
        }
        _ => {
            // A huge line, at a line start.
            let i = t[..pick(rng, t.len())]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(0, |i| i + 1);
            let l = huge_line(rng);
            t.splice(i..i, l);
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
        "registration" if rng.next_u64().is_multiple_of(32) => {
            let name = SPECIAL[pick(rng, SPECIAL.len())];
            return [SPECIAL_PREFIX, name.as_bytes()].concat();
        }
        "format" if structured => match text.parse::<toml::Table>() {
            Ok(t) => {
                let mut v = toml::Value::Table(t);
                for _ in 0..1 + pick(rng, 3) {
                    toml_mutate(rng, &mut v, 0);
                }
                // A `base` naming a special file, a file of the host, or the format itself.
                if rng.next_u64().is_multiple_of(6) {
                    if let toml::Value::Table(t) = &mut v {
                        let base = SPECIAL[pick(rng, SPECIAL.len())];
                        t.insert("base".into(), toml::Value::String(base.into()));
                    }
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

/// Makes, once per directory, the files [`SPECIAL`] names relative to `dir/specials`: a FIFO,
/// symlinks to `/dev/zero` and `/proc/self/environ`, a shadow-like file, a sparse 50 MB
/// file, a directory, a symlink loop and a format whose `base` is itself.
fn specials(dir: &Path) -> std::io::Result<PathBuf> {
    let d = dir.join("specials");
    if d.join("done").exists() {
        return Ok(d);
    }
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(d.join("dir.toml"))?;
    let fifo = std::ffi::CString::new(d.join("fifo.toml").as_os_str().as_encoded_bytes())?;
    // SAFETY: a valid NUL-terminated path.
    if unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    std::os::unix::fs::symlink("/dev/zero", d.join("zero.toml"))?;
    std::os::unix::fs::symlink("/proc/self/environ", d.join("env.toml"))?;
    std::os::unix::fs::symlink("loop.toml", d.join("loop.toml"))?;
    std::fs::write(d.join("shadow"), format!("{SECRET}\n"))?;
    std::fs::File::create(d.join("huge.toml"))?.set_len(50_000_000)?;
    std::fs::write(d.join("self.toml"), "base = \"self.toml\"\n")?;
    std::fs::write(d.join("done"), "")?;
    Ok(d)
}

/// The campaign gives every worker this variable: `/proc/self/environ` holds it, so a
/// message quoting the environment quotes it.
pub const TOKEN_VAR: &str = "IMGBUILD_FUZZ_TOKEN";
pub const TOKEN: &str = "tok-5e1d0c9f27ab83e4";

/// Runs the parser of `target` on `input` (format files from a file in `dir/specials`, so
/// a relative `base` finds the special files there); the error message, if it refused it.
/// Panics when the message is too long or quotes a secret.
pub fn parse(target: &str, input: &[u8], dir: &Path) -> Option<String> {
    let file = Path::new("/fuzz/input");
    let specials = match specials(dir) {
        Ok(d) => d,
        Err(e) => panic!("making the special files in {}: {e}", dir.display()),
    };
    let r: Result<(), String> = match target {
        "format" => {
            // One file per thread: cases run one at a time, but a timed-out one may linger.
            let f = specials.join(format!("case-{:?}.toml", std::thread::current().id()));
            match std::fs::write(&f, input) {
                Ok(()) => imgbuild_plan::format::Format::load(&f.to_string_lossy())
                    .map(drop)
                    .map_err(|e| e.to_string()),
                Err(e) => Err(format!("writing the case: {e}")),
            }
        }
        "registration" if input.starts_with(SPECIAL_PREFIX) => {
            special_registration(&specials, &input[SPECIAL_PREFIX.len()..])
        }
        "registration" => match std::str::from_utf8(input) {
            Ok(t) => imgbuild_nix::parse_registration(t, file)
                .map(drop)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        // The same bytes as boot.json and as a container's imgbuild.json (both read from
        // the toplevel): accepted when either reader takes them; boot.json's refusal is the
        // case's message, imgbuild.json's is checked as well.
        "bootspec" => {
            let container = imgbuild_nix::BootSpec::parse_container(input, file);
            if let Err(e) = &container {
                check_message(&e.to_string());
            }
            match imgbuild_nix::BootSpec::parse(input, file) {
                Ok(_) => Ok(()),
                Err(_) if container.is_ok() => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        }
        _ => Err(format!("no text target {target}")),
    };
    let e = r.err()?;
    check_message(&e);
    Some(e)
}

/// A message is short and quotes neither the shadow-like file nor the environment.
fn check_message(e: &str) {
    assert!(
        e.len() <= MAX_MESSAGE,
        "an error message of {} bytes: {}…",
        e.len(),
        e.chars().take(200).collect::<String>()
    );
    assert!(
        !e.contains("fuzzSECRET"),
        "a message quotes the secret file: {e}"
    );
    assert!(!e.contains(TOKEN), "a message quotes the environment: {e}");
}

/// closureInfo whose `registration` is the special file `name`: refused at once.
fn special_registration(specials: &Path, name: &[u8]) -> Result<(), String> {
    let name = String::from_utf8_lossy(name);
    let ci = specials.join(format!("ci-{:?}", std::thread::current().id()));
    let _ = std::fs::remove_dir_all(&ci);
    let top = "/nix/store/00000000000000000000000000000000-x";
    let made = std::fs::create_dir_all(&ci)
        .and_then(|()| std::fs::write(ci.join("store-paths"), format!("{top}\n")))
        .and_then(|()| {
            let target = if name.starts_with('/') {
                PathBuf::from(name.as_ref())
            } else {
                specials.join(name.as_ref())
            };
            std::os::unix::fs::symlink(target, ci.join("registration"))
        });
    if let Err(e) = made {
        return Err(format!("making the case: {e}"));
    }
    let top = imgbuild_nix::StorePath::parse(top).map_err(|e| e.to_string())?;
    imgbuild_nix::Closure::from_closure_info(&ci, &top)
        .map(drop)
        .map_err(|e| e.to_string())
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
