//! Streaming blob writes: bytes hashed as they arrive, in the temp area
//! (or in place as a resumable `-partial` download), visible only after
//! the digest checks out and the file is renamed into place.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::{io_err, Digest, Error, Result, Store};

impl Store {
    /// Starts a streaming blob write. `expected` is the digest the client
    /// named (checked at the end); `size_hint` reserves budget up front.
    pub fn blob_writer(
        self: &Arc<Self>,
        expected: Option<Digest>,
        size_hint: Option<u64>,
    ) -> Result<BlobWriter> {
        let reserved = size_hint.unwrap_or(0);
        self.reserve(reserved)?;
        let path = self.temp_path("blob");
        let file = match File::create(&path) {
            Ok(f) => f,
            Err(e) => {
                self.release(reserved);
                return Err(io_err("create temp blob")(e));
            }
        };
        Ok(BlobWriter {
            store: Arc::clone(self),
            path,
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
            reserved,
            expected,
            partial: None,
        })
    }

    /// Where an interrupted download of `digest` keeps its bytes
    /// (`blobs/sha256-<hex>-partial`, Ollama's name), so a later pull can
    /// resume it instead of starting over.
    pub fn partial_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(format!("{}-partial", digest.file_name()))
    }

    /// Starts or resumes a download of `expected` into its partial file.
    /// The bytes already there are hashed first, so the writer only needs
    /// what follows; `size` (the manifest's) reserves the missing budget.
    /// Unlike [`Store::blob_writer`], dropping it unfinished keeps the
    /// partial file for the next attempt; a digest mismatch deletes it.
    pub fn partial_writer(self: &Arc<Self>, expected: Digest, size: u64) -> Result<BlobWriter> {
        let path = self.partial_path(&expected);
        let mut file = File::options()
            .create(true)
            .read(true)
            .append(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let mut hasher = Sha256::new();
        let base = io::copy(&mut file, &mut hasher).map_err(io_err("hash partial blob"))?;
        // A partial file of unknown origin was counted when the store opened;
        // one this process left behind was counted when its writer dropped.
        let reserved = size.saturating_sub(base);
        self.reserve(reserved)?;
        Ok(BlobWriter {
            store: Arc::clone(self),
            path,
            file: Some(file),
            hasher,
            written: base,
            reserved,
            expected: Some(expected),
            partial: Some(Partial {
                base,
                committed: false,
            }),
        })
    }
}

/// A blob being written: hashed as bytes arrive, visible only after
/// [`BlobWriter::finish`]. Dropping it unfinished deletes the temp file and
/// gives back its reservation.
#[derive(Debug)]
pub struct BlobWriter {
    store: Arc<Store>,
    path: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    written: u64,
    reserved: u64,
    expected: Option<Digest>,
    /// Set for a resumable download written in place as `-partial`.
    partial: Option<Partial>,
}

/// The bookkeeping of a partial download.
#[derive(Debug)]
struct Partial {
    /// Bytes that were in the file when the writer opened it; they are
    /// already counted as used.
    base: u64,
    /// Whether the file was renamed into place or deleted, so drop must not
    /// count it again.
    committed: bool,
}

impl BlobWriter {
    /// Bytes in the blob so far, including a resumed prefix.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Sets the digest [`BlobWriter::finish`] must find, for writes whose
    /// digest is named only at the end (a registry upload session).
    pub fn expect(&mut self, digest: Digest) {
        self.expected = Some(digest);
    }

    /// Appends bytes, reserving more budget when the size hint is passed.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        let after = self.written + bytes.len() as u64;
        let base = self.partial.as_ref().map_or(0, |p| p.base);
        if after - base > self.reserved {
            // Grow the reservation in steps, so a stream of small chunks does
            // not take the state lock for each one.
            let step = (after - base - self.reserved).max(8 << 20);
            self.store.reserve(step)?;
            self.reserved += step;
        }
        let file = self.file.as_mut().ok_or_else(|| Error::Io {
            context: "write to a finished blob".into(),
            source: io::Error::from(io::ErrorKind::Other),
        })?;
        file.write_all(bytes).map_err(io_err("write blob"))?;
        self.hasher.update(bytes);
        self.written = after;
        Ok(())
    }

    /// Verifies the digest, syncs and renames the blob into place.
    /// Returns the digest, the size and whether the blob is new.
    pub fn finish(mut self) -> Result<(Digest, u64, bool)> {
        let file = self.file.take().ok_or_else(|| Error::Io {
            context: "finish a finished blob".into(),
            source: io::Error::from(io::ErrorKind::Other),
        })?;
        let got = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if let Some(expected) = &self.expected {
            if *expected != got {
                if let Some(p) = self.partial.as_mut() {
                    // Bad bytes must be downloaded again, not resumed.
                    drop(file);
                    let _ = fs::remove_file(&self.path);
                    p.committed = true;
                    let mut st = self.store.state();
                    st.used = st.used.saturating_sub(p.base);
                }
                return Err(Error::DigestMismatch {
                    expected: expected.to_string(),
                    got: got.to_string(),
                });
            }
        }
        file.sync_all().map_err(io_err("sync blob"))?;
        drop(file);
        let target = self.store.blob_path(&got);
        let base = self.partial.as_ref().map_or(0, |p| p.base);
        let mut st = self.store.state();
        if target.is_file() {
            if let Some(p) = self.partial.as_mut() {
                let _ = fs::remove_file(&self.path);
                p.committed = true;
                st.used = st.used.saturating_sub(base);
            }
            drop(st);
            self.store.touch_blob(&got);
            return Ok((got, self.written, false));
        }
        fs::rename(&self.path, &target).map_err(io_err("rename blob into place"))?;
        self.store.sync_blobs_dir();
        st.used = st.used.saturating_add(self.written.saturating_sub(base));
        if let Some(p) = self.partial.as_mut() {
            p.committed = true;
        }
        Ok((got, self.written, true))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        match &self.partial {
            None => {
                // After a successful rename the temp path no longer exists; removing it is harmless.
                let _ = fs::remove_file(&self.path);
            }
            Some(p) if !p.committed => {
                // An interrupted download stays on disk to be resumed, so
                // its new bytes now count as used, as the store's opening
                // scan would count them.
                let mut st = self.store.state();
                st.used += self.written - p.base;
            }
            Some(_) => {}
        }
        self.store.release(self.reserved);
    }
}
