//! Where the structures of a seed are, field by field: GPT and MBR tables, the ext4
//! superblock, group descriptors, inodes, extent headers and directory entries, FAT's BPB,
//! FAT and directory entries, ISO 9660's volume descriptor, directory records, SUSP entries
//! and boot catalog, squashfs's superblock and metadata blocks, the SQLite header and b-tree
//! pages of the Nix database, and each container's headers and tables. A mutation overwrites
//! a whole field with a value of its width, so it lands where a reader makes decisions;
//! checksums are recomputed after (see [`super::mutate::fixups`]) so mutations get past them.

mod ext4;
mod iso9660;
pub mod squashfs;

pub use ext4::ext4;
pub use iso9660::iso9660;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// Byte order of a field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endian {
    Le,
    Be,
    /// A tar number: octal ASCII (or GNU base-256 when big).
    Octal,
    /// ISO 9660's both-byte orders (ECMA-119 7.2.3, 7.3.3): the value little-endian in
    /// `width` bytes, then big-endian in as many (a mutation writes both halves alike).
    Both,
}

/// One field of one structure.
#[derive(Clone, Debug)]
pub struct Field {
    pub at: u64,
    pub width: u8,
    pub endian: Endian,
    /// e.g. `gpt.header.entries_lba`, `ext4.inode.i_block`: the coverage report counts these.
    pub kind: &'static str,
}

/// The fields of a seed, and hot byte ranges (metadata a reader reads) for byte mutations.
#[derive(Default, Debug)]
pub struct Map {
    pub fields: Vec<Field>,
    pub ranges: Vec<(u64, u64)>,
}

