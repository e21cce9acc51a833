//! SHA-256 of the whole disk, zeros included, as `sha256sum` of the raw image prints it.

use sha2::{Digest, Sha256};

use crate::{Data, Piece, Sink};

#[derive(Default)]
pub struct Sha256Sink {
    hash: Sha256,
    digest: Option<[u8; 32]>,
}

impl Sha256Sink {
    pub fn new() -> Self {
        Self::default()
    }

    /// The digest, once the stream has finished the sink.
    pub fn digest(&self) -> Option<[u8; 32]> {
        self.digest
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
        self.digest = Some(std::mem::take(&mut self.hash).finalize().into());
        Ok(())
    }
}
