//! Pulling a model from a registry (Docker Registry HTTP API v2, as Ollama
//! speaks it): fetch the manifest, download the missing blobs into the
//! store, verify them and write the manifest bytes exactly as received.
//!
//! This module owns the registry client side: name and scheme rules, the
//! HTTP requests (blocking `ureq`, run on a blocking thread by the caller),
//! resuming interrupted downloads with `Range`, and progress reporting
//! through a callback. Blobs up to `Config::pull_part_bytes` download as one
//! stream appended to the partial file; larger ones are split into parts
//! (about 16, as Ollama does) that a few threads fetch at once with ranged
//! GETs, each written at its offset, with per-part progress kept in a
//! sidecar so a later pull fetches only what is missing. Either way the
//! whole blob is hashed before it becomes visible. It leaves HTTP serving and status codes to `api` and
//! `error.rs`, and every byte on disk to the store (`partial_writer`,
//! `write_manifest_raw`). A registry that asks for a token gets one through
//! `crate::registry::session::Session`.

use std::collections::HashMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::model::{InvalidName, ModelName};
use crate::progress::Progress;
use crate::registry::auth;
use crate::registry::session::{Failure, Session};
use crate::store::{self, Digest, Manifest, RangedWriter, Store};

/// Connecting to a registry is quick or not at all; an unreachable one
/// (the default registry from an offline box) must fail fast.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer that sends nothing for this long is given up (and resumed
/// by the next pull), as Ollama restarts a stalled part after 30 s.
const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest manifest accepted; real ones are a few kilobytes.
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// How often a layer's progress line is sent while it downloads.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);
/// A parted blob is cut into about this many parts (Ollama's count), each
/// at least `Config::pull_part_bytes` and at most ten times that.
const PARTS_PER_BLOB: u64 = 16;
/// The largest layer a manifest may claim (4 TiB): past it a size is a lie,
/// and trusting it would size allocations and files by it.
const MAX_BLOB_BYTES: u64 = 4 << 40;
/// The most parts one blob is cut into, whatever its size and the part
/// setting (the part table is allocated up front).
const MAX_PARTS: u64 = 4096;
/// Parts of one blob downloaded at once. Fewer than Ollama's 16: an edge
/// box's link and disk gain little past a few streams.
const PART_WORKERS: usize = 4;
/// Tries per part (the first and the retries) before the pull gives up;
/// what arrived is kept for the next pull.
const PART_ATTEMPTS: u32 = 4;
/// The wait before the first retry of a part, doubled for each next one.
const PART_BACKOFF: Duration = Duration::from_millis(500);

/// What can go wrong in a pull.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name does not parse.
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// `http://` named without `insecure`.
    #[error("insecure protocol http")]
    InsecureProtocol,
    /// The registry has no such manifest.
    #[error("pull model manifest: file does not exist")]
    ManifestNotFound,
    /// The manifest could not be fetched or does not parse.
    #[error("pull model manifest: {0}")]
    Manifest(String),
    /// The registry refused us, or the token exchange failed, while the
    /// manifest was fetched (Ollama's words: `pull model manifest:
    /// unauthorized: access denied`).
    #[error("pull model manifest: {0}")]
    ManifestAuth(auth::Error),
    /// A blob download failed; what arrived is kept for the next pull.
    #[error("download {digest}: {reason}")]
    Download {
        /// The blob.
        digest: String,
        /// What went wrong.
        reason: String,
    },
    /// The downloaded bytes hash to another digest; they were deleted.
    #[error("digest mismatch, file must be downloaded again: want {want}, got {got}")]
    DigestMismatch {
        /// The digest the manifest names.
        want: String,
        /// The digest of what arrived.
        got: String,
    },
    /// From the store (budget, disk).
    #[error(transparent)]
    Store(store::Error),
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::DigestMismatch { expected, got } => Error::DigestMismatch {
                want: expected,
                got,
            },
            other => Error::Store(other),
        }
    }
}