impl Map {
    fn push(&mut self, base: u64, list: &[(u64, u8, &'static str)], endian: Endian) {
        for &(off, width, kind) in list {
            self.fields.push(Field {
                at: base + off,
                width,
                endian,
                kind,
            });
        }
    }
}

pub fn read(f: &File, at: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0u8; len];
    let n = f.read_at(&mut b, at).unwrap_or(0);
    b.truncate(n);
    b
}

pub fn le32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}
pub fn le16(b: &[u8], o: usize) -> u16 {
    b.get(o..o + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}
pub fn le64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map_or(0, |s| u64::from_le_bytes(s.try_into().unwrap_or([0; 8])))
}
pub fn be32(b: &[u8], o: usize) -> u32 {
    b.get(o..o + 4)
        .map_or(0, |s| u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}
pub fn be64(b: &[u8], o: usize) -> u64 {
    b.get(o..o + 8)
        .map_or(0, |s| u64::from_be_bytes(s.try_into().unwrap_or([0; 8])))
}

/// Partitions of a raw disk: `(start, size, mbr type or 0 for GPT)`.
pub fn partitions(f: &File, len: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let lba1 = read(f, 512, 512);
    if lba1.starts_with(b"EFI PART") {
        let start = le64(&lba1, 72);
        let n = le32(&lba1, 80).min(128);
        let arr = read(f, start * 512, n as usize * 128);
        for e in arr.chunks(128) {
            let (first, last) = (le64(e, 32), le64(e, 40));
            if e[..16].iter().any(|&b| b != 0) && last > first {
                out.push((first * 512, (last - first + 1) * 512));
            }
        }
    } else {
        let mbr = read(f, 0, 512);
        for i in 0..4 {
            let e = &mbr[446 + i * 16..462 + i * 16];
            let (lba, n) = (u64::from(le32(e, 8)), u64::from(le32(e, 12)));
            if e[4] != 0 && n > 0 {
                out.push((lba * 512, n * 512));
            }
        }
    }
    out.retain(|&(s, n)| s + n <= len);
    out
}

pub fn gpt(f: &File, len: u64, m: &mut Map) {
    const HDR: &[(u64, u8, &str)] = &[
        (8, 4, "gpt.header.revision"),
        (12, 4, "gpt.header.size"),
        (24, 8, "gpt.header.my_lba"),
        (32, 8, "gpt.header.alternate_lba"),
        (40, 8, "gpt.header.first_usable"),
        (48, 8, "gpt.header.last_usable"),
        (72, 8, "gpt.header.entries_lba"),
        (80, 4, "gpt.header.entry_count"),
        (84, 4, "gpt.header.entry_size"),
    ];
    for lba in [1, len / 512 - 1] {
        let h = read(f, lba * 512, 512);
        if !h.starts_with(b"EFI PART") {
            continue;
        }
        m.push(lba * 512, HDR, Endian::Le);
        let start = le64(&h, 72);
        for i in 0..u64::from(le32(&h, 80).min(8)) {
            let at = start * 512 + i * 128;
            m.push(
                at,
                &[
                    (0, 4, "gpt.entry.type"),
                    (32, 8, "gpt.entry.first_lba"),
                    (40, 8, "gpt.entry.last_lba"),
                    (48, 8, "gpt.entry.attributes"),
                    (56, 4, "gpt.entry.name"),
                ],
                Endian::Le,
            );
        }
    }
    m.push(
        446,
        &[(4, 1, "mbr.protective.type"), (8, 4, "mbr.protective.lba")],
        Endian::Le,
    );
}

pub fn mbr(m: &mut Map) {
    for i in 0..4 {
        m.push(
            446 + i * 16,
            &[
                (0, 1, "mbr.entry.status"),
                (4, 1, "mbr.entry.type"),
                (8, 4, "mbr.entry.first_lba"),
                (12, 4, "mbr.entry.sectors"),
            ],
            Endian::Le,
        );
    }
    m.push(
        0,
        &[(510, 2, "mbr.signature"), (440, 4, "mbr.disk_id")],
        Endian::Le,
    );
}

/// A FAT filesystem at `base`: BPB, FSInfo, the first FAT entries, directory entries in
/// the hot ranges.
pub fn fat(f: &File, base: u64, size: u64, m: &mut Map) {
    let b = read(f, base, 512);
    if b.len() < 512 || le16(&b, 510) != 0xAA55 || le16(&b, 11) == 0 {
        return;
    }
    m.push(
        base,
        &[
            (11, 2, "fat.bpb.bytes_per_sector"),
            (13, 1, "fat.bpb.sectors_per_cluster"),
            (14, 2, "fat.bpb.reserved"),
            (16, 1, "fat.bpb.fats"),
            (17, 2, "fat.bpb.root_entries"),
            (19, 2, "fat.bpb.total16"),
            (22, 2, "fat.bpb.fat_size16"),
            (32, 4, "fat.bpb.total32"),
            (36, 4, "fat.bpb.fat_size32"),
            (44, 4, "fat.bpb.root_cluster"),
            (48, 2, "fat.bpb.fsinfo"),
            (67, 4, "fat.bpb.volume_id"),
        ],
        Endian::Le,
    );
    let bps = u64::from(le16(&b, 11));
    let fat_start = base + u64::from(le16(&b, 14)) * bps;
    let fat32 = le16(&b, 22) == 0;
    let w: u8 = if fat32 { 4 } else { 2 };
    for i in 2..200u64 {
        m.fields.push(Field {
            at: fat_start + i * u64::from(w),
            width: w,
            endian: Endian::Le,
            kind: "fat.entry",
        });
    }
    let mut n = 0;
    for &(s, e) in &m.ranges.clone() {
        let mut at = s.max(fat_start).next_multiple_of(32);
        while at + 32 <= e.min(base + size) && n < 4000 {
            let d = read(f, at, 32);
            let attr = d.get(11).copied().unwrap_or(0);
            if d[0] != 0 && d[0] != 0xE5 && (attr & 0xC0 == 0) && attr != 0x0F {
                m.push(
                    at,
                    &[
                        (0, 1, "fat.dirent.name"),
                        (11, 1, "fat.dirent.attr"),
                        (20, 2, "fat.dirent.cluster_hi"),
                        (26, 2, "fat.dirent.cluster_lo"),
                        (28, 4, "fat.dirent.size"),
                    ],
                    Endian::Le,
                );
                n += 1;
            }
            at += 32;
        }
    }
}

/// The Nix database inside a root filesystem: the SQLite header and b-tree page headers,
/// found by the SQLite magic at a block boundary.
pub fn sqlite(f: &File, base: u64, size: u64, m: &mut Map) {
    // The magic at any sector boundary (1 KiB ext4 blocks in small filesystems), found by
    // reading the filesystem in 1 MiB pieces.
    let mut found = None;
    let mut chunk = base;
    'scan: while chunk < base + size {
        let b = read(f, chunk, 1 << 20);
        if b.is_empty() {
            break;
        }
        for o in (0..b.len()).step_by(512) {
            if b[o..].starts_with(b"SQLite format 3\0") {
                found = Some(chunk + o as u64);
                break 'scan;
            }
        }
        chunk += 1 << 20;
    }
    if let Some(at) = found {
        let h = read(f, at, 100);
        {
            let page = match u32::from(u16::from_be_bytes([h[16], h[17]])) {
                1 => 65536,
                p => u64::from(p).max(512),
            };
            let pages = u64::from(be32(&h, 28)).min(4096);
            m.ranges.push((at, at + page * pages));
            m.push(
                at,
                &[
                    (16, 2, "sqlite.page_size"),
                    (18, 1, "sqlite.write_version"),
                    (20, 1, "sqlite.reserved"),
                    (28, 4, "sqlite.page_count"),
                    (32, 4, "sqlite.freelist_trunk"),
                    (40, 4, "sqlite.schema_cookie"),
                    (44, 4, "sqlite.schema_format"),
                    (56, 4, "sqlite.text_encoding"),
                ],
                Endian::Be,
            );
            for p in 0..pages {
                let hdr = at + p * page + if p == 0 { 100 } else { 0 };
                m.push(
                    hdr,
                    &[
                        (0, 1, "sqlite.btree.type"),
                        (1, 2, "sqlite.btree.freeblock"),
                        (3, 2, "sqlite.btree.cells"),
                        (5, 2, "sqlite.btree.content"),
                        (8, 4, "sqlite.btree.right_child"),
                    ],
                    Endian::Be,
                );
            }
        }
    }
}

