//! The store: owns every byte under `OLLAMA_MODELS`.
//!
//! Layout is Ollama's (`blobs/sha256-<hex>`, `manifests/<host>/<ns>/<model>/<tag>`),
//! so a store written by either program is read by the other. hearth adds a
//! `.hearth-tmp/` folder for writes in progress: files there are invisible to
//! both programs and become blobs or manifests only by an atomic rename.
//!
//! The store enforces the disk budget: every write reserves its bytes first,
//! evicting unreferenced blobs oldest-first when needed, and is refused
//! cleanly when the budget cannot be met. It knows nothing of HTTP; the api
//! module maps [`Error`] to status codes.

mod budget;
mod digest;
pub mod manifest;
mod ranged;
mod writer;

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use sha2::{Digest as _, Sha256};

pub use budget::{Pin, Reservation};
pub use digest::{Digest, InvalidDigest};
pub use manifest::{Layer, Manifest};
pub use ranged::RangedWriter;
pub use writer::BlobWriter;

/// The largest blob read whole as JSON or text (the manifest says its size).
const SMALL_BLOB: u64 = 16 << 20;

use crate::model::ModelName;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A filesystem operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What the store was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The write does not fit the disk budget even after evicting unreferenced blobs.
    #[error("not enough space in the model store: need {needed} bytes, {free} bytes free of a {budget}-byte budget")]
    QuotaExceeded {
        /// Bytes the write needs.
        needed: u64,
        /// Bytes left after eviction.
        free: u64,
        /// The configured budget.
        budget: u64,
    },
    /// The filesystem itself is full.
    #[error("no space left on device while writing to the model store")]
    DiskFull,
    /// The uploaded bytes hash to another digest.
    #[error("digest mismatch, expected \"{expected}\", got \"{got}\"")]
    DigestMismatch {
        /// The digest the client named.
        expected: String,
        /// The digest of what arrived.
        got: String,
    },
    /// No manifest for this name.
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    /// A manifest names a blob that is not there.
    #[error("blob {0} not found")]
    BlobNotFound(String),
    /// A manifest file that does not parse.
    #[error("manifest for {name} is corrupt: {reason}")]
    BadManifest {
        /// The model.
        name: String,
        /// The parse error.
        reason: String,
    },
}

type Result<T> = std::result::Result<T, Error>;

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    move |source| {
        if source.raw_os_error() == Some(28) {
            Error::DiskFull
        } else {
            Error::Io {
                context: context.into(),
                source,
            }
        }
    }
}

/// A model in the store, as `/api/tags` lists it.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The name, with on-disk spelling.
    pub name: ModelName,
    /// The parsed manifest.
    pub manifest: Manifest,
    /// sha256 of the manifest file bytes.
    pub digest: String,
    /// Manifest file mtime.
    pub modified: SystemTime,
}

/// The store. Cheap to share behind an `Arc`; all methods are blocking.
#[derive(Debug)]
pub struct Store {
    root: PathBuf,
    budget: Option<u64>,
    state: Mutex<State>,
    tmp_counter: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes of committed blobs.
    used: u64,
    /// Bytes promised to writes in progress.
    reserved: u64,
    /// Blobs a create in progress relies on: never evicted.
    pinned: HashMap<Digest, usize>,
}

