//! The registry routes: `/v2/` read endpoints (manifests and blobs, so other
//! boxes can pull this box's models) and write endpoints (upload sessions
//! and manifest `PUT`, so other boxes can push to it), both only when
//! `HEARTH_SERVE_REGISTRY` is on; and `POST /api/pull` and `/api/push`.
//!
//! This file speaks HTTP only: the pull and push clients and what the
//! `/v2` endpoints do with the store are `crate::registry`'s, the bytes are
//! the store's, and statuses of errors come from `error.rs`. The success statuses of the registry protocol (200, 201,
//! 202, 206) and the 416 for an unsatisfiable range are set here, as the
//! blob routes set theirs. Uploads are anonymous: there is no
//! authentication, so the registry is for trusted networks.

use std::io::SeekFrom;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::body::{self, response, Body};
use super::{blocking, AppState};
use crate::error::ApiError;
use crate::model::ModelName;
use crate::registry::pull::PullPlan;
use crate::registry::push;
use crate::registry::serve::{self, Upload};
use crate::store::{self, manifest::MANIFEST_MEDIA_TYPE, Digest};

/// Bytes read from disk per body chunk.
const CHUNK: usize = 256 << 10;
/// Chunks read ahead of the client at most: the body channel is unbounded,
/// so this is what keeps a slow client from pulling a whole blob into memory.
const CHUNKS_IN_FLIGHT: usize = 8;
/// Bodies up to this size are read and dropped when a write is refused
/// before it starts, so simple clients see the error; larger ones are cut.
const DRAIN_LIMIT: u64 = 64 << 20;
/// The largest manifest accepted; real ones are a few kilobytes.
const MAX_MANIFEST_BYTES: usize = 4 << 20;

/// `POST /api/pull` and its deprecated `name` alias.
#[derive(Debug, Deserialize)]
struct PullRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    stream: Option<bool>,
}

impl PullRequest {
    /// The model name (`model`, or the deprecated `name`), `insecure` and
    /// whether to stream; a request naming no model is a 400.
    fn parts(self) -> Result<(String, bool, bool), ApiError> {
        let raw = if self.model.is_empty() {
            self.name
        } else {
            self.model
        };
        if raw.trim().is_empty() {
            return Err(ApiError::BadRequest("model is required".into()));
        }
        Ok((raw, self.insecure, self.stream.unwrap_or(true)))
    }
}

/// `POST /api/pull`: checks and fetches the manifest before answering (so a
/// bad name, a missing model or a full disk get their own status), then
/// streams progress as `create` does.
pub async fn pull(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: PullRequest = body::read_json(body).await?;
    let (raw, insecure, stream) = req.parts()?;
    let store = Arc::clone(&state.store);
    let plan = {
        let store = Arc::clone(&store);
        let config = state.config.clone();
        blocking(move || Ok(PullPlan::new(&store, &raw, insecure, &config)?)).await?
    };
    log::info!("pulling model {}", plan.name());
    super::progress_job(stream, "pull", move |progress| {
        Ok(plan.run(&store, progress)?)
    })
    .await
}

/// `POST /api/push` and its deprecated `name` alias; the same fields as a pull.
type PushRequest = PullRequest;

/// `POST /api/push`: reads the local manifest before answering (so a bad
/// name or a missing model get their own status), then streams progress as
/// a pull does.
pub async fn push(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: PushRequest = body::read_json(body).await?;
    let (raw, insecure, stream) = req.parts()?;
    let store = Arc::clone(&state.store);
    let plan = {
        let store = Arc::clone(&store);
        let config = state.config.clone();
        blocking(move || Ok(push::PushPlan::new(&store, &raw, insecure, &config)?)).await?
    };
    log::info!("pushing model {}", plan.name().display_short());
    super::progress_job(stream, "push", move |progress| {
        Ok(plan.run(&store, progress)?)
    })
    .await
}