pub fn qcow2(f: &File, len: u64, m: &mut Map) {
    let h = read(f, 0, 104);
    m.push(
        0,
        &[
            (4, 4, "qcow2.version"),
            (8, 8, "qcow2.backing_offset"),
            (20, 4, "qcow2.cluster_bits"),
            (24, 8, "qcow2.size"),
            (32, 4, "qcow2.crypt"),
            (36, 4, "qcow2.l1_size"),
            (40, 8, "qcow2.l1_offset"),
            (48, 8, "qcow2.refcount_offset"),
            (72, 8, "qcow2.incompatible"),
        ],
        Endian::Be,
    );
    let cluster = 1u64 << be32(&h, 20).clamp(9, 21);
    let (l1, n) = (be64(&h, 40), u64::from(be32(&h, 36)).min(64));
    for i in 0..n {
        m.push(l1 + i * 8, &[(0, 8, "qcow2.l1")], Endian::Be);
        let l2 = be64(&read(f, l1 + i * 8, 8), 0) & 0x00ff_ffff_ffff_fe00;
        if l2 == 0 || l2 + cluster > len {
            continue;
        }
        let t = read(f, l2, cluster as usize);
        for (j, e) in t
            .chunks(8)
            .enumerate()
            .filter(|(_, e)| be64(e, 0) != 0)
            .take(64)
        {
            let _ = e;
            m.push(l2 + j as u64 * 8, &[(0, 8, "qcow2.l2")], Endian::Be);
        }
    }
}

pub fn vhd(f: &File, len: u64, m: &mut Map) {
    let foot: &[(u64, u8, &str)] = &[
        (16, 8, "vhd.footer.data_offset"),
        (48, 8, "vhd.footer.current_size"),
        (60, 4, "vhd.footer.disk_type"),
    ];
    m.push(len - 512, foot, Endian::Be);
    let h = read(f, 0, 512);
    if h.starts_with(b"conectix") {
        m.push(0, foot, Endian::Be);
        let dyn_at = be64(&h, 16);
        let d = read(f, dyn_at, 1024);
        if d.starts_with(b"cxsparse") {
            m.push(
                dyn_at,
                &[
                    (16, 8, "vhd.dynamic.table_offset"),
                    (28, 4, "vhd.dynamic.max_entries"),
                    (32, 4, "vhd.dynamic.block_size"),
                ],
                Endian::Be,
            );
            let (table, n) = (be64(&d, 16), be32(&d, 28).min(4096));
            let bat = read(f, table, n as usize * 4);
            for (i, e) in bat.chunks(4).enumerate() {
                if be32(e, 0) != u32::MAX {
                    m.push(table + i as u64 * 4, &[(0, 4, "vhd.bat")], Endian::Be);
                }
            }
        }
    }
}

