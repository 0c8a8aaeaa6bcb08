//! What this box's `/v2` registry endpoints do with the store: upload
//! sessions (one blob writer each, taken out while a request writes to it,
//! dropped when idle, and bounded in number), and manifests accepted only
//! when every blob they name is here.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use crate::store::{self, BlobWriter, Digest, Manifest, Store};

/// An upload session unused for this long is dropped with its temp file.
const UPLOAD_IDLE: Duration = Duration::from_secs(600);
/// Upload sessions open at once at most: each holds a temp file, and a
/// client that opens sessions without end must not fill the disk's inodes
/// or the process's file table.
pub const MAX_UPLOADS: usize = 64;

/// Why the registry refuses a request; `error.rs` answers each in the
/// registry protocol's `{"errors": [{"code", "message"}]}` shape.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No session by this id (never opened, finished, idle too long, or in
    /// use by another request).
    #[error("blob upload unknown to registry: {0}")]
    UploadUnknown(String),
    /// Too many sessions are open.
    #[error("too many blob uploads in progress (at most {MAX_UPLOADS}); finish or abandon one")]
    TooManyUploads,
    /// The upload was committed without a valid `?digest=`.
    #[error("the upload is committed with ?digest=sha256:<hex>")]
    DigestMissing,
    /// The bytes do not hash to the digest the client named.
    #[error("digest mismatch: the upload named {expected}, its bytes are {got}")]
    DigestMismatch {
        /// What the client named.
        expected: String,
        /// What arrived.
        got: String,
    },
    /// The manifest is not one.
    #[error("manifest invalid: {0}")]
    ManifestInvalid(String),
    /// The manifest names a blob this box lacks.
    #[error("blob unknown to registry: {0}")]
    ManifestBlobUnknown(String),
    /// No such manifest.
    #[error("manifest unknown: {0}")]
    ManifestUnknown(String),
    /// From the store.
    #[error(transparent)]
    Store(store::Error),
}

impl Error {
    /// The registry protocol's error code.
    pub fn code(&self) -> &'static str {
        match self {
            Error::UploadUnknown(_) => "BLOB_UPLOAD_UNKNOWN",
            Error::TooManyUploads => "TOOMANYREQUESTS",
            Error::DigestMissing | Error::DigestMismatch { .. } => "DIGEST_INVALID",
            Error::ManifestInvalid(_) => "MANIFEST_INVALID",
            Error::ManifestBlobUnknown(_) => "MANIFEST_BLOB_UNKNOWN",
            Error::ManifestUnknown(_) => "MANIFEST_UNKNOWN",
            Error::Store(_) => "UNKNOWN",
        }
    }
}

impl From<store::Error> for Error {
    fn from(e: store::Error) -> Self {
        match e {
            store::Error::DigestMismatch { expected, got } => {
                Error::DigestMismatch { expected, got }
            }
            other => Error::Store(other),
        }
    }
}

/// An upload session that was started and not finished: one blob writer,
/// whose temp file goes away when it is dropped.
pub struct Upload {
    writer: BlobWriter,
    /// When the session was last used; idle ones are dropped.
    touched: Instant,
}

impl Upload {
    /// Appends bytes to the blob.
    pub fn write(&mut self, data: &[u8]) -> Result<(), Error> {
        self.writer.write(data)?;
        self.touched = Instant::now();
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.writer.written()
    }

    /// Verifies the digest and moves the blob into place (blocking). A
    /// mismatch leaves nothing behind: finishing deletes the temp file.
    pub fn finish(self, digest: Digest) -> Result<(), Error> {
        let mut writer = self.writer;
        writer.expect(digest);
        writer.finish()?;
        Ok(())
    }
}

/// Upload sessions by id. A session is taken out of the map while a
/// request writes to it, so two requests never write one blob at once (the
/// second finds no session and gets `BLOB_UPLOAD_UNKNOWN`). Ids are random,
/// so one map serves every store in the process.
fn uploads() -> MutexGuard<'static, HashMap<String, Upload>> {
    static UPLOADS: OnceLock<Mutex<HashMap<String, Upload>>> = OnceLock::new();
    let mut map = UPLOADS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    // Sessions a client abandoned are dropped here, on the next upload
    // request; one that nobody follows is cleaned when the store opens next.
    map.retain(|id, u| {
        let keep = u.touched.elapsed() < UPLOAD_IDLE;
        if !keep {
            log::info!("dropping upload {id}: idle for {UPLOAD_IDLE:?}");
        }
        keep
    });
    map
}

/// Opens a session (blocking: it creates the temp file) and returns its id.
pub fn start_upload(store: &Arc<Store>) -> Result<String, Error> {
    if uploads().len() >= MAX_UPLOADS {
        return Err(Error::TooManyUploads);
    }
    let writer = store.blob_writer(None, None)?;
    let id = new_upload_id();
    let mut map = uploads();
    if map.len() >= MAX_UPLOADS {
        return Err(Error::TooManyUploads);
    }
    map.insert(
        id.clone(),
        Upload {
            writer,
            touched: Instant::now(),
        },
    );
    Ok(id)
}

/// Takes a session out of the map for the duration of one request.
pub fn take_upload(id: &str) -> Result<Upload, Error> {
    uploads()
        .remove(id)
        .ok_or_else(|| Error::UploadUnknown(id.to_string()))
}

/// Puts a session back after a request wrote to it.
pub fn put_back(id: &str, upload: Upload) {
    uploads().insert(id.to_string(), upload);
}

/// A fresh, unguessable session id.
fn new_upload_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{}-{nanos}-{n}-{:p}", std::process::id(), &COUNTER);
    Digest::of(seed.as_bytes()).hex()[..32].to_string()
}

/// Checks a pushed manifest: it parses, and every blob it names is here.
/// Returns the digest of its bytes; the caller stores them unchanged.
pub fn check_manifest(store: &Store, bytes: &[u8]) -> Result<Digest, Error> {
    let manifest: Manifest =
        serde_json::from_slice(bytes).map_err(|e| Error::ManifestInvalid(e.to_string()))?;
    for d in manifest.digests() {
        if !store.has_blob(d) {
            return Err(Error::ManifestBlobUnknown(d.to_string()));
        }
    }
    Ok(Digest::of(bytes))
}