impl Store {
    /// Opens (creating if needed) the store at `root`, cleans leftovers of
    /// interrupted writes and measures what the blobs use.
    pub fn open(root: &Path, budget: Option<u64>) -> Result<Store> {
        for dir in ["blobs", "manifests", ".hearth-tmp"] {
            fs::create_dir_all(root.join(dir))
                .map_err(io_err(format!("create {}", root.join(dir).display())))?;
        }
        let tmp = root.join(".hearth-tmp");
        // Everything in the temp area belongs to a write that never finished.
        for entry in fs::read_dir(&tmp)
            .map_err(io_err("read temp dir"))?
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        let mut used = 0;
        let blobs = root.join("blobs");
        for entry in fs::read_dir(&blobs)
            .map_err(io_err("read blobs dir"))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mut path = entry.path();
            // Old Ollama versions wrote `sha256:<hex>`; Ollama renames them at start, so do we.
            if let Some(hex) = name.strip_prefix("sha256:") {
                let renamed = blobs.join(format!("sha256-{hex}"));
                if fs::rename(&path, &renamed).is_ok() {
                    path = renamed;
                }
            }
            if let Ok(meta) = fs::metadata(&path) {
                if meta.is_file() {
                    used += meta.len();
                }
            }
        }
        let store = Store {
            root: root.to_path_buf(),
            budget,
            state: Mutex::new(State {
                used,
                ..State::default()
            }),
            tmp_counter: AtomicU64::new(0),
        };
        Ok(store)
    }

    /// Ollama's start-up housekeeping: deletes blob files older than `grace`
    /// whose name is not a digest or that no manifest references, then empty
    /// manifest folders. Does nothing if any manifest fails to parse, since
    /// then nothing is known to be unreferenced.
    pub fn prune(&self, grace: std::time::Duration) -> Result<usize> {
        let mut st = self.state();
        let referenced = self.referenced_digests()?;
        let cutoff = SystemTime::now()
            .checked_sub(grace)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut removed = 0;
        for entry in fs::read_dir(self.root.join("blobs"))
            .map_err(io_err("read blobs dir"))?
            .flatten()
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() || meta.modified().map_or(true, |m| m > cutoff) {
                continue;
            }
            let keep = Digest::parse(&name)
                .is_ok_and(|d| referenced.contains(&d) || st.pinned.contains_key(&d));
            if !keep && fs::remove_file(entry.path()).is_ok() {
                log::info!("pruned unused blob {name}");
                st.used = st.used.saturating_sub(meta.len());
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The store root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain counters behind, which stay usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a blob lives.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.file_name())
    }

    /// Whether a blob is present.
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Reads a small JSON blob (config, params); `None` if absent, corrupt
    /// or larger than 16 MiB (these are a few hundred bytes).
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, layer: &Layer) -> Option<T> {
        if layer.size > SMALL_BLOB {
            return None;
        }
        let bytes = fs::read(self.blob_path(&layer.digest)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Reads a small text blob (template, system, license); `None` if
    /// absent, not UTF-8 or larger than 16 MiB.
    pub fn read_text(&self, layer: &Layer) -> Option<String> {
        if layer.size > SMALL_BLOB {
            return None;
        }
        fs::read_to_string(self.blob_path(&layer.digest)).ok()
    }

    /// Marks a blob as recently used, so eviction takes it last.
    pub fn touch_blob(&self, digest: &Digest) {
        if let Ok(f) = File::options().append(true).open(self.blob_path(digest)) {
            let _ = f.set_modified(SystemTime::now());
        }
    }

    /// A fresh path in the store's temp area, for tools that write whole
    /// files themselves (the quantizer); hand the file to [`Store::adopt`].
    pub fn temp_path(&self, what: &str) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join(".hearth-tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Turns a finished file in the temp area into a blob: reserves its size,
    /// hashes it, and renames it into place. The file is gone afterwards,
    /// whether this succeeds or not.
    pub fn adopt(self: &Arc<Self>, path: &Path) -> Result<(Digest, u64, bool)> {
        let cleanup = |e: Error| {
            let _ = fs::remove_file(path);
            e
        };
        let size = fs::metadata(path)
            .map_err(io_err("stat adopted file"))
            .map_err(cleanup)?
            .len();
        self.reserve(size).map_err(cleanup)?;
        let result = (|| {
            let mut f = File::open(path).map_err(io_err("open adopted file"))?;
            let mut hasher = Sha256::new();
            io::copy(&mut f, &mut hasher).map_err(io_err("hash adopted file"))?;
            // The bytes reach the disk before the name does, as for every
            // other blob: a crash must not leave a blob of zeros.
            f.sync_all().map_err(io_err("sync adopted file"))?;
            let digest = Digest::from_hasher(hasher);
            let target = self.blob_path(&digest);
            let mut st = self.state();
            if target.is_file() {
                return Ok((digest, size, false));
            }
            fs::rename(path, &target).map_err(io_err("rename blob into place"))?;
            self.sync_blobs_dir();
            st.used = st.used.saturating_add(size);
            Ok((digest, size, true))
        })();
        self.release(size);
        let _ = fs::remove_file(path);
        if let Ok((d, _, false)) = &result {
            self.touch_blob(d);
        }
        result
    }

    /// Stores a small blob from memory (templates, params, configs).
    pub fn put_bytes(self: &Arc<Self>, bytes: &[u8]) -> Result<(Digest, u64)> {
        let digest = Digest::of(bytes);
        if self.has_blob(&digest) {
            self.touch_blob(&digest);
            return Ok((digest, bytes.len() as u64));
        }
        let mut w = self.blob_writer(Some(digest), Some(bytes.len() as u64))?;
        w.write(bytes)?;
        let (digest, size, _) = w.finish()?;
        Ok((digest, size))
    }

    fn manifests_dir(&self) -> PathBuf {
        self.root.join("manifests")
    }

    /// Finds the manifest for a name, matching each part case-insensitively
    /// and returning the on-disk spelling.
    pub fn resolve(&self, name: &ModelName) -> Option<ModelName> {
        let mut dir = self.manifests_dir();
        let mut parts: Vec<String> = Vec::with_capacity(4);
        for (i, want) in name.components().iter().enumerate() {
            let exact = dir.join(want);
            let found = if exact.exists() {
                Some(want.to_string())
            } else {
                fs::read_dir(&dir).ok()?.flatten().find_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    n.eq_ignore_ascii_case(want).then_some(n)
                })
            }?;
            dir = dir.join(&found);
            parts.push(found);
            if i == 3 && !dir.is_file() {
                return None;
            }
        }
        let [host, namespace, model, tag]: [String; 4] = parts.try_into().ok()?;
        Some(ModelName {
            host,
            namespace,
            model,
            tag,
        })
    }

    fn manifest_path(&self, name: &ModelName) -> PathBuf {
        let mut p = self.manifests_dir();
        for c in name.components() {
            p.push(c);
        }
        p
    }

    /// Reads a model's manifest. The name is resolved case-insensitively.
    pub fn entry(&self, name: &ModelName) -> Result<Entry> {
        let resolved = self
            .resolve(name)
            .ok_or_else(|| Error::ModelNotFound(name.display_short()))?;
        self.read_entry(resolved)
    }

    /// A model's manifest file exactly as stored (for serving it to other
    /// boxes, whose digest must match), with the resolved name.
    pub fn manifest_bytes(&self, name: &ModelName) -> Result<(ModelName, Vec<u8>)> {
        let resolved = self
            .resolve(name)
            .ok_or_else(|| Error::ModelNotFound(name.display_short()))?;
        let path = self.manifest_path(&resolved);
        let bytes = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
        Ok((resolved, bytes))
    }

    fn read_entry(&self, name: ModelName) -> Result<Entry> {
        let path = self.manifest_path(&name);
        let bytes = fs::read(&path).map_err(io_err(format!("read {}", path.display())))?;
        let manifest: Manifest =
            serde_json::from_slice(&bytes).map_err(|e| Error::BadManifest {
                name: name.display_short(),
                reason: e.to_string(),
            })?;
        let modified = fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or(SystemTime::UNIX_EPOCH);
        Ok(Entry {
            digest: Digest::of(&bytes).hex().to_string(),
            name,
            manifest,
            modified,
        })
    }

    /// Every model whose manifest parses; corrupt ones are logged and skipped.
    pub fn list(&self) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        for name in self.manifest_names()? {
            match self.read_entry(name) {
                Ok(e) => out.push(e),
                Err(e) => log::warn!("skipping model: {e}"),
            }
        }
        out.sort_by_key(|e| std::cmp::Reverse(e.modified));
        Ok(out)
    }

    /// Names of all manifest files exactly four levels below `manifests/`.
    fn manifest_names(&self) -> Result<Vec<ModelName>> {
        let mut names = Vec::new();
        let root = self.manifests_dir();
        let subdirs = |p: &Path| -> Vec<(String, PathBuf)> {
            fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
                        .collect()
                })
                .unwrap_or_default()
        };
        for (host, hp) in subdirs(&root) {
            for (ns, np) in subdirs(&hp) {
                for (model, mp) in subdirs(&np) {
                    for (tag, tp) in subdirs(&mp) {
                        if !tp.is_file() {
                            continue;
                        }
                        let raw = format!("{host}/{ns}/{model}:{tag}");
                        match ModelName::parse(&raw) {
                            Ok(n) if n.components() == [&host, &ns, &model, &tag] => names.push(n),
                            _ => log::warn!(
                                "ignoring manifest with an invalid name: {}",
                                tp.display()
                            ),
                        }
                    }
                }
            }
        }
        Ok(names)
    }

    /// Every digest any manifest references (hex only). Fails if any manifest
    /// cannot be read, because then no blob is known to be safe to delete.
    fn referenced_digests(&self) -> Result<HashSet<Digest>> {
        let mut set = HashSet::new();
        for name in self.manifest_names()? {
            let e = self.read_entry(name)?;
            set.extend(e.manifest.digests().cloned());
        }
        Ok(set)
    }

    /// Writes a manifest atomically (temp file, fsync, rename), replacing any
    /// previous one, then deletes blobs that only the previous one used.
    pub fn write_manifest(&self, name: &ModelName, manifest: &Manifest) -> Result<()> {
        let mut bytes = serde_json::to_vec(manifest).map_err(|e| Error::BadManifest {
            name: name.display_short(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        self.write_manifest_raw(name, &bytes)
    }

    /// [`Store::write_manifest`] for bytes kept exactly as given (a pulled
    /// manifest, whose digest must stay the registry's). They must parse and
    /// every blob they name must be present.
    pub fn write_manifest_raw(&self, name: &ModelName, bytes: &[u8]) -> Result<()> {
        let manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| Error::BadManifest {
            name: name.display_short(),
            reason: e.to_string(),
        })?;
        for d in manifest.digests() {
            if !self.has_blob(d) {
                return Err(Error::BlobNotFound(d.to_string()));
            }
        }
        let old = self.resolve(name).and_then(|n| self.read_entry(n).ok());
        let target = match &old {
            Some(e) => self.manifest_path(&e.name),
            None => self.manifest_path(name),
        };
        let _st = self.state();
        self.write_file_atomic(&target, bytes)?;
        if let Some(old) = old {
            let keep: HashSet<&Digest> = manifest.digests().collect();
            let stale: Vec<Digest> = old
                .manifest
                .digests()
                .filter(|d| !keep.contains(d))
                .cloned()
                .collect();
            drop(_st);
            self.remove_unreferenced(&stale);
        }
        Ok(())
    }

    fn write_file_atomic(&self, target: &Path, bytes: &[u8]) -> Result<()> {
        let parent = target.parent().ok_or_else(|| Error::Io {
            context: format!("manifest path {} has no parent", target.display()),
            source: io::Error::from(io::ErrorKind::InvalidInput),
        })?;
        self.create_manifest_dirs(parent)?;
        let tmp = self.temp_path("manifest");
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, target)?;
            // The rename is durable only once the directory entry is.
            sync_dir(parent)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(io_err(format!("write {}", target.display())))
    }

    /// Creates `dir` and the folders above it up to `manifests/`, each made
    /// durable in its parent: a manifest renamed into a folder whose own
    /// entry is lost in a crash would be lost with it.
    fn create_manifest_dirs(&self, dir: &Path) -> Result<()> {
        let root = self.manifests_dir();
        let mut missing = Vec::new();
        let mut d = dir;
        while d != root && !d.is_dir() {
            missing.push(d);
            d = match d.parent() {
                Some(p) => p,
                None => break,
            };
        }
        fs::create_dir_all(dir).map_err(io_err("create manifest dir"))?;
        for made in missing.iter().rev() {
            if let Some(parent) = made.parent() {
                sync_dir(parent).map_err(io_err(format!("sync {}", parent.display())))?;
            }
        }
        Ok(())
    }

    /// Makes what was renamed into or removed from `blobs/` durable (best
    /// effort: a blob's bytes were synced before its rename, and one that
    /// comes back after a crash is only unreferenced, which pruning
    /// removes).
    pub(super) fn sync_blobs_dir(&self) {
        if let Err(e) = sync_dir(&self.root.join("blobs")) {
            log::debug!("sync blobs dir: {e}");
        }
    }

    /// Copies a manifest (blobs are shared). Same name is a no-op.
    pub fn copy(&self, src: &ModelName, dst: &ModelName) -> Result<()> {
        let entry = self.entry(src)?;
        let target = match self.resolve(dst) {
            Some(existing) => self.manifest_path(&existing),
            None => self.manifest_path(dst),
        };
        if target == self.manifest_path(&entry.name) {
            return Ok(());
        }
        let bytes = fs::read(self.manifest_path(&entry.name)).map_err(io_err("read manifest"))?;
        let _st = self.state();
        self.write_file_atomic(&target, &bytes)
    }

    /// Removes a model's manifest, prunes empty folders and deletes the blobs
    /// no other manifest uses.
    pub fn delete(&self, name: &ModelName) -> Result<()> {
        let entry = self.entry(name)?;
        let path = self.manifest_path(&entry.name);
        {
            let _st = self.state();
            fs::remove_file(&path).map_err(io_err(format!("remove {}", path.display())))?;
        }
        // The delete is durable once the folder that held the manifest is
        // (and each emptied folder's parent).
        let mut dir = path.parent().map(Path::to_path_buf);
        while let Some(d) = dir {
            if d == self.manifests_dir() || fs::remove_dir(&d).is_err() {
                if let Err(e) = sync_dir(&d) {
                    log::warn!("sync {}: {e}", d.display());
                }
                break;
            }
            dir = d.parent().map(Path::to_path_buf);
        }
        let digests: Vec<Digest> = entry.manifest.digests().cloned().collect();
        self.remove_unreferenced(&digests);
        Ok(())
    }

    /// Deletes those of `digests` that no manifest references and no create pins.
    pub fn remove_unreferenced(&self, digests: &[Digest]) {
        let mut st = self.state();
        let referenced = match self.referenced_digests() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("not removing blobs: {e}");
                return;
            }
        };
        let mut removed = false;
        for digest in digests {
            if referenced.contains(digest) || st.pinned.contains_key(digest) {
                continue;
            }
            let path = self.blob_path(digest);
            let len = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if fs::remove_file(&path).is_ok() {
                st.used = st.used.saturating_sub(len);
                removed = true;
            }
        }
        if removed {
            self.sync_blobs_dir();
        }
    }
}

