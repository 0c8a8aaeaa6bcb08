//! Downloads written in parts: a blob's `-partial` file, sized to the blob
//! up front, is filled at offsets by several writers at once, and a small
//! sidecar file (`-partial.json`) records how far each part got, so an
//! interrupted pull resumes only what is missing.
//!
//! The store owns the files and the budget; what the sidecar says (its
//! format, the part layout) is the puller's business, stored here as opaque
//! bytes. Budget: the partial file counts as used at its full size from the
//! moment it is sized, as the store's opening scan would count it, so
//! nothing is reserved while parts arrive and nothing changes when the
//! finished file is renamed into place.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

use super::{io_err, Digest, Error, Result, Store};

impl Store {
    /// The sidecar beside a blob's partial file, where a parted download
    /// keeps its progress.
    fn progress_path(&self, digest: &Digest) -> PathBuf {
        self.root
            .join("blobs")
            .join(format!("{}-partial.json", digest.file_name()))
    }

    /// The progress a parted download of `digest` saved, if any.
    pub fn download_progress(&self, digest: &Digest) -> Option<Vec<u8>> {
        fs::read(self.progress_path(digest)).ok()
    }

    /// Starts or resumes a parted download of `expected` (`size` bytes). The
    /// sidecar gets `progress` first, then the partial file is sized to the
    /// blob (reserving what it grows by), so a sized file never exists
    /// without a sidecar that tells which of its bytes are real.
    pub fn ranged_writer(
        self: &Arc<Self>,
        expected: Digest,
        size: u64,
        progress: &[u8],
    ) -> Result<RangedWriter> {
        let path = self.partial_path(&expected);
        let progress_path = self.progress_path(&expected);
        self.write_progress_file(&progress_path, progress)?;
        let file = File::options()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err(format!("open {}", path.display())))?;
        let len = file.metadata().map_err(io_err("stat partial blob"))?.len();
        // What is on disk already counts as used (the opening scan, or the
        // writer that left it, counted it).
        let grow = size.saturating_sub(len);
        self.reserve(grow)?;
        if let Err(e) = file.set_len(size) {
            self.release(grow);
            return Err(io_err("size partial blob")(e));
        }
        {
            let mut st = self.state();
            st.reserved = st.reserved.saturating_sub(grow);
            st.used += grow;
        }
        Ok(RangedWriter {
            store: Arc::clone(self),
            path,
            progress_path,
            file,
            size,
            expected,
        })
    }

    /// Replaces a sidecar through a temp file, so it is never half written.
    fn write_progress_file(&self, path: &PathBuf, bytes: &[u8]) -> Result<()> {
        let tmp = self.temp_path("progress");
        let written = File::create(&tmp)
            .and_then(|mut f| f.write_all(bytes))
            .and_then(|()| fs::rename(&tmp, path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("save download progress")(e));
        }
        Ok(())
    }
}

/// A blob download filled at offsets, possibly from several threads
/// (`write_at` takes `&self`). Dropping it unfinished keeps the partial
/// file and its sidecar for the next pull.
#[derive(Debug)]
pub struct RangedWriter {
    store: Arc<Store>,
    path: PathBuf,
    progress_path: PathBuf,
    file: File,
    size: u64,
    expected: Digest,
}

impl RangedWriter {
    /// Writes `bytes` at `offset`; the range must lie inside the blob.
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset.saturating_add(bytes.len() as u64) > self.size {
            return Err(Error::Io {
                context: format!(
                    "write of {} bytes at {offset} past the blob's {} bytes",
                    bytes.len(),
                    self.size
                ),
                source: io::Error::from(io::ErrorKind::InvalidInput),
            });
        }
        self.file
            .write_all_at(bytes, offset)
            .map_err(io_err("write partial blob"))
    }

    /// Saves the caller's progress record, after the bytes it describes
    /// were written.
    pub fn save_progress(&self, progress: &[u8]) -> Result<()> {
        self.store
            .write_progress_file(&self.progress_path, progress)
    }

    /// Hashes the whole file; if it is the expected blob, syncs it and
    /// renames it into place. A mismatch deletes the file and its sidecar
    /// (bad bytes must be downloaded again, not resumed). Returns the
    /// digest, the size and whether the blob is new.
    pub fn finish(self) -> Result<(Digest, u64, bool)> {
        let hashed = (|| {
            let mut f = File::open(&self.path)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let n = f.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
            }
            Ok(Digest::from_hasher(hasher))
        })();
        let got = hashed.map_err(io_err("hash partial blob"))?;
        if got != self.expected {
            let expected = self.expected.to_string();
            self.discard();
            return Err(Error::DigestMismatch {
                expected,
                got: got.to_string(),
            });
        }
        self.file.sync_all().map_err(io_err("sync blob"))?;
        let target = self.store.blob_path(&got);
        let mut st = self.store.state();
        if target.is_file() {
            // Someone else finished the same blob first.
            let _ = fs::remove_file(&self.path);
            let _ = fs::remove_file(&self.progress_path);
            st.used = st.used.saturating_sub(self.size);
            drop(st);
            self.store.touch_blob(&got);
            return Ok((got, self.size, false));
        }
        fs::rename(&self.path, &target).map_err(io_err("rename blob into place"))?;
        drop(st);
        self.store.sync_blobs_dir();
        let _ = fs::remove_file(&self.progress_path);
        Ok((got, self.size, true))
    }

    /// Deletes the partial file and its sidecar and gives their budget back.
    pub fn discard(self) {
        let _ = fs::remove_file(&self.path);
        let _ = fs::remove_file(&self.progress_path);
        let mut st = self.store.state();
        st.used = st.used.saturating_sub(self.size);
    }
}