/// Everything under `/v2`: 404 unless the registry is enabled.
pub async fn serve(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    query: Option<&str>,
    range: Option<&HeaderValue>,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    if !state.config.serve_registry {
        return Ok(response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "404 page not found",
        ));
    }
    let rest = path.trim_start_matches("/v2").trim_start_matches('/');
    let parts: Vec<&str> = rest.split('/').collect();
    let read = *method == Method::GET || *method == Method::HEAD;
    let head = *method == Method::HEAD;
    let mut resp = match (parts.as_slice(), method) {
        ([""], _) if read => body::json(&serde_json::json!({}))?,
        ([ns, model, "manifests", tag], _) if read => manifest(state, ns, model, tag, head).await?,
        ([ns, model, "manifests", tag], &Method::PUT) => {
            put_manifest(state, ns, model, tag, body).await?
        }
        ([ns, model, "blobs", "uploads"] | [ns, model, "blobs", "uploads", ""], &Method::POST) => {
            repo_name(ns, model, "latest")?;
            start_upload(state, ns, model, body).await?
        }
        ([ns, model, "blobs", "uploads", id], &Method::PATCH) => {
            repo_name(ns, model, "latest")?;
            patch_upload(ns, model, id, body).await?
        }
        ([ns, model, "blobs", "uploads", id], &Method::PUT) => {
            repo_name(ns, model, "latest")?;
            finish_upload(ns, model, id, query, body).await?
        }
        ([ns, model, "blobs", digest], _) if read => {
            // The name is checked even though blobs are shared, so a
            // malformed repository path is refused as Docker's registry does.
            repo_name(ns, model, "latest")?;
            blob(state, digest, range, head).await?
        }
        (
            [""] | [_, _, "manifests", _] | [_, _, "blobs", _] | [_, _, "blobs", "uploads", ..],
            _,
        ) => {
            let mut r = response(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "405 method not allowed",
            );
            let allow = match parts.as_slice() {
                [_, _, "manifests", _] => "GET, HEAD, PUT",
                [_, _, "blobs", "uploads"] | [_, _, "blobs", "uploads", ""] => "POST",
                [_, _, "blobs", "uploads", _] => "PATCH, PUT",
                _ => "GET, HEAD",
            };
            r.headers_mut()
                .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
            return Ok(r);
        }
        _ => {
            return Err(ApiError::RegistryUnknown {
                code: "NAME_UNKNOWN",
                message: "repository name not known to registry".into(),
            })
        }
    };
    resp.headers_mut().insert(
        "Docker-Distribution-API-Version",
        HeaderValue::from_static("registry/2.0"),
    );
    Ok(resp)
}

/// A 202 naming where the session continues and what it holds.
fn accepted(ns: &str, model: &str, id: &str, written: u64) -> Response<Body> {
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::ACCEPTED;
    let h = r.headers_mut();
    insert(
        h,
        "Location",
        &format!("/v2/{ns}/{model}/blobs/uploads/{id}"),
    );
    insert(h, "Docker-Upload-UUID", id);
    // Docker's `Range` is inclusive; an empty session reports `0-0` as
    // Docker's registry does.
    insert(h, "Range", &format!("0-{}", written.saturating_sub(1)));
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    r
}

/// `POST /v2/<ns>/<model>/blobs/uploads/`: opens a session.
async fn start_upload(
    state: &Arc<AppState>,
    ns: &str,
    model: &str,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    body::drain(body, DRAIN_LIMIT).await;
    let store = Arc::clone(&state.store);
    let id = blocking(move || Ok(serve::start_upload(&store)?)).await?;
    Ok(accepted(ns, model, &id, 0))
}

/// Appends a request body to a session's blob, frame by frame.
async fn append(upload: &mut Upload, body: &mut Incoming) -> Result<(), ApiError> {
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading blob upload: {e}")))?;
        if let Ok(data) = frame.into_data() {
            // Frames are a few hundred KiB at most; writing one inline does
            // not stall the runtime long enough to be worth a thread hop,
            // as for `/api/blobs` uploads.
            upload.write(&data)?;
        }
    }
    Ok(())
}

/// `PATCH <location>`: appends the body to the session.
async fn patch_upload(
    ns: &str,
    model: &str,
    id: &str,
    mut body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let mut upload = match serve::take_upload(id) {
        Ok(u) => u,
        Err(e) => {
            body::drain(body, DRAIN_LIMIT).await;
            return Err(e.into());
        }
    };
    if let Err(e) = append(&mut upload, &mut body).await {
        // The session is dropped with its temp file: what arrived is not
        // known to be whole.
        drop(upload);
        body::drain(body, DRAIN_LIMIT).await;
        return Err(e);
    }
    let written = upload.written();
    serve::put_back(id, upload);
    Ok(accepted(ns, model, id, written))
}