/// A pull whose manifest is fetched and whose disk needs are checked: what
/// can fail before progress starts streaming has failed by now.
#[derive(Debug)]
pub struct PullPlan {
    name: ModelName,
    /// `<scheme>://<host>/v2/<namespace>/<model>`.
    repo_url: String,
    session: Session,
    /// The manifest exactly as the registry sent it.
    manifest_bytes: Vec<u8>,
    /// The smallest part of a parted download; smaller blobs are one stream.
    part_bytes: u64,
    /// Every blob to have, layers first and the config last, as Ollama orders them.
    blobs: Vec<(Digest, u64)>,
    /// Remove the blobs an older manifest of the name used and the new one
    /// does not (unless `OLLAMA_NOPRUNE`), as Ollama does after a pull.
    prune: bool,
}

impl PullPlan {
    /// Parses the name, fetches the manifest and checks that the missing
    /// blobs fit the disk budget. The config names the key that signs
    /// token requests, should the registry ask for one, and the part size.
    pub fn new(
        store: &Store,
        raw: &str,
        insecure: bool,
        config: &Config,
    ) -> Result<PullPlan, Error> {
        let raw = raw.trim();
        if raw.starts_with("http://") && !insecure {
            return Err(Error::InsecureProtocol);
        }
        let name = ModelName::parse(raw)?;
        let scheme = if insecure { "http" } else { "https" };
        let repo_url = format!(
            "{scheme}://{}/v2/{}/{}",
            name.host, name.namespace, name.model
        );
        let agent = crate::tls::agent_builder(config.tls_ca.as_deref())
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .user_agent(&format!("hearth/{}", env!("CARGO_PKG_VERSION")))
            // Redirects are followed by `Session::call`, which checks
            // where they go.
            .redirects(0)
            .build();
        let session = Session::new(agent, config.key_dir.clone(), name.host.clone())
            .with_key(config.registry_key(&name.host));
        let manifest_bytes =
            fetch_manifest(&session, &format!("{repo_url}/manifests/{}", name.tag))?;
        let manifest: Manifest = serde_json::from_slice(&manifest_bytes)
            .map_err(|e| Error::Manifest(format!("invalid manifest: {e}")))?;
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config))
        {
            if layer.size > MAX_BLOB_BYTES {
                return Err(Error::Manifest(format!(
                    "layer {} claims {} bytes, more than any model file ({MAX_BLOB_BYTES})",
                    layer.digest, layer.size
                )));
            }
            if !blobs.iter().any(|(d, _)| *d == layer.digest) {
                blobs.push((layer.digest.clone(), layer.size));
            }
        }
        // Refusing up front beats failing after gigabytes: count what is
        // still to download, less what interrupted pulls already hold.
        let missing: u64 = blobs
            .iter()
            .filter(|(d, _)| !store.has_blob(d))
            .map(|(d, size)| size.saturating_sub(partial_len(store, d)))
            .fold(0, u64::saturating_add);
        store.ensure_room(missing)?;
        // Without a budget the file system is the limit: refuse up front
        // what it cannot hold.
        if let Some(free) = store.free_space() {
            if missing > free {
                return Err(Error::Store(store::Error::DiskFull));
            }
        }
        Ok(PullPlan {
            name,
            repo_url,
            session,
            manifest_bytes,
            part_bytes: config.pull_part_bytes.max(1),
            blobs,
            prune: !config.noprune,
        })
    }

    /// The model being pulled.
    pub fn name(&self) -> &ModelName {
        &self.name
    }

    /// Downloads what is missing and writes the manifest, reporting
    /// Ollama's status lines through `progress`.
    pub fn run(self, store: &Arc<Store>, progress: &mut dyn FnMut(Progress)) -> Result<(), Error> {
        progress(Progress::status("pulling manifest"));
        // Blobs fetched early must not be evicted by another write before
        // the manifest that references them exists.
        let _pin = store.pin(self.blobs.iter().map(|(d, _)| d.clone()).collect());
        for (digest, size) in &self.blobs {
            let line = |completed: u64| Progress {
                status: format!("pulling {}", &digest.hex()[..12]),
                digest: Some(digest.to_string()),
                total: Some(*size),
                completed: (completed > 0).then_some(completed),
            };
            // Two pulls of one blob must not append to one partial file at once;
            // the second waits and then finds the blob in place.
            let lock = digest_lock(digest);
            let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            if store.has_blob(digest) {
                store.touch_blob(digest);
                progress(line(*size));
                continue;
            }
            self.download(store, digest, *size, &mut |done| progress(line(done)))?;
        }
        progress(Progress::status("verifying sha256 digest"));
        // The blobs the name's previous manifest used and this one does not.
        let replaced: Vec<Digest> = store
            .entry(&self.name)
            .map(|old| {
                old.manifest
                    .digests()
                    .filter(|d| !self.blobs.iter().any(|(b, _)| b == *d))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        progress(Progress::status("writing manifest"));
        store.write_manifest_raw(&self.name, &self.manifest_bytes)?;
        if self.prune && !replaced.is_empty() {
            progress(Progress::status("removing unused layers"));
            store.remove_unreferenced(&replaced);
        }
        progress(Progress::status("success"));
        Ok(())
    }

    /// Downloads one blob, in parts when it is large (or an earlier pull
    /// began it in parts), else as one stream.
    fn download(
        &self,
        store: &Arc<Store>,
        digest: &Digest,
        size: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        if size > self.part_bytes || store.download_progress(digest).is_some() {
            match self.download_parts(store, digest, size, progress)? {
                Parted::Done => return Ok(()),
                Parted::RangesIgnored => {
                    log::info!("the registry ignores ranges; downloading {digest} as one stream");
                }
            }
        }
        self.download_stream(store, digest, size, progress)
    }

    /// Downloads one blob into its partial file, resuming from what is
    /// there, and moves it into place once its digest is verified.
    fn download_stream(
        &self,
        store: &Arc<Store>,
        digest: &Digest,
        size: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        let fail = |reason: String| Error::Download {
            digest: digest.to_string(),
            reason,
        };
        let partial = store.partial_path(digest);
        let mut have = partial_len(store, digest);
        if have > size {
            // Longer than the blob can be: not a prefix of it.
            remove_partial(store, digest)?;
            have = 0;
        }
        let mut response = None;
        if have < size {
            let url = format!("{}/blobs/{digest}", self.repo_url);
            let resp = match self.session.call(&|agent| {
                let req = agent.get(&url);
                if have > 0 {
                    req.set("Range", &format!("bytes={have}-"))
                } else {
                    req
                }
            }) {
                Ok(r) => r,
                Err(Failure::Status { code: 404, .. }) => {
                    return Err(fail("the registry does not have this blob".into()))
                }
                Err(e) => return Err(fail(e.to_string())),
            };
            let range_ok = resp
                .header("Content-Range")
                .is_some_and(|r| r.starts_with(&format!("bytes {have}-")));
            if have > 0 && resp.status() == 206 && !range_ok {
                return Err(fail(
                    "the registry answered another range than asked".into(),
                ));
            }
            if have > 0 && resp.status() != 206 {
                // The registry ignored the range and sends the whole blob.
                log::info!("registry ignored the range for {digest}; downloading it again");
                remove_partial(store, digest)?;
            } else if have > 0 {
                log::info!("resuming {} at byte {have} of {size}", partial.display());
            }
            response = Some(resp);
        }
        let mut writer = store.partial_writer(digest.clone(), size)?;
        progress(writer.written());
        if let Some(resp) = response {
            let mut reader = resp.into_reader();
            let mut buf = vec![0u8; 1 << 20];
            let mut last = Instant::now();
            loop {
                let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
                if n == 0 {
                    break;
                }
                writer.write(&buf[..n])?;
                if last.elapsed() >= PROGRESS_EVERY {
                    progress(writer.written());
                    last = Instant::now();
                }
                // More than the manifest's size cannot be the blob; stop
                // reading and let the digest check reject it.
                if writer.written() > size {
                    break;
                }
            }
        }
        let written = writer.written();
        if written < size {
            return Err(fail(format!(
                "the connection closed after {written} of {size} bytes; pull again to resume"
            )));
        }
        progress(written);
        writer.finish()?;
        Ok(())
    }
}

/// How a parted download ended, when it did not fail.
enum Parted {
    /// The blob is verified and in place.
    Done,
    /// The registry answers ranged GETs with the whole blob; the partial
    /// file is gone and the blob must come as one stream.
    RangesIgnored,
}

/// Why one ranged GET of a part stopped.
enum PartError {
    /// Worth another try: a dropped connection, a timeout, a 5xx.
    Retry(String),
    /// Not worth another try; the pull fails with this.
    Fatal(Error),
    /// The registry sent the whole blob instead of the range.
    RangesIgnored,
    /// Another part failed, so this one stopped.
    Aborted,
}

/// The sidecar of a parted download: the layout, and how many bytes of
/// each part are in the partial file. hearth's own format.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct PartsRecord {
    size: u64,
    part_size: u64,
    completed: Vec<u64>,
}

