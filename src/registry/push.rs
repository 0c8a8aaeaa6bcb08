//! Pushing a model to a registry (Docker Registry HTTP API v2, the subset
//! Ollama's push uses): for each layer and then the config, `HEAD` the blob
//! and skip it when the registry has it, else start an upload session,
//! stream the blob from disk in one `PATCH` and commit it with
//! `PUT ?digest=`; finally `PUT` the manifest bytes exactly as stored, so
//! the registry's digest of the model equals ours.
//!
//! This is the client side only, blocking `ureq` run on a blocking thread by
//! the caller, as `crate::registry::pull` is. The serving side (the upload endpoints)
//! is the api's registry module (`/v2/`). A registry that asks for a token gets one through
//! `crate::registry::session::Session` (Ollama's ed25519-signed token request).
//! Cross-repository mounts and chunked uploads are not implemented.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::model::{InvalidName, ModelName};
use crate::progress::Progress;
use crate::registry::session::{Failure, Session};
use crate::store::{self, manifest::MANIFEST_MEDIA_TYPE, Digest, Manifest, Store};

/// Connecting to a registry is quick or not at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A registry that acknowledges nothing for this long is given up on.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a layer's progress line is sent while it uploads.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// What can go wrong in a push.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name does not parse.
    #[error(transparent)]
    Name(#[from] InvalidName),
    /// `http://` named without `insecure`.
    #[error("insecure protocol http")]
    InsecureProtocol,
    /// The local manifest does not parse or names a malformed digest.
    #[error("push model manifest: {0}")]
    Manifest(String),
    /// A request to the registry failed or was refused.
    #[error("push {what}: {reason}")]
    Upload {
        /// The blob or the manifest being pushed.
        what: String,
        /// What went wrong.
        reason: String,
    },
    /// From the store (a missing model or blob, a disk error).
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// A push whose local manifest is read: a missing model or a bad name has
/// failed by now, before progress starts streaming.
#[derive(Debug)]
pub struct PushPlan {
    name: ModelName,
    /// `<scheme>://<host>`, against which relative `Location`s resolve.
    origin: String,
    /// `<origin>/v2/<namespace>/<model>`.
    repo_url: String,
    session: Session,
    /// The manifest exactly as stored.
    manifest_bytes: Vec<u8>,
}

impl PushPlan {
    /// Parses the name and reads its manifest from the store. The config's
    /// `key_dir` holds the key that signs token requests; its `tls_ca` is
    /// trusted besides the web roots.
    pub fn new(
        store: &Store,
        raw: &str,
        insecure: bool,
        config: &Config,
    ) -> Result<PushPlan, Error> {
        let key_dir = &config.key_dir;
        let raw = raw.trim();
        if raw.starts_with("http://") && !insecure {
            return Err(Error::InsecureProtocol);
        }
        let name = ModelName::parse(raw)?;
        let (name, manifest_bytes) = store.manifest_bytes(&name)?;
        let scheme = if insecure { "http" } else { "https" };
        let origin = format!("{scheme}://{}", name.host);
        let repo_url = format!("{origin}/v2/{}/{}", name.namespace, name.model);
        let agent = crate::tls::agent_builder(config.tls_ca.as_deref())
            .timeout_connect(CONNECT_TIMEOUT)
            .timeout_read(IO_TIMEOUT)
            .timeout_write(IO_TIMEOUT)
            // Upload URLs are followed by hand; a redirect would replay a
            // PATCH body ureq has already consumed.
            .redirects(0)
            .user_agent(&format!("hearth/{}", env!("CARGO_PKG_VERSION")))
            .build();
        let session = Session::new(agent, key_dir.to_path_buf(), name.host.clone())
            .with_key(config.registry_key(&name.host));
        Ok(PushPlan {
            name,
            origin,
            repo_url,
            session,
            manifest_bytes,
        })
    }

    /// The model being pushed.
    pub fn name(&self) -> &ModelName {
        &self.name
    }

    /// Uploads what the registry lacks and then the manifest, reporting
    /// Ollama's status lines through `progress`.
    pub fn run(self, store: &Arc<Store>, progress: &mut dyn FnMut(Progress)) -> Result<(), Error> {
        progress(Progress::status("retrieving manifest"));
        let manifest: Manifest = serde_json::from_slice(&self.manifest_bytes)
            .map_err(|e| Error::Manifest(format!("invalid manifest: {e}")))?;
        let mut blobs: Vec<(Digest, u64)> = Vec::new();
        for layer in manifest
            .layers
            .iter()
            .chain(std::iter::once(&manifest.config))
        {
            if !blobs.iter().any(|(d, _)| *d == layer.digest) {
                blobs.push((layer.digest.clone(), layer.size));
            }
        }
        // The blobs are read while they upload; eviction must not take one
        // from under the push.
        let _pin = store.pin(blobs.iter().map(|(d, _)| d.clone()).collect());
        for (digest, size) in &blobs {
            let line = |completed: u64| Progress {
                status: format!("pushing {}", &digest.hex()[..12]),
                digest: Some(digest.to_string()),
                total: Some(*size),
                completed: (completed > 0).then_some(completed),
            };
            if self.registry_has(digest)? {
                progress(line(*size));
                continue;
            }
            progress(line(0));
            self.upload(store, digest, *size, &mut |done| progress(line(done)))?;
            progress(line(*size));
        }
        progress(Progress::status("pushing manifest"));
        let url = format!("{}/manifests/{}", self.repo_url, self.name.tag);
        let fail = |reason: String| Error::Upload {
            what: "manifest".into(),
            reason,
        };
        self.session
            .send(
                &|agent| agent.put(&url).set("Content-Type", MANIFEST_MEDIA_TYPE),
                &mut |req| req.send_bytes(&self.manifest_bytes).map_err(Box::new),
            )
            .map_err(|e| fail(e.to_string()))?;
        progress(Progress::status("success"));
        Ok(())
    }

    /// `HEAD` of a blob: whether the registry already has it.
    fn registry_has(&self, digest: &Digest) -> Result<bool, Error> {
        let url = format!("{}/blobs/{digest}", self.repo_url);
        match self.session.call(&|agent| agent.head(&url)) {
            Ok(r) => Ok(r.status() == 200),
            Err(Failure::Status { .. }) => Ok(false),
            Err(e) => Err(Error::Upload {
                what: digest.to_string(),
                reason: e.to_string(),
            }),
        }
    }

    /// Starts an upload session, streams the blob in one `PATCH` and
    /// commits it with `PUT ?digest=`.
    fn upload(
        &self,
        store: &Store,
        digest: &Digest,
        size: u64,
        progress: &mut dyn FnMut(u64),
    ) -> Result<(), Error> {
        let fail = |reason: String| Error::Upload {
            what: digest.to_string(),
            reason,
        };
        let start_url = format!("{}/blobs/uploads/", self.repo_url);
        let start = self
            .session
            .call(&|agent| agent.post(&start_url))
            .map_err(|e| fail(format!("start upload: {e}")))?;
        let location = self.location(&start).map_err(fail)?;

        let path = store.blob_path(digest);
        let build = |agent: &ureq::Agent| {
            let req = agent
                .request("PATCH", &location)
                .set("Content-Type", "application/octet-stream")
                // With a length ureq sends the body as is rather than chunked.
                .set("Content-Length", &size.to_string());
            if size > 0 {
                req.set("Content-Range", &format!("0-{}", size - 1))
            } else {
                req
            }
        };
        // A retry after a 401 sends the file again from its start.
        let patched = self
            .session
            .send(&build, &mut |req| {
                let reader = Counting {
                    inner: File::open(&path).map_err(|e| Box::new(e.into()))?,
                    done: 0,
                    last: Instant::now(),
                    progress: &mut *progress,
                };
                req.send(reader).map_err(Box::new)
            })
            .map_err(|e| fail(format!("upload: {e}")))?;
        let location = self.location(&patched).unwrap_or(location);

        let sep = if location.contains('?') { '&' } else { '?' };
        let commit = format!("{location}{sep}digest={digest}");
        self.session
            .call(&|agent| agent.put(&commit))
            .map_err(|e| fail(format!("commit upload: {e}")))?;
        Ok(())
    }

    /// The absolute upload URL a response names (`Docker-Upload-Location`
    /// first, as Ollama reads it, then `Location`).
    fn location(&self, resp: &ureq::Response) -> Result<String, String> {
        let loc = resp
            .header("Docker-Upload-Location")
            .or_else(|| resp.header("Location"))
            .ok_or("the registry named no upload location")?;
        if loc.starts_with("http://") || loc.starts_with("https://") {
            Ok(loc.to_string())
        } else if loc.starts_with('/') {
            Ok(format!("{}{loc}", self.origin))
        } else {
            Err(format!("unusable upload location {loc:?}"))
        }
    }
}

/// A file reader that reports how much was read, at most every
/// [`PROGRESS_EVERY`].
struct Counting<'a> {
    inner: File,
    done: u64,
    last: Instant,
    progress: &'a mut dyn FnMut(u64),
}

impl Read for Counting<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.done += n as u64;
        if self.last.elapsed() >= PROGRESS_EVERY {
            (self.progress)(self.done);
            self.last = Instant::now();
        }
        Ok(n)
    }
}
