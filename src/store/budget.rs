//! The disk budget: reservations before every write, eviction of
//! unreferenced blobs (least recently used first) when a write would not
//! fit, and pins that keep a create's blobs from eviction.

use std::fs;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::{Digest, Error, Result, State, Store};

impl Store {
    /// Bytes the file system under the store still has for an unprivileged
    /// writer, if it can say.
    pub fn free_space(&self) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.root().as_os_str().as_bytes()).ok()?;
        // SAFETY: a plain C struct, valid when zeroed.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `statvfs` reads the NUL-terminated path, which lives across
        // the call, and writes only into `st`, which we own.
        let rc = unsafe { libc::statvfs(path.as_ptr(), &mut st) };
        #[allow(clippy::unnecessary_cast)] // the field types differ by target
        let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
        (rc == 0).then_some(free)
    }

    /// Checks that `bytes` more would fit the budget now (evicting
    /// unreferenced blobs if needed), without keeping a reservation: a pull
    /// refuses up front instead of failing halfway.
    pub fn ensure_room(&self, bytes: u64) -> Result<()> {
        self.reserve(bytes)?;
        self.release(bytes);
        Ok(())
    }

    /// Reserves `bytes` of budget, evicting unreferenced blobs oldest-first if needed.
    pub(super) fn reserve(&self, bytes: u64) -> Result<()> {
        let mut st = self.state();
        let Some(budget) = self.budget else {
            st.reserved = st.reserved.saturating_add(bytes);
            return Ok(());
        };
        // Saturating: sizes come from the network and from disk, and a sum
        // that wrapped would let a huge write through.
        let in_use = st.used.saturating_add(st.reserved);
        if in_use.saturating_add(bytes) > budget {
            let want = in_use.saturating_add(bytes) - budget;
            self.evict(&mut st, want);
        }
        let in_use = st.used.saturating_add(st.reserved);
        if in_use.saturating_add(bytes) > budget {
            return Err(Error::QuotaExceeded {
                needed: bytes,
                free: budget.saturating_sub(in_use),
                budget,
            });
        }
        st.reserved = st.reserved.saturating_add(bytes);
        Ok(())
    }

    pub(super) fn release(&self, bytes: u64) {
        let mut st = self.state();
        st.reserved = st.reserved.saturating_sub(bytes);
    }

    /// Deletes unreferenced, unpinned blobs, least recently used first, until
    /// `want` bytes are freed; deletes nothing if that many cannot be freed. Runs under the state lock, so
    /// no manifest can start referencing a blob while it is being removed.
    fn evict(&self, st: &mut State, want: u64) {
        let referenced = match self.referenced_digests() {
            Ok(r) => r,
            Err(e) => {
                // If a manifest cannot be read we cannot know what is safe to delete.
                log::warn!("not evicting: {e}");
                return;
            }
        };
        let mut candidates: Vec<(SystemTime, PathBuf, u64, String)> = Vec::new();
        let Ok(dir) = fs::read_dir(self.root.join("blobs")) else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // An interrupted download's `-partial` file counts against the
            // budget like a blob; unless a pull holds it now (pins its
            // digest), it is a cache like an unreferenced blob, and goes
            // with its sidecar.
            let (digest, partial) = match name.strip_suffix("-partial") {
                Some(blob) => (Digest::parse(blob), true),
                None => (Digest::parse(&name), false),
            };
            let Ok(digest) = digest else {
                continue;
            };
            if st.pinned.contains_key(&digest) || (!partial && referenced.contains(&digest)) {
                continue;
            }
            if let Ok(meta) = entry.metadata() {
                let when = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
                candidates.push((when, entry.path(), meta.len(), name));
            }
        }
        // Evicting is only worth it when it makes the write fit; otherwise the
        // write is refused and the cache of unreferenced blobs stays intact.
        let evictable = candidates
            .iter()
            .fold(0u64, |sum, c| sum.saturating_add(c.2));
        if evictable < want {
            return;
        }
        candidates.sort();
        let mut freed = 0u64;
        for (_, path, len, name) in candidates {
            if freed >= want {
                break;
            }
            if fs::remove_file(&path).is_ok() {
                log::info!(
                    "evicted unreferenced blob {name} ({len} bytes) to stay within the disk budget"
                );
                if name.ends_with("-partial") {
                    let mut sidecar = path.into_os_string();
                    sidecar.push(".json");
                    let _ = fs::remove_file(sidecar);
                }
                freed = freed.saturating_add(len);
                st.used = st.used.saturating_sub(len);
            }
        }
        if freed > 0 {
            self.sync_blobs_dir();
        }
    }

    /// Holds `bytes` of budget for a file made outside the blob writers
    /// (the quantizer's output in the temp area) until it is adopted.
    pub fn reservation(self: &Arc<Self>, bytes: u64) -> Result<Reservation> {
        self.reserve(bytes)?;
        Ok(Reservation {
            store: Arc::clone(self),
            bytes,
        })
    }

    /// Keeps these blobs from eviction until the guard drops.
    pub fn pin(self: &Arc<Self>, digests: Vec<Digest>) -> Pin {
        let mut st = self.state();
        for d in &digests {
            *st.pinned.entry(d.clone()).or_default() += 1;
        }
        Pin {
            store: Arc::clone(self),
            digests,
        }
    }
}

/// Budget held until dropped (see [`Store::reservation`]).
#[derive(Debug)]
pub struct Reservation {
    store: Arc<Store>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.store.release(self.bytes);
    }
}

/// Keeps blobs from eviction while a create uses them.
#[derive(Debug)]
pub struct Pin {
    store: Arc<Store>,
    digests: Vec<Digest>,
}

impl Drop for Pin {
    fn drop(&mut self) {
        let mut st = self.store.state();
        for d in &self.digests {
            if let Some(n) = st.pinned.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    st.pinned.remove(d);
                }
            }
        }
    }
}
