//! The Reed-Solomon redundancy `grub-bios-setup` appends to an embedded core image, which
//! `lzma_decompress.img` uses at boot to repair sectors that something else overwrote.
//!
//! Over GF(2^8) with polynomial x^8 + x^4 + x^3 + x^2 + 1 (0x11d). The data is cut into
//! blocks of at most 200 sectors (data and redundancy together, in proportion); in a block,
//! byte `i` of every data sector forms one message (column `i`), and its check bytes go to
//! byte `i` of the block's redundancy sectors.

const SECTOR: usize = 512;
const MAX_BLOCK: usize = 200 * SECTOR;

/// Powers of the generator (doubled, so that sums of two logarithms need no reduction) and
/// logarithms.
struct Field {
    pow: [u8; 510],
    log: [u8; 256],
}

impl Field {
    fn new() -> Self {
        let mut f = Self {
            pow: [0; 510],
            log: [0; 256],
        };
        let mut cur: u8 = 1;
        for i in 0..255u8 {
            f.pow[usize::from(i)] = cur;
            f.pow[usize::from(i) + 255] = cur;
            f.log[usize::from(cur)] = i;
            cur = if cur & 0x80 != 0 {
                (cur << 1) ^ 0x1d
            } else {
                cur << 1
            };
        }
        f
    }

    fn mul(&self, a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            0
        } else {
            self.pow[usize::from(self.log[usize::from(a)]) + usize::from(self.log[usize::from(b)])]
        }
    }

    /// The generator polynomial for `n` check symbols, prod (x - a^j) for j < n, highest
    /// power first (`g[0]` = 1).
    fn generator(&self, n: usize) -> Vec<u8> {
        let mut g = vec![0u8; n + 1];
        g[n] = 1;
        for j in 0..n {
            for i in 0..=n {
                let next = g.get(i + 1).copied().unwrap_or(0);
                let times = if g[i] == 0 {
                    0
                } else {
                    self.pow[j + usize::from(self.log[usize::from(g[i])])]
                };
                g[i] = if i < n { next ^ times } else { times };
            }
        }
        g
    }

    /// The `n` check symbols of `data`: the remainder of data * x^n divided by `g`.
    fn checks(&self, data: &[u8], g: &[u8], n: usize) -> Vec<u8> {
        let mut m = data.to_vec();
        m.resize(data.len() + n, 0);
        for j in 0..data.len() {
            let f = m[j];
            if f != 0 {
                for (i, &gi) in g.iter().enumerate() {
                    m[i + j] ^= self.mul(gi, f);
                }
            }
        }
        m.split_off(data.len())
    }
}

/// Appends redundancy: `buf` holds `data` bytes of data followed by room for the check
/// bytes (`buf.len() - data`), which are filled in. Both are whole sectors in practice
/// (the data's last sector is padded by the caller's layout, column by column).
pub(crate) fn add_redundancy(buf: &mut [u8], data: usize) {
    let field = Field::new();
    let (mut ptr, mut rptr) = (0usize, data);
    let (mut s, mut rs) = (data, buf.len() - data);
    while s > 0 && rs > 0 {
        let (mut cs, mut crs) = (s, rs);
        let total = cs + crs;
        if total > MAX_BLOCK {
            cs = cs * (MAX_BLOCK / SECTOR) / total * SECTOR;
            crs = crs * (MAX_BLOCK / SECTOR) / total * SECTOR;
        }
        encode_block(&field, buf, ptr, cs, rptr, crs);
        ptr += cs;
        rptr += crs;
        s -= cs;
        rs -= crs;
    }
}

fn encode_block(field: &Field, buf: &mut [u8], ptr: usize, s: usize, rptr: usize, rs: usize) {
    for i in 0..SECTOR {
        let ds = (s + SECTOR - 1 - i) / SECTOR;
        let rr = (rs + SECTOR - 1 - i) / SECTOR;
        if ds == 0 || rr == 0 {
            continue;
        }
        let column: Vec<u8> = (0..ds).map(|j| buf[ptr + SECTOR * j + i]).collect();
        let checks = field.checks(&column, &field.generator(rr), rr);
        for (j, c) in checks.into_iter().enumerate() {
            buf[rptr + SECTOR * j + i] = c;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A codeword (data then checks) evaluates to zero at every root a^j of the generator.
    #[test]
    fn codewords_vanish_at_the_generator_roots() {
        let f = Field::new();
        let data: Vec<u8> = (0..100u32).map(|i| (i * 37 + 11) as u8).collect();
        let n = 20;
        let mut word = data.clone();
        word.extend(f.checks(&data, &f.generator(n), n));
        for j in 0..n {
            // Horner, highest power first.
            let x = f.pow[j];
            let v = word.iter().fold(0u8, |acc, &c| f.mul(acc, x) ^ c);
            assert_eq!(v, 0, "root a^{j}");
        }
    }
}