pub fn vhdx(f: &File, m: &mut Map) {
    const K64: u64 = 64 << 10;
    for h in [K64, 2 * K64] {
        m.push(
            h,
            &[
                (8, 8, "vhdx.header.sequence"),
                (48, 4, "vhdx.header.log_guid"),
                (66, 2, "vhdx.header.version"),
                (68, 4, "vhdx.header.log_length"),
                (72, 8, "vhdx.header.log_offset"),
            ],
            Endian::Le,
        );
    }
    let r = read(f, 3 * K64, 4096);
    m.push(3 * K64, &[(8, 4, "vhdx.region.count")], Endian::Le);
    for i in 0..u64::from(le32(&r, 8).min(8)) {
        m.push(
            3 * K64 + 16 + i * 32,
            &[
                (0, 4, "vhdx.region.guid"),
                (16, 8, "vhdx.region.offset"),
                (24, 4, "vhdx.region.length"),
            ],
            Endian::Le,
        );
        let e = &r[16 + i as usize * 32..48 + i as usize * 32];
        let (off, len) = (le64(e, 16), le32(e, 24));
        if e[0] == 0x06 {
            // Metadata region.
            let t = read(f, off, 4096);
            m.push(off, &[(10, 2, "vhdx.metadata.count")], Endian::Le);
            for j in 0..u64::from(le16(&t, 10).min(16)) {
                let at = off + 32 + j * 32;
                m.push(
                    at,
                    &[
                        (0, 4, "vhdx.metadata.item_guid"),
                        (16, 4, "vhdx.metadata.item_offset"),
                        (20, 4, "vhdx.metadata.item_length"),
                    ],
                    Endian::Le,
                );
                let io = u64::from(le32(&t, 32 + j as usize * 32 + 16));
                m.push(
                    off + io,
                    &[
                        (0, 4, "vhdx.metadata.value"),
                        (4, 4, "vhdx.metadata.value_hi"),
                    ],
                    Endian::Le,
                );
            }
        } else {
            let bat = read(f, off, (len as usize).min(65536));
            for (j, e) in bat
                .chunks(8)
                .enumerate()
                .filter(|(_, e)| le64(e, 0) != 0)
                .take(256)
            {
                let _ = e;
                m.push(off + j as u64 * 8, &[(0, 8, "vhdx.bat")], Endian::Le);
            }
        }
    }
}

/// A VMDK sparse extent at `base` (`len` bytes): header, grain markers of a stream, the
/// grain directory and tables of a monolithic sparse file.
pub fn vmdk(f: &File, base: u64, len: u64, m: &mut Map) {
    let h = read(f, base, 512);
    m.push(
        base,
        &[
            (4, 4, "vmdk.version"),
            (8, 4, "vmdk.flags"),
            (12, 8, "vmdk.capacity"),
            (20, 8, "vmdk.grain"),
            (44, 4, "vmdk.gtes_per_gt"),
            (56, 8, "vmdk.gd_offset"),
            (64, 8, "vmdk.overhead"),
            (77, 2, "vmdk.compress"),
        ],
        Endian::Le,
    );
    let flags = le32(&h, 8);
    if flags & (1 << 17) != 0 {
        let mut pos = base + le64(&h, 64) * 512;
        let mut n = 0;
        while pos + 16 <= base + len && n < 2000 {
            let mk = read(f, pos, 16);
            m.push(
                pos,
                &[
                    (0, 8, "vmdk.marker.lba"),
                    (8, 4, "vmdk.marker.size"),
                    (12, 4, "vmdk.marker.type"),
                ],
                Endian::Le,
            );
            let size = u64::from(le32(&mk, 8));
            if size == 0 {
                if le32(&mk, 12) == 0 {
                    break;
                }
                pos += 512 + le64(&mk, 0) * 512;
            } else {
                m.ranges.push((pos + 12, pos + 12 + size.min(64)));
                pos = (pos + 12 + size).next_multiple_of(512);
            }
            n += 1;
        }
    } else {
        let gd = base + le64(&h, 56) * 512;
        for i in 0..8 {
            m.push(gd + i * 4, &[(0, 4, "vmdk.gd")], Endian::Le);
        }
        let gt = u64::from(le32(&read(f, gd, 4), 0)) * 512;
        for i in 0..64 {
            m.push(base + gt + i * 4, &[(0, 4, "vmdk.gt")], Endian::Le);
        }
    }
}

