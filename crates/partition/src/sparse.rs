//! A small sparse in-memory "disk": `Read + Write + Seek` over a map of written sectors.
//!
//! The `gpt` and `mbrman` crates want a device; this one has the size of the real disk but
//! only stores the sectors that were written, so encoding a table for a 1 TiB disk costs a
//! few KiB. Unwritten sectors read as zeros.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Seek, SeekFrom};

use crate::{Write, SECTOR_SIZE};

const SECTOR: usize = 512;
const _: () = assert!(SECTOR as u64 == SECTOR_SIZE);

pub(crate) struct SparseDisk {
    len: u64,
    pos: u64,
    sectors: BTreeMap<u64, Box<[u8; SECTOR]>>,
}

impl fmt::Debug for SparseDisk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SparseDisk")
            .field("len", &self.len)
            .field("pos", &self.pos)
            .field("written_sectors", &self.sectors.len())
            .finish()
    }
}

impl SparseDisk {
    /// A zero-filled disk of `len` bytes (a multiple of 512, checked by the callers).
    pub(crate) fn new(len: u64) -> Self {
        Self {
            len,
            pos: 0,
            sectors: BTreeMap::new(),
        }
    }

    /// The written sectors, runs of consecutive sectors merged into one [`Write`] each,
    /// in ascending offset order.
    pub(crate) fn into_writes(self) -> Vec<Write> {
        let mut out: Vec<Write> = Vec::new();
        for (lba, data) in self.sectors {
            let offset = lba * SECTOR_SIZE;
            match out.last_mut() {
                Some(last) if last.offset + last.bytes.len() as u64 == offset => {
                    last.bytes.extend_from_slice(&data[..]);
                }
                _ => out.push(Write {
                    offset,
                    bytes: data.to_vec(),
                }),
            }
        }
        out
    }
}

impl Read for SparseDisk {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let remaining = self.len.saturating_sub(self.pos);
        let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
        let mut done = 0;
        while done < n {
            let abs = self.pos + done as u64;
            let lba = abs / SECTOR_SIZE;
            let within = (abs % SECTOR_SIZE) as usize;
            let chunk = (SECTOR - within).min(n - done);
            let dst = &mut buf[done..done + chunk];
            match self.sectors.get(&lba) {
                Some(sector) => dst.copy_from_slice(&sector[within..within + chunk]),
                None => dst.fill(0),
            }
            done += chunk;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Write for SparseDisk {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let end = self
            .pos
            .checked_add(buf.len() as u64)
            .filter(|&end| end <= self.len)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!(
                        "write of {} bytes at offset {} past the disk end {}",
                        buf.len(),
                        self.pos,
                        self.len
                    ),
                )
            })?;
        let mut done = 0;
        while done < buf.len() {
            let abs = self.pos + done as u64;
            let lba = abs / SECTOR_SIZE;
            let within = (abs % SECTOR_SIZE) as usize;
            let chunk = (SECTOR - within).min(buf.len() - done);
            let sector = self
                .sectors
                .entry(lba)
                .or_insert_with(|| Box::new([0u8; SECTOR]));
            sector[within..within + chunk].copy_from_slice(&buf[done..done + chunk]);
            done += chunk;
        }
        self.pos = end;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for SparseDisk {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let new = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let new = new.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before byte 0 or overflow",
            )
        })?;
        self.pos = new;
        Ok(new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    #[test]
    fn unwritten_reads_zero_and_writes_merge() {
        let mut d = SparseDisk::new(8 * 512);
        d.seek(SeekFrom::Start(510)).unwrap();
        d.write_all(&[1, 2, 3, 4]).unwrap();
        d.seek(SeekFrom::End(-512)).unwrap();
        d.write_all(&[9; 512]).unwrap();
        let mut buf = [0xAAu8; 6];
        d.seek(SeekFrom::Start(508)).unwrap();
        d.read_exact(&mut buf).unwrap();
        assert_eq!(buf, [0, 0, 1, 2, 3, 4]);
        let w = d.into_writes();
        assert_eq!(w.len(), 2);
        assert_eq!((w[0].offset, w[0].bytes.len()), (0, 1024));
        assert_eq!(&w[0].bytes[510..514], &[1, 2, 3, 4]);
        assert_eq!((w[1].offset, w[1].bytes.len()), (7 * 512, 512));
    }

    #[test]
    fn write_past_end_fails_and_read_stops_at_end() {
        let mut d = SparseDisk::new(1024);
        d.seek(SeekFrom::Start(1020)).unwrap();
        assert!(d.write_all(&[0; 8]).is_err());
        let mut buf = [0u8; 16];
        assert_eq!(d.read(&mut buf).unwrap(), 4);
        assert_eq!(d.read(&mut buf).unwrap(), 0);
    }
}