impl PartsRecord {
    fn part(&self, i: usize) -> (u64, u64) {
        let start = i as u64 * self.part_size;
        (start, self.part_size.min(self.size - start))
    }
}

impl PullPlan {
    /// Downloads a blob in parts, several at once, each written at its
    /// offset in the sized partial file; resumes what an earlier pull left
    /// (a sidecar, or a prefix from a one-stream pull); verifies the whole
    /// file before it becomes the blob.
    fn download_parts(
        &self,
        store: &Arc<Store>,
        digest: &Digest,
        size: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<Parted, Error> {
        let fail = |reason: String| Error::Download {
            digest: digest.to_string(),
            reason,
        };
        let mut have = partial_len(store, digest);
        if have > size {
            remove_partial(store, digest)?;
            have = 0;
        }
        let saved: Option<PartsRecord> = store
            .download_progress(digest)
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(|r: &PartsRecord| {
                r.size == size
                    && r.part_size > 0
                    && r.completed.len() as u64 == size.div_ceil(r.part_size)
            });
        let mut record = match saved {
            Some(r) => r,
            None => {
                // A file without a sidecar is a prefix (a one-stream pull's):
                // every part is complete as far as the prefix reaches.
                let part_size = (size / PARTS_PER_BLOB)
                    .clamp(self.part_bytes, self.part_bytes.saturating_mul(10))
                    .max(size.div_ceil(MAX_PARTS))
                    .max(1);
                let parts = size.div_ceil(part_size) as usize;
                PartsRecord {
                    size,
                    part_size,
                    completed: vec![u64::MAX; parts],
                }
            }
        };
        for i in 0..record.completed.len() {
            let (start, len) = record.part(i);
            let mut done = record.completed[i].min(len);
            // A file shorter than the blob was never sized: past its end
            // nothing is real, whatever a sidecar says.
            if have < size {
                done = done.min(have.saturating_sub(start));
            }
            record.completed[i] = done;
        }
        let encoded = |r: &PartsRecord| serde_json::to_vec(r).unwrap_or_default();
        let writer = store.ranged_writer(digest.clone(), size, &encoded(&record))?;
        let done: Vec<AtomicU64> = record
            .completed
            .iter()
            .map(|&c| AtomicU64::new(c))
            .collect();
        let todo: Vec<usize> = (0..done.len())
            .filter(|&i| record.completed[i] < record.part(i).1)
            .collect();
        let resumed: u64 = record.completed.iter().sum();
        if resumed > 0 {
            log::info!("resuming {digest} in parts with {resumed} of {size} bytes");
        }
        progress(resumed);

        let url = format!("{}/blobs/{digest}", self.repo_url);
        // The workers need the layout while the main thread updates the
        // record's progress.
        let layout = PartsRecord {
            completed: Vec::new(),
            ..record
        };
        let next = AtomicUsize::new(0);
        let abort = AtomicBool::new(false);
        let failure: Mutex<Option<PartError>> = Mutex::new(None);
        std::thread::scope(|s| {
            let workers: Vec<_> = (0..PART_WORKERS.min(todo.len()))
                .map(|_| {
                    s.spawn(|| loop {
                        if abort.load(Ordering::Relaxed) {
                            break;
                        }
                        let Some(&i) = todo.get(next.fetch_add(1, Ordering::Relaxed)) else {
                            break;
                        };
                        let (start, len) = layout.part(i);
                        let part = Part {
                            digest,
                            url: &url,
                            writer: &writer,
                            start,
                            len,
                            done: &done[i],
                            abort: &abort,
                        };
                        if let Err(e) = self.fetch_part(&part) {
                            abort.store(true, Ordering::Relaxed);
                            let mut f = failure.lock().unwrap_or_else(|e| e.into_inner());
                            if f.is_none() && !matches!(e, PartError::Aborted) {
                                *f = Some(e);
                            }
                            break;
                        }
                    })
                })
                .collect();
            // Progress is saved before it is reported, so every reported
            // byte is one a later pull resumes after.
            let mut saved_sum = resumed;
            loop {
                let finished = workers.iter().all(|w| w.is_finished());
                let now: Vec<u64> = done.iter().map(|d| d.load(Ordering::Relaxed)).collect();
                let sum: u64 = now.iter().sum();
                if sum != saved_sum {
                    record.completed = now;
                    if let Err(e) = writer.save_progress(&encoded(&record)) {
                        log::warn!("cannot save the progress of {digest}: {e}");
                    }
                    saved_sum = sum;
                    progress(sum);
                }
                if finished {
                    break;
                }
                std::thread::sleep(PROGRESS_EVERY);
            }
        });
        match failure.into_inner().unwrap_or_else(|e| e.into_inner()) {
            None => {}
            Some(PartError::RangesIgnored) => {
                writer.discard();
                return Ok(Parted::RangesIgnored);
            }
            Some(PartError::Fatal(e)) => return Err(e),
            Some(PartError::Retry(reason)) => {
                return Err(fail(format!("{reason}; pull again to resume")))
            }
            Some(PartError::Aborted) => return Err(fail("interrupted".into())),
        }
        progress(size);
        writer.finish()?;
        Ok(Parted::Done)
    }

    /// Fetches what is missing of one part, retrying with backoff.
    fn fetch_part(&self, part: &Part<'_>) -> Result<(), PartError> {
        let mut attempt = 0;
        loop {
            match self.fetch_range(part) {
                Ok(()) => return Ok(()),
                Err(PartError::Retry(reason)) => {
                    attempt += 1;
                    if attempt >= PART_ATTEMPTS || part.abort.load(Ordering::Relaxed) {
                        return Err(PartError::Retry(reason));
                    }
                    log::info!(
                        "part at {} of {}: {reason}; trying again",
                        part.start,
                        part.url
                    );
                    std::thread::sleep(PART_BACKOFF * (1 << (attempt - 1)));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// One ranged GET for the rest of a part, written at its offset.
    fn fetch_range(&self, part: &Part<'_>) -> Result<(), PartError> {
        let have = part.done.load(Ordering::Relaxed);
        if have >= part.len {
            return Ok(());
        }
        let fatal = |reason: String| {
            PartError::Fatal(Error::Download {
                digest: part.digest.to_string(),
                reason,
            })
        };
        let (from, to) = (part.start + have, part.start + part.len - 1);
        let resp = match self.session.call(&|agent| {
            agent
                .get(part.url)
                .set("Range", &format!("bytes={from}-{to}"))
        }) {
            Ok(r) => r,
            Err(Failure::Status { code: 404, .. }) => {
                return Err(fatal("the registry does not have this blob".into()))
            }
            Err(e @ Failure::Status { code: 500.., .. }) | Err(e @ Failure::Transport(_)) => {
                return Err(PartError::Retry(e.to_string()))
            }
            Err(e) => return Err(fatal(e.to_string())),
        };
        if resp.status() != 206 {
            return Err(PartError::RangesIgnored);
        }
        let range_ok = resp
            .header("Content-Range")
            .is_some_and(|r| r.starts_with(&format!("bytes {from}-{to}/")));
        if !range_ok {
            return Err(fatal(
                "the registry answered another range than asked".into(),
            ));
        }
        let mut reader = resp.into_reader().take(to + 1 - from);
        let mut buf = vec![0u8; 256 << 10];
        let mut offset = from;
        loop {
            if part.abort.load(Ordering::Relaxed) {
                return Err(PartError::Aborted);
            }
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => return Err(PartError::Retry(e.to_string())),
            };
            part.writer
                .write_at(offset, &buf[..n])
                .map_err(|e| PartError::Fatal(e.into()))?;
            offset += n as u64;
            part.done.fetch_add(n as u64, Ordering::Relaxed);
        }
        if offset <= to {
            return Err(PartError::Retry(format!(
                "the connection closed after {} of {} bytes of a part",
                offset - part.start,
                part.len
            )));
        }
        Ok(())
    }
}

/// One part's job: where it lies in the blob and where its progress goes.
struct Part<'a> {
    digest: &'a Digest,
    url: &'a str,
    writer: &'a RangedWriter,
    start: u64,
    len: u64,
    done: &'a AtomicU64,
    abort: &'a AtomicBool,
}

/// GETs a manifest, with Ollama's messages for a missing one or an error.
fn fetch_manifest(session: &Session, url: &str) -> Result<Vec<u8>, Error> {
    let resp = session.call(&|agent| {
        agent
            .get(url)
            .set("Accept", store::manifest::MANIFEST_MEDIA_TYPE)
    });
    let resp = match resp {
        Ok(r) => r,
        Err(Failure::Status { code: 404, .. }) => return Err(Error::ManifestNotFound),
        Err(Failure::Auth(e)) => return Err(Error::ManifestAuth(e)),
        Err(e) => return Err(Error::Manifest(e.to_string())),
    };
    let mut bytes = Vec::new();
    resp.into_reader()
        .take(MAX_MANIFEST_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Error::Manifest(e.to_string()))?;
    if bytes.len() as u64 > MAX_MANIFEST_BYTES {
        return Err(Error::Manifest("the manifest is too large".into()));
    }
    Ok(bytes)
}

/// Bytes an interrupted download of `digest` left behind (0 if none).
fn partial_len(store: &Store, digest: &Digest) -> u64 {
    std::fs::metadata(store.partial_path(digest)).map_or(0, |m| m.len())
}

fn remove_partial(store: &Store, digest: &Digest) -> Result<(), Error> {
    match std::fs::remove_file(store.partial_path(digest)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Download {
            digest: digest.to_string(),
            reason: format!("remove the partial download: {e}"),
        }),
    }
}

/// One lock per blob being downloaded, shared by every pull in the process.
fn digest_lock(digest: &Digest) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<Digest, Weak<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Entries nobody holds any more are dropped, so the map stays small.
    locks.retain(|_, w| w.strong_count() > 0);
    if let Some(l) = locks.get(digest).and_then(Weak::upgrade) {
        return l;
    }
    let l = Arc::new(Mutex::new(()));
    locks.insert(digest.clone(), Arc::downgrade(&l));
    l
}