/// Tar headers (size, type, name), for an OVA; returns `(offset, size)` of a `.vmdk` member.
pub fn tar(f: &File, len: u64, m: &mut Map) -> Option<(u64, u64)> {
    let mut pos = 0;
    let mut vmdk = None;
    while pos + 512 <= len {
        let h = read(f, pos, 512);
        if h.iter().all(|&b| b == 0) {
            break;
        }
        m.push(pos, &[(124, 12, "tar.size")], Endian::Octal);
        m.push(
            pos,
            &[(156, 1, "tar.type"), (99, 1, "tar.name_end")],
            Endian::Le,
        );
        let size = u64::from_str_radix(
            String::from_utf8_lossy(&h[124..136]).trim_matches(|c: char| c == '\0' || c == ' '),
            8,
        )
        .unwrap_or(0);
        let name_len = h[..100].iter().position(|&b| b == 0).unwrap_or(100);
        if h[..name_len].ends_with(b".vmdk") {
            vmdk = Some((pos + 512, size));
        }
        pos += 512 + size.next_multiple_of(512);
    }
    vmdk
}

/// Fields of the GNU sparse tar held in memory (`gce`): the header's sparse map, the
/// extension headers.
pub fn gnu_sparse(t: &[u8], m: &mut Map) {
    m.push(
        0,
        &[
            (124, 12, "tar.size"),
            (386, 12, "tar.sparse.offset"),
            (398, 12, "tar.sparse.numbytes"),
            (410, 12, "tar.sparse.offset2"),
            (422, 12, "tar.sparse.numbytes2"),
            (483, 12, "tar.sparse.realsize"),
        ],
        Endian::Octal,
    );
    m.push(
        0,
        &[(156, 1, "tar.type"), (482, 1, "tar.sparse.isextended")],
        Endian::Le,
    );
    if t.get(482) == Some(&1) {
        m.push(
            512,
            &[(0, 12, "tar.ext.offset"), (12, 12, "tar.ext.numbytes")],
            Endian::Octal,
        );
        m.push(512, &[(504, 1, "tar.ext.isextended")], Endian::Le);
    }
    m.ranges.push((0, 2048.min(t.len() as u64)));
}

/// The extent headers of a VMA archive: `(offset, header)` for the first `max`.
pub fn vma_extents(f: &File, len: u64, max: usize) -> Vec<(u64, Vec<u8>)> {
    let mut pos = u64::from(be32(&read(f, 0, 64), 56));
    let mut out = Vec::new();
    while pos + 512 <= len && out.len() < max {
        let h = read(f, pos, 512);
        if !h.starts_with(b"VMAE") {
            break;
        }
        let blocks: u64 = (0..59)
            .map(|i| u64::from((be64(&h, 40 + 8 * i) >> 48).count_ones()))
            .sum();
        out.push((pos, h));
        pos += 512 + blocks * 4096;
    }
    out
}

pub fn vma(f: &File, len: u64, m: &mut Map) {
    m.push(
        0,
        &[
            (4, 4, "vma.version"),
            (48, 4, "vma.blob_offset"),
            (52, 4, "vma.blob_size"),
            (56, 4, "vma.header_size"),
            (2044, 4, "vma.config_name"),
            (3068, 4, "vma.config_data"),
            (4096 + 32, 4, "vma.dev_name"),
            (4096 + 40, 8, "vma.dev_size"),
        ],
        Endian::Be,
    );
    for (at, h) in vma_extents(f, len, 32) {
        m.push(at, &[(6, 2, "vma.extent.block_count")], Endian::Be);
        for i in (0..59).filter(|&i| be64(&h, 40 + 8 * i) != 0).take(8) {
            m.push(
                at + 40 + 8 * i as u64,
                &[(0, 8, "vma.extent.blockinfo")],
                Endian::Be,
            );
        }
    }
}