/// fsync of a directory: makes the entries created, renamed or removed in
/// it durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(test)]
    tests::SYNCED.with(|s| s.borrow_mut().push(dir.to_path_buf()));
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    thread_local! {
        /// The directories this thread fsynced, in order (see `sync_dir`).
        pub(super) static SYNCED: std::cell::RefCell<Vec<PathBuf>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }

    /// A manifest of one weights layer, `weights` of `size` bytes, with an
    /// empty config blob stored for it.
    fn model_of(s: &Arc<Store>, weights: &Digest, size: u64) -> Manifest {
        let config = s.put_bytes(b"{}").expect("config");
        let layer = |d: &Digest, size| Layer {
            media_type: manifest::MEDIA_MODEL.into(),
            digest: d.clone(),
            size,
            from: None,
            name: None,
        };
        Manifest::new(layer(&config.0, 2), vec![layer(weights, size)])
    }

    fn synced() -> Vec<PathBuf> {
        SYNCED.with(|s| std::mem::take(&mut *s.borrow_mut()))
    }

    fn store(budget: Option<u64>) -> (tempfile::TempDir, Arc<Store>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), budget).expect("open");
        (dir, Arc::new(store))
    }

    #[test]
    fn blob_roundtrip_and_mismatch() {
        let (_d, s) = store(None);
        let (digest, size) = s.put_bytes(b"hello").expect("put");
        assert_eq!(size, 5);
        assert!(s.has_blob(&digest));
        let mut w = s
            .blob_writer(Some(Digest::of(b"other")), None)
            .expect("writer");
        w.write(b"hello!").expect("write");
        assert!(matches!(w.finish(), Err(Error::DigestMismatch { .. })));
        let tmp_left = fs::read_dir(s.root().join(".hearth-tmp"))
            .expect("tmp")
            .count();
        assert_eq!(tmp_left, 0);
    }

    #[test]
    fn budget_evicts_unreferenced_then_refuses() {
        let (_d, s) = store(Some(100));
        let (kept, _) = s.put_bytes(&[1u8; 40]).expect("put kept");
        let m = model_of(&s, &kept, 40);
        let name = ModelName::parse("m").expect("name");
        s.write_manifest(&name, &m).expect("manifest");
        let (loose, _) = s.put_bytes(&[2u8; 50]).expect("put loose");
        // 92 used; 50 more only fit by evicting the loose blob.
        let (newer, _) = s.put_bytes(&[3u8; 50]).expect("evicting put");
        assert!(!s.has_blob(&loose));
        assert!(s.has_blob(&kept) && s.has_blob(&newer));
        // Now 92 used again; even evicting `newer`, 70 cannot fit, so nothing is evicted.
        let err = s.put_bytes(&[4u8; 70]).expect_err("over budget");
        assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
        assert!(s.has_blob(&kept) && s.has_blob(&newer));
        // Start-up pruning removes what no manifest references.
        assert_eq!(s.prune(std::time::Duration::ZERO).expect("prune"), 1);
        assert!(s.has_blob(&kept) && !s.has_blob(&newer));
    }

    #[test]
    fn stale_partial_downloads_are_evicted_but_not_ones_in_progress() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = dir.path().join("blobs");
        fs::create_dir_all(&blobs).expect("blobs");
        let stale = Digest::of(b"stale");
        let busy = Digest::of(b"busy");
        let partial = |d: &Digest| blobs.join(format!("{}-partial", d.file_name()));
        fs::write(partial(&stale), [0u8; 40]).expect("stale partial");
        fs::write(
            blobs.join(format!("{}-partial.json", stale.file_name())),
            b"{}",
        )
        .expect("sidecar");
        fs::write(partial(&busy), [0u8; 40]).expect("busy partial");
        // Both partial files (and the sidecar) count: 82 of 100.
        let s = Arc::new(Store::open(dir.path(), Some(100)).expect("open"));
        let _pull = s.pin(vec![busy.clone()]);
        // 30 more fit only without the stale one; the one a pull holds stays.
        s.put_bytes(&[5u8; 30])
            .expect("put after evicting the stale partial");
        assert!(!partial(&stale).exists());
        assert!(!blobs
            .join(format!("{}-partial.json", stale.file_name()))
            .exists());
        assert!(partial(&busy).exists());
        // 70 more would need the partial a pull holds: refused.
        let err = s.put_bytes(&[6u8; 70]).expect_err("over budget");
        assert!(matches!(err, Error::QuotaExceeded { .. }), "{err}");
        assert!(partial(&busy).exists());
    }

    /// Every directory entry a manifest write, a delete or a blob removal
    /// changes is fsynced, up to the store's own folders: a crash after the
    /// call cannot bring back a deleted model or lose a written one.
    #[test]
    fn new_folders_deletes_and_removals_are_made_durable() {
        let (_d, s) = store(None);
        let (blob, _) = s.put_bytes(b"weights").expect("put");
        let m = model_of(&s, &blob, 7);
        let name = ModelName::parse("example.com/team/m:v1").expect("name");
        synced();
        s.write_manifest(&name, &m).expect("manifest");
        let manifests = s.manifests_dir();
        let (host, team, model) = (
            manifests.join("example.com"),
            manifests.join("example.com/team"),
            manifests.join("example.com/team/m"),
        );
        // Each new folder in its parent, then the renamed manifest in its own.
        assert_eq!(
            synced(),
            [manifests.clone(), host.clone(), team.clone(), model.clone()]
        );
        s.delete(&name).expect("delete");
        // The emptied folders go, and the first parent left is synced; then
        // the blobs folder, for the blobs no manifest uses any more.
        assert_eq!(synced(), [manifests.clone(), s.root().join("blobs")]);
        assert!(!host.exists() && !s.has_blob(&blob));
    }
}
