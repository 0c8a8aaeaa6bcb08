//! Pulling a model from a registry (Docker Registry HTTP API v2, as Ollama
//! speaks it): fetch the manifest, download the missing blobs into the
//! store, verify them and write the manifest bytes exactly as received.
//!
//! This module owns the registry client side: name and scheme rules, the
//! HTTP requests (blocking `ureq`, run on a blocking thread by the caller),
//! resuming interrupted downloads with `Range`, and progress reporting
//! through a callback. It leaves HTTP serving and status codes to `api` and
//! `error.rs`, and every byte on disk to the store (`partial_writer`,
//! `write_manifest_raw`). A registry that asks for a token gets one through
//! `crate::auth::Session`.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use crate::api::types::Progress;
use crate::auth::{self, Failure, Session};
use crate::model::{InvalidName, ModelName};
use crate::store::{self, Digest, Manifest, Store};

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
pub struct Plan {
    name: ModelName,
    /// `<scheme>://<host>/v2/<namespace>/<model>`.
    repo_url: String,
    session: Session,
    /// The manifest exactly as the registry sent it.
    manifest_bytes: Vec<u8>,
    /// Every blob to have, layers first and the config last, as Ollama orders them.
    blobs: Vec<(Digest, u64)>,
}

impl Plan {
    /// Parses the name, fetches the manifest and checks that the missing
    /// blobs fit the disk budget. `key_dir` holds the key that signs token
    /// requests, should the registry ask for one.
    pub fn new(store: &Store, raw: &str, insecure: bool, key_dir: &Path) -> Result<Plan, Error> {
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
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(READ_TIMEOUT)
            .user_agent(&format!("hearth/{}", env!("CARGO_PKG_VERSION")))
            .build();
        let session = Session::new(agent, key_dir.to_path_buf(), name.host.clone());
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
            let digest = Digest::parse(&layer.digest)
                .map_err(|_| Error::Manifest(format!("invalid layer digest {:?}", layer.digest)))?;
            if !blobs.iter().any(|(d, _)| *d == digest) {
                blobs.push((digest, layer.size));
            }
        }
        // Refusing up front beats failing after gigabytes: count what is
        // still to download, less what interrupted pulls already hold.
        let missing: u64 = blobs
            .iter()
            .filter(|(d, _)| !store.has_blob(d))
            .map(|(d, size)| size.saturating_sub(partial_len(store, d)))
            .sum();
        store.ensure_room(missing)?;
        Ok(Plan {
            name,
            repo_url,
            session,
            manifest_bytes,
            blobs,
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
        progress(Progress::status("writing manifest"));
        store.write_manifest_raw(&self.name, &self.manifest_bytes)?;
        progress(Progress::status("success"));
        Ok(())
    }

    /// Downloads one blob into its partial file, resuming from what is
    /// there, and moves it into place once its digest is verified.
    fn download(
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