/// `PUT <location>?digest=<d>`: appends an optional last body, verifies
/// the digest and moves the blob into place.
async fn finish_upload(
    ns: &str,
    model: &str,
    id: &str,
    query: Option<&str>,
    mut body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let digest = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|kv| kv.strip_prefix("digest="))
        .map(|d| d.replace("%3A", ":").replace("%3a", ":"));
    let digest = match digest.as_deref().map(Digest::parse) {
        Some(Ok(d)) => d,
        _ => {
            body::drain(body, DRAIN_LIMIT).await;
            return Err(serve::Error::DigestMissing.into());
        }
    };
    let mut upload = match serve::take_upload(id) {
        Ok(u) => u,
        Err(e) => {
            body::drain(body, DRAIN_LIMIT).await;
            return Err(e.into());
        }
    };
    if let Err(e) = append(&mut upload, &mut body).await {
        drop(upload);
        body::drain(body, DRAIN_LIMIT).await;
        return Err(e);
    }
    let d = digest.clone();
    blocking(move || Ok(upload.finish(d)?)).await?;
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::CREATED;
    let h = r.headers_mut();
    insert(h, "Location", &format!("/v2/{ns}/{model}/blobs/{digest}"));
    insert(h, "Docker-Content-Digest", &digest.to_string());
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    Ok(r)
}

/// `PUT /v2/<ns>/<model>/manifests/<tag>`: stores the manifest bytes
/// unchanged under this box's default host once every blob they name is
/// here.
async fn put_manifest(
    state: &Arc<AppState>,
    ns: &str,
    model: &str,
    tag: &str,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let name = repo_name(ns, model, tag)?;
    // Manifests are a few kilobytes; this one body is read whole.
    let bytes = body::read_limited(body, MAX_MANIFEST_BYTES).await?;
    let store = Arc::clone(&state.store);
    let digest = blocking(move || {
        let digest = serve::check_manifest(&store, &bytes)?;
        store.write_manifest_raw(&name, &bytes)?;
        Ok(digest)
    })
    .await?;
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::CREATED;
    let h = r.headers_mut();
    insert(h, "Location", &format!("/v2/{ns}/{model}/manifests/{tag}"));
    insert(h, "Docker-Content-Digest", &digest.to_string());
    h.insert(CONTENT_LENGTH, HeaderValue::from(0));
    Ok(r)
}

/// A repository and tag as a validated name on the default registry host,
/// where this box's own models live.
fn repo_name(ns: &str, model: &str, tag: &str) -> Result<ModelName, ApiError> {
    let name = ModelName::parse(&format!("{ns}/{model}:{tag}"))?;
    // Parsing splits at `:` and `/`; anything that moved between parts was
    // not a plain name.
    if name.namespace != ns || name.model != model || name.tag != tag {
        return Err(ApiError::BadRequest("invalid model name".into()));
    }
    Ok(name)
}

/// `GET|HEAD /v2/<ns>/<model>/manifests/<tag>`: the stored bytes, unchanged.
async fn manifest(
    state: &Arc<AppState>,
    ns: &str,
    model: &str,
    tag: &str,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let name = repo_name(ns, model, tag)?;
    let store = Arc::clone(&state.store);
    let bytes = blocking(move || match store.manifest_bytes(&name) {
        Ok((_, bytes)) => Ok(bytes),
        Err(store::Error::ModelNotFound(_)) => {
            Err(serve::Error::ManifestUnknown(name.display_short()).into())
        }
        Err(e) => Err(e.into()),
    })
    .await?;
    let digest = Digest::of(&bytes);
    let len = bytes.len();
    let mut r = if head {
        response(StatusCode::OK, MANIFEST_MEDIA_TYPE, Bytes::new())
    } else {
        response(StatusCode::OK, MANIFEST_MEDIA_TYPE, bytes)
    };
    if head {
        *r.body_mut() = Body::Full(None);
    }
    let h = r.headers_mut();
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    insert(h, "Docker-Content-Digest", &digest.to_string());
    Ok(r)
}

