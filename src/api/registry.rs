//! The registry routes: `/v2/` read endpoints (manifests and blobs, so other
//! boxes can pull this box's models when `HEARTH_SERVE_REGISTRY` is on),
//! `POST /api/pull` and the `POST /api/push` refusal.
//!
//! This file speaks HTTP only: the pull itself (registry client, resuming,
//! verification) is `crate::pull`, the bytes are the store's, and statuses
//! of errors come from `error.rs`. The success statuses of the registry
//! protocol (200, 206) and the 416 for an unsatisfiable range are set here,
//! as the blob routes set theirs.

use std::io::SeekFrom;
use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use super::body::{self, response, Body};
use super::types::Progress;
use super::{blocking, AppState};
use crate::error::{error_json, ApiError};
use crate::model::ModelName;
use crate::pull::Plan;
use crate::store::{self, manifest::MANIFEST_MEDIA_TYPE, Digest};

/// Bytes read from disk per body chunk.
const CHUNK: usize = 256 << 10;
/// Chunks read ahead of the client at most: the body channel is unbounded,
/// so this is what keeps a slow client from pulling a whole blob into memory.
const CHUNKS_IN_FLIGHT: usize = 8;

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

/// `POST /api/pull`: checks and fetches the manifest before answering (so a
/// bad name, a missing model or a full disk get their own status), then
/// streams progress as `create` does.
pub async fn pull(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: PullRequest = body::read_json(body).await?;
    let raw = if req.model.is_empty() {
        req.name
    } else {
        req.model
    };
    if raw.trim().is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    let store = Arc::clone(&state.store);
    let insecure = req.insecure;
    let plan = {
        let store = Arc::clone(&store);
        blocking(move || Ok(Plan::new(&store, &raw, insecure)?)).await?
    };
    log::info!("pulling model {}", plan.name());
    if !req.stream.unwrap_or(true) {
        blocking(move || Ok(plan.run(&store, &mut |_| {})?)).await?;
        return body::json(&Progress::status("success"));
    }
    let (tx, resp) = body::ndjson_stream();
    tokio::task::spawn_blocking(move || {
        let mut send = |p: Progress| {
            // A client that hung up does not stop the pull: the blobs it
            // fetched are useful to the next one.
            let _ = tx.send(body::ndjson_line(&p));
        };
        if let Err(e) = plan.run(&store, &mut send) {
            let e = ApiError::from(e);
            if e.status().is_server_error() {
                log::error!("pull failed: {e}");
            }
            let mut line = error_json(&e.to_string()).into_bytes();
            line.push(b'\n');
            let _ = tx.send(line.into());
        }
    });
    Ok(resp)
}

/// Everything under `/v2`: 404 unless the registry is enabled.
pub async fn serve(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    range: Option<&HeaderValue>,
) -> Result<Response<Body>, ApiError> {
    if !state.config.serve_registry {
        return Ok(response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "404 page not found",
        ));
    }
    let head = *method == Method::HEAD;
    if !head && *method != Method::GET {
        let mut r = response(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "405 method not allowed",
        );
        r.headers_mut()
            .insert(hyper::header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Ok(r);
    }
    let rest = path.trim_start_matches("/v2").trim_start_matches('/');
    let parts: Vec<&str> = rest.split('/').collect();
    let mut resp = match parts.as_slice() {
        [""] => body::json(&serde_json::json!({}))?,
        [ns, model, "manifests", tag] => manifest(state, ns, model, tag, head).await?,
        [ns, model, "blobs", digest] => {
            // The name is checked even though blobs are shared, so a
            // malformed repository path is refused as Docker's registry does.
            repo_name(ns, model, "latest")?;
            blob(state, digest, range, head).await?
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
        Err(store::Error::ModelNotFound(_)) => Err(ApiError::RegistryUnknown {
            code: "MANIFEST_UNKNOWN",
            message: format!("manifest unknown: {}", name.display_short()),
        }),
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
        Body::Stream(stream_file(file, start, end - start))
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
