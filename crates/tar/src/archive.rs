//! The tree walk, the exact size and the streaming writer.

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::sync::Arc;

use crate::blockio::{self, PlannedSource};
use crate::diskmap;
use crate::fstree::{FileData, Kind, NodeId, Tree};
use crate::header::{padding, EntryType, Header, SparseOf, BLOCK};
use crate::{sparse, Error, Result};

/// GNU tar's and bsdtar's default record (20 blocks): the archive's length is a multiple.
const RECORD: u64 = 20 * BLOCK as u64;
/// How much of a host file is read at a time.
const PIECE: u64 = 1 << 20;

/// How members are named.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RootEntry {
    /// The root is a member `./` and every path starts with `./` (`tar -C dir -c .`).
    DotSlash,
    /// No member for the root; paths are relative without a leading `./` (`tar -C dir -c *`).
    Omitted,
}

/// What the caller decides about the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// How members are named.
    pub root: RootEntry,
    /// Store host files with runs of zeros as sparse members (GNU sparse 1.0 in pax), the
    /// zeros left out at 4 KiB granularity, by content (the crate docs'
    /// "Sparse members"). Planning then reads every host file once more (holes the file system
    /// reports are skipped); off, every file is stored whole.
    pub sparse: bool,
}

/// One member to write.
#[derive(Debug)]
struct Entry {
    /// The path as stored (a directory's with a trailing `/`).
    path: Vec<u8>,
    node: NodeId,
    /// For a later name of a hard-linked node: the entry holding its data.
    link_to: Option<usize>,
    /// A sparse member's data regions and stand-in name.
    sparse: Option<Sparse>,
}

/// What a sparse member stores.
#[derive(Debug)]
struct Sparse {
    /// Data regions `(offset, length)`, the file's end marked as GNU tar marks it.
    regions: Vec<(u64, u64)>,
    /// The name its ustar header carries (the real one is in its pax header).
    stand_in: Vec<u8>,
}

/// The stand-in name of a sparse member: `GNUSparseFile.0/` and the last component of
/// `path`, cut to fit ustar's name field (GNU tar puts the directory and its process id in
/// front; a fixed name keeps the archive deterministic).
fn stand_in(path: &[u8]) -> Vec<u8> {
    let base = path.rsplit(|&b| b == b'/').next().unwrap_or(path);
    let mut name = b"GNUSparseFile.0/".to_vec();
    name.extend_from_slice(&base[..base.len().min(100 - name.len())]);
    name
}

/// The data regions of a host file when it has holes worth leaving out.
fn sparse_regions(data: &FileData) -> Result<Option<Vec<(u64, u64)>>> {
    let FileData::Host { path, size } = data else {
        return Ok(None);
    };
    let regions = sparse::regions(&PlannedSource::open(path, *size)?)?;
    Ok(sparse::has_holes(&regions, *size).then_some(regions))
}

/// A tar archive of a tree, planned: every member and the archive's length are fixed.
#[derive(Debug)]
pub struct Archive<'t> {
    tree: &'t Tree,
    entries: Vec<Entry>,
    size: u64,
}

/// The path stored for the walk's `path` (`""` is the root, others start with `/`).
fn stored_path(walked: &[u8], is_dir: bool, root: RootEntry) -> Option<Vec<u8>> {
    let mut p = match (root, walked.is_empty()) {
        (RootEntry::Omitted, true) => return None,
        (RootEntry::Omitted, false) => walked[1..].to_vec(),
        (RootEntry::DotSlash, _) => [b".", walked].concat(),
    };
    if is_dir {
        p.push(b'/');
    }
    Some(p)
}

