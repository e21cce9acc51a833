//! The htree directory hash: "half MD4" with the filesystem's hash seed, reading name
//! bytes as *signed* chars (the superblock says so with `EXT2_FLAGS_SIGNED_HASH`, as mke2fs
//! on x86 sets it; we set it whatever the host, so the output never depends on the host).

use crate::bits::narrow;

const EOF_32BIT: u32 = 0x7fff_ffff;

/// The default hash state when the superblock's seed is all zero.
const DEFAULT_STATE: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

fn f(x: u32, y: u32, z: u32) -> u32 {
    z ^ (x & (y ^ z))
}
fn g(x: u32, y: u32, z: u32) -> u32 {
    (x & y).wrapping_add((x ^ y) & z)
}
fn h(x: u32, y: u32, z: u32) -> u32 {
    x ^ y ^ z
}

const K2: u32 = 0o13240474631;
const K3: u32 = 0o15666365641;

/// One step: `a = rotl(a + fun(b, c, d) + x, s)`.
fn step(fun: fn(u32, u32, u32) -> u32, a: u32, b: u32, c: u32, d: u32, x: u32, s: u32) -> u32 {
    a.wrapping_add(fun(b, c, d)).wrapping_add(x).rotate_left(s)
}

/// The cut-down MD4 transform over 8 input words.
fn half_md4(buf: &mut [u32; 4], m: &[u32; 8]) {
    let [mut a, mut b, mut c, mut d] = *buf;
    // Round 1: message words in order, shifts 3, 7, 11, 19.
    for i in [0, 4] {
        a = step(f, a, b, c, d, m[i], 3);
        d = step(f, d, a, b, c, m[i + 1], 7);
        c = step(f, c, d, a, b, m[i + 2], 11);
        b = step(f, b, c, d, a, m[i + 3], 19);
    }
    // Round 2: odd words then even words, shifts 3, 5, 9, 13.
    for i in [1, 0] {
        a = step(g, a, b, c, d, m[i].wrapping_add(K2), 3);
        d = step(g, d, a, b, c, m[i + 2].wrapping_add(K2), 5);
        c = step(g, c, d, a, b, m[i + 4].wrapping_add(K2), 9);
        b = step(g, b, c, d, a, m[i + 6].wrapping_add(K2), 13);
    }
    // Round 3: words 3, 7, 2, 6 then 1, 5, 0, 4, shifts 3, 9, 11, 15.
    for [w, x, y, z] in [[3, 7, 2, 6], [1, 5, 0, 4]] {
        a = step(h, a, b, c, d, m[w].wrapping_add(K3), 3);
        d = step(h, d, a, b, c, m[x].wrapping_add(K3), 9);
        c = step(h, c, d, a, b, m[y].wrapping_add(K3), 11);
        b = step(h, b, c, d, a, m[z].wrapping_add(K3), 15);
    }
    buf[0] = buf[0].wrapping_add(a);
    buf[1] = buf[1].wrapping_add(b);
    buf[2] = buf[2].wrapping_add(c);
    buf[3] = buf[3].wrapping_add(d);
}

/// Pack up to 32 bytes of `msg` (whose *remaining* length is `msg.len()`) into 8 words,
/// padding with a word made of the remaining length's low byte repeated.
fn str2hashbuf_signed(msg: &[u8]) -> [u32; 8] {
    let len: u32 = narrow(msg.len(), "names are at most 255 bytes");
    let mut pad = len | (len << 8);
    pad |= pad << 16;
    let mut out = [pad; 8];
    let mut val = pad;
    let mut w = 0;
    for (i, &byte) in msg.iter().take(32).enumerate() {
        // The kernel's "signed" variant: the byte as a signed char, sign-extended.
        let c = u32::from_le_bytes(i32::from(i8::from_le_bytes([byte])).to_le_bytes());
        val = c.wrapping_add(val << 8);
        if i % 4 == 3 {
            out[w] = val;
            w += 1;
            val = pad;
        }
    }
    if w < 8 {
        out[w] = val;
    }
    out
}

/// `(hash, minor_hash)` of `name` as the htree code computes it for hash version
/// `DX_HASH_HALF_MD4` with signed chars. The major hash has its low bit cleared.
pub fn dx_hash(name: &[u8], seed: &[u32; 4]) -> (u32, u32) {
    let mut buf = if seed.iter().any(|&w| w != 0) {
        *seed
    } else {
        DEFAULT_STATE
    };
    let mut rest = name;
    loop {
        let input = str2hashbuf_signed(rest);
        half_md4(&mut buf, &input);
        if rest.len() <= 32 {
            break;
        }
        rest = &rest[32..];
    }
    let mut hash = buf[1] & !1;
    if hash == EOF_32BIT << 1 {
        hash = (EOF_32BIT - 1) << 1;
    }
    (hash, buf[2])
}

/// The superblock's `s_hash_seed` words from its 16 bytes (little-endian words).
pub fn seed_words(seed: &[u8; 16]) -> [u32; 4] {
    let mut w = [0u32; 4];
    for (i, c) in seed.chunks_exact(4).enumerate() {
        w[i] = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_value_from_debugfs() {
        // `debugfs -R 'dx_hash -h half_md4 -s 0775a90d-56eb-45fa-856a-e45a7971fe3c hello'`
        // printed "Hash of hello is 0x4672cd30 (minor 0x7ab537a1)".
        let uuid = [
            0x07, 0x75, 0xa9, 0x0d, 0x56, 0xeb, 0x45, 0xfa, 0x85, 0x6a, 0xe4, 0x5a, 0x79, 0x71,
            0xfe, 0x3c,
        ];
        assert_eq!(
            dx_hash(b"hello", &seed_words(&uuid)),
            (0x4672_cd30, 0x7ab5_37a1)
        );
    }
}
