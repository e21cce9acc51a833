//! SHA-256 of the whole disk, zeros included, as `sha256sum` of the raw image prints it.

use sha2::{Digest, Sha256};

use crate::{Data, Piece, Sink};

/// A sink that hashes every byte of the disk (zeros too) with SHA-256.
#[derive(Default)]
pub struct Sha256Sink {
    hash: Sha256,
    digest: Option<[u8; 32]>,
    /// The state before finalising, for [`Sha256Sink::digest_with_suffix`].
    done: Option<Sha256>,
}

impl Sha256Sink {
    /// A sink that has hashed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The digest, once the stream has finished the sink.
    pub fn digest(&self) -> Option<[u8; 32]> {
        self.digest
    }

    /// The digest of the disk followed by `suffix` (a fixed VHD: the disk, then its footer),
    /// once the stream has finished the sink; the disk is not hashed again.
    pub fn digest_with_suffix(&self, suffix: &[u8]) -> Option<[u8; 32]> {
        let mut h = self.done.clone()?;
        h.update(suffix);
        Some(h.finalize().into())
    }

    /// The digest in lower-case hex.
    pub fn hex(&self) -> Option<String> {
        self.digest.map(|d| super::hex(&d))
    }
}

impl Sink for Sha256Sink {
    fn name(&self) -> String {
        "hashing the disk (SHA-256)".into()
    }

    fn piece(&mut self, p: &Piece<'_>) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        match &p.data {
            Data::Zero => super::for_zeros(p.len, |z| self.hash.update(z)),
            _ => self.hash.update(p.bytes().unwrap_or_default()),
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let h = std::mem::take(&mut self.hash);
        self.done = Some(h.clone());
        self.digest = Some(h.finalize().into());
        Ok(())
    }
}