impl<'t> Archive<'t> {
    /// Plans the archive of `tree`: walks it, names every member, decides hard links and
    /// computes the length. Refuses a tree holding a socket.
    pub fn new(tree: &'t Tree, opts: Options) -> Result<Self> {
        let counts = tree.link_counts();
        let mut first: HashMap<NodeId, usize> = HashMap::new();
        let mut entries = Vec::new();
        for (walked, node) in tree.walk() {
            let n = tree.node(node);
            if matches!(n.kind, Kind::Socket) {
                return Err(Error::Socket {
                    path: String::from_utf8_lossy(&walked).into_owned(),
                });
            }
            let Some(path) = stored_path(&walked, n.is_dir(), opts.root) else {
                continue;
            };
            let shared = !n.is_dir() && counts[blockio::to_usize(u64::from(node))] > 1;
            let link_to = if shared {
                first.get(&node).copied()
            } else {
                None
            };
            if shared && link_to.is_none() {
                first.insert(node, entries.len());
            }
            let sparse = match &n.kind {
                Kind::File(data) if opts.sparse && link_to.is_none() => {
                    sparse_regions(data)?.map(|regions| Sparse {
                        regions,
                        stand_in: stand_in(&path),
                    })
                }
                _ => None,
            };
            entries.push(Entry {
                path,
                node,
                link_to,
                sparse,
            });
        }
        let mut archive = Archive {
            tree,
            entries,
            size: 0,
        };
        let members: u64 = (0..archive.entries.len())
            .map(|i| {
                let h = archive.header(i);
                h.encode().len() as u64 + h.size + padding(h.size)
            })
            .sum();
        archive.size = (members + 2 * BLOCK as u64).next_multiple_of(RECORD);
        Ok(archive)
    }

    /// The archive's exact length in bytes, what [`Archive::write`] writes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// How many members the archive holds (pax extended headers not counted).
    pub fn members(&self) -> usize {
        self.entries.len()
    }

    /// The header of entry `i`.
    fn header(&self, i: usize) -> Header<'_> {
        let e = &self.entries[i];
        let node = self.tree.node(e.node);
        let mut h = Header {
            path: &e.path,
            link: b"",
            kind: EntryType::Regular,
            mode: u32::from(node.meta.perm),
            uid: node.meta.uid,
            gid: node.meta.gid,
            size: 0,
            mtime: node.meta.mtime,
            dev: (0, 0),
            sparse: None,
        };
        if let Some(target) = e.link_to {
            h.kind = EntryType::HardLink;
            h.link = &self.entries[target].path;
            return h;
        }
        match &node.kind {
            Kind::Dir(_) => h.kind = EntryType::Dir,
            Kind::File(data) => match &e.sparse {
                Some(sp) => {
                    h.path = &sp.stand_in;
                    h.size = sparse::stored_size(&sp.regions);
                    h.sparse = Some(SparseOf {
                        name: &e.path,
                        real_size: data.size(),
                    });
                }
                None => h.size = data.size(),
            },
            Kind::Symlink(target) => {
                h.kind = EntryType::Symlink;
                h.link = target;
            }
            Kind::CharDev { major, minor } => {
                h.kind = EntryType::CharDev;
                h.dev = (*major, *minor);
            }
            Kind::BlockDev { major, minor } => {
                h.kind = EntryType::BlockDev;
                h.dev = (*major, *minor);
            }
            // A socket was refused by `new`; FIFOs and sockets carry no data.
            Kind::Fifo | Kind::Socket => h.kind = EntryType::Fifo,
        }
        h
    }

    /// Writes the archive into `w`, front to back; returns the length written, which is
    /// [`Archive::size`]. Host files are read as they are written; one that changed since
    /// the tree was made fails the write.
    pub fn write<W: Write>(&self, w: W) -> Result<u64> {
        let mut out = Counted {
            w: BufWriter::with_capacity(blockio::to_usize(PIECE), w),
            n: 0,
        };
        for i in 0..self.entries.len() {
            let h = self.header(i);
            out.put(&h.encode())?;
            if h.kind == EntryType::Regular {
                let e = &self.entries[i];
                match (&self.tree.node(e.node).kind, &e.sparse) {
                    (Kind::File(FileData::Host { path, size }), Some(sp)) => {
                        let src = PlannedSource::open(path, *size)?;
                        sparse::write(&src, &sp.regions, |b| out.put(b))?;
                    }
                    (Kind::File(data), _) => file_data(&mut out, data)?,
                    _ => {}
                }
                out.zeros(padding(h.size))?;
            }
        }
        out.zeros(self.size - out.n)?;
        out.w.flush().map_err(Error::Write)?;
        Ok(out.n)
    }

    /// The archive as a map of [`Archive::size`] bytes, named `name`: what
    /// [`Archive::write`] writes, with host files' data referenced, not read (a sparse
    /// member's regions are read later too; only the planning of its regions read the file).
    pub fn map(&self, name: &str) -> Result<diskmap::Map> {
        let mut m = Mapper {
            b: diskmap::MapBuilder::new(name, self.size),
            at: 0,
            pending: Vec::new(),
        };
        for i in 0..self.entries.len() {
            let h = self.header(i);
            m.put(&h.encode());
            if h.kind == EntryType::Regular {
                let e = &self.entries[i];
                match (&self.tree.node(e.node).kind, &e.sparse) {
                    (Kind::File(FileData::Host { path, size }), sparse) => {
                        let src = diskmap::SourceFile::new(path.clone(), *size);
                        match sparse {
                            Some(sp) => {
                                m.put(&sparse::map(&sp.regions));
                                for &(o, l) in &sp.regions {
                                    m.file(&src, o, l)?;
                                }
                            }
                            None => m.file(&src, 0, *size)?,
                        }
                    }
                    (Kind::File(FileData::Bytes(b)), _) => m.put(b),
                    _ => {}
                }
                m.put(&vec![0; blockio::to_usize(padding(h.size))]);
            }
        }
        let tail = self.size - m.at - m.pending.len() as u64;
        m.put(&vec![0; blockio::to_usize(tail)]);
        m.flush()?;
        m.b.finish().map_err(Error::Map)
    }
}