/// `GET|HEAD /v2/<ns>/<model>/blobs/sha256:<hex>`, streamed from disk, with
/// single `Range`s.
async fn blob(
    state: &Arc<AppState>,
    raw: &str,
    range: Option<&HeaderValue>,
    head: bool,
) -> Result<Response<Body>, ApiError> {
    let unknown = || ApiError::RegistryUnknown {
        code: "BLOB_UNKNOWN",
        message: format!("blob unknown to registry: {raw}"),
    };
    let digest = Digest::parse(raw).map_err(|_| unknown())?;
    let path = state.store.blob_path(&digest);
    let size = match tokio::fs::metadata(&path).await {
        Ok(m) if m.is_file() => m.len(),
        _ => return Err(unknown()),
    };
    let wanted = range
        .and_then(|v| v.to_str().ok())
        .map(|v| parse_range(v, size));
    let (status, start, end) = match wanted {
        None | Some(Range::Ignored) => (StatusCode::OK, 0, size),
        Some(Range::Bytes(a, b)) => (StatusCode::PARTIAL_CONTENT, a, b),
        Some(Range::Unsatisfiable) => {
            let mut r = Response::new(Body::Full(None));
            *r.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            insert(r.headers_mut(), "Content-Range", &format!("bytes */{size}"));
            return Ok(r);
        }
    };
    let body = if head || start == end {
        Body::Full(None)
    } else {
        let file = tokio::fs::File::open(&path).await.map_err(|_| unknown())?;
        Body::stream(stream_file(file, start, end - start))
    };
    let mut r = Response::new(body);
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    h.insert(CONTENT_LENGTH, HeaderValue::from(end - start));
    h.insert("Accept-Ranges", HeaderValue::from_static("bytes"));
    insert(h, "Docker-Content-Digest", &digest.to_string());
    if status == StatusCode::PARTIAL_CONTENT {
        insert(
            h,
            "Content-Range",
            &format!("bytes {start}-{}/{size}", end - 1),
        );
    }
    Ok(r)
}

fn insert(h: &mut hyper::HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        h.insert(name, v);
    }
}

/// What a `Range` header asks for, as a half-open byte interval.
#[derive(Debug, PartialEq, Eq)]
enum Range {
    /// `[start, end)`, non-empty and inside the blob.
    Bytes(u64, u64),
    /// Malformed or multi-range: served as a whole, as RFC 9110 allows.
    Ignored,
    /// Starts past the end.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`.
fn parse_range(v: &str, size: u64) -> Range {
    let Some(spec) = v.trim().strip_prefix("bytes=") else {
        return Range::Ignored;
    };
    let Some((a, b)) = spec.trim().split_once('-') else {
        return Range::Ignored;
    };
    if spec.contains(',') {
        return Range::Ignored;
    }
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        // A suffix: the last n bytes.
        return match b.parse::<u64>() {
            Ok(0) => Range::Unsatisfiable,
            Ok(n) => Range::Bytes(size.saturating_sub(n), size),
            Err(_) => Range::Ignored,
        };
    }
    let Ok(start) = a.parse::<u64>() else {
        return Range::Ignored;
    };
    let end = match b {
        "" => size,
        b => match b.parse::<u64>() {
            Ok(last) if last >= start => last.saturating_add(1).min(size),
            _ => return Range::Ignored,
        },
    };
    if start >= size {
        return Range::Unsatisfiable;
    }
    Range::Bytes(start, end)
}

/// A chunk read from disk that gives its read-ahead permit back once hyper
/// has written and dropped it.
struct Chunk {
    data: Vec<u8>,
    _permit: OwnedSemaphorePermit,
}

impl AsRef<[u8]> for Chunk {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

/// Streams `len` bytes of `file` from `start` into a body channel, at most
/// [`CHUNKS_IN_FLIGHT`] chunks ahead of the client.
fn stream_file(mut file: tokio::fs::File, start: u64, len: u64) -> mpsc::UnboundedReceiver<Bytes> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let permits = Arc::new(Semaphore::new(CHUNKS_IN_FLIGHT));
        if let Err(e) = file.seek(SeekFrom::Start(start)).await {
            log::warn!("serving blob: seek: {e}");
            return;
        }
        let mut left = len;
        while left > 0 {
            let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
                return;
            };
            let want = left.min(CHUNK as u64) as usize;
            let mut data = vec![0u8; want];
            let n = match file.read(&mut data).await {
                Ok(0) => {
                    // The file shrank under us; the short body makes hyper
                    // close the connection, which the client sees as an error.
                    log::warn!("serving blob: file ended {left} bytes early");
                    return;
                }
                Ok(n) => n,
                Err(e) => {
                    log::warn!("serving blob: read: {e}");
                    return;
                }
            };
            data.truncate(n);
            left -= n as u64;
            if tx
                .send(Bytes::from_owner(Chunk {
                    data,
                    _permit: permit,
                }))
                .is_err()
            {
                // The client went away.
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Range::Bytes(0, 10));
        assert_eq!(parse_range("bytes=90-", 100), Range::Bytes(90, 100));
        assert_eq!(parse_range("bytes=90-200", 100), Range::Bytes(90, 100));
        assert_eq!(parse_range("bytes=-10", 100), Range::Bytes(90, 100));
        assert_eq!(parse_range("bytes=100-", 100), Range::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), Range::Ignored);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), Range::Ignored);
        assert_eq!(parse_range("items=0-1", 100), Range::Ignored);
    }
}