/// The archive's bytes as a map, built front to back: runs of in-memory bytes (headers,
/// padding, small files the tree holds) gathered into one extent, host file data as file
/// extents.
struct Mapper {
    b: diskmap::MapBuilder,
    at: u64,
    pending: Vec<u8>,
}

impl Mapper {
    fn put(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    fn flush(&mut self) -> Result<()> {
        if !self.pending.is_empty() {
            let bytes = std::mem::take(&mut self.pending);
            let n = bytes.len() as u64;
            self.b.bytes(self.at, bytes).map_err(Error::Map)?;
            self.at += n;
        }
        Ok(())
    }

    fn file(&mut self, src: &Arc<diskmap::SourceFile>, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        self.flush()?;
        self.b.file(self.at, src, offset, len).map_err(Error::Map)?;
        self.at += len;
        Ok(())
    }
}

/// A regular file's bytes.
fn file_data<W: Write>(out: &mut Counted<W>, data: &FileData) -> Result<()> {
    match data {
        FileData::Bytes(b) => out.put(b),
        FileData::Host { path, size } => {
            let src = PlannedSource::open(path, *size)?;
            let mut buf = vec![0u8; blockio::to_usize(PIECE.min(*size))];
            let mut at = 0;
            while at < *size {
                let n = blockio::to_usize(PIECE.min(*size - at));
                src.read_exact_at(at, &mut buf[..n])?;
                out.put(&buf[..n])?;
                at += n as u64;
            }
            Ok(())
        }
    }
}

/// The output and how many bytes went into it.
struct Counted<W: Write> {
    w: W,
    n: u64,
}

impl<W: Write> Counted<W> {
    fn put(&mut self, b: &[u8]) -> Result<()> {
        self.w.write_all(b).map_err(Error::Write)?;
        self.n += b.len() as u64;
        Ok(())
    }

    fn zeros(&mut self, mut n: u64) -> Result<()> {
        const Z: [u8; BLOCK] = [0; BLOCK];
        while n > 0 {
            let k = n.min(BLOCK as u64);
            self.put(&Z[..blockio::to_usize(k)])?;
            n -= k;
        }
        Ok(())
    }
}
