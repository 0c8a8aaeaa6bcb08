//! `HEAD/POST /api/blobs/:digest`: blob existence and streaming upload.

use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use super::body::{self, response, Body};

/// Bodies up to this size are read and dropped when an upload is refused
/// before it starts, so simple clients see the error; larger ones are cut.
const DRAIN_LIMIT: u64 = 64 << 20;
use super::{blocking, AppState};
use crate::error::ApiError;
use crate::store::Digest;

/// 200 if the blob exists, 404 if not, 400 for a malformed digest.
pub fn head(state: &AppState, raw: &str) -> Result<Response<Body>, ApiError> {
    let digest = Digest::parse_lowercase(raw)?;
    let status = if state.store.has_blob(&digest) {
        StatusCode::OK
    } else {
        StatusCode::NOT_FOUND
    };
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = status;
    Ok(r)
}

/// Streams the body into a blob: 201 when new, 200 when it already existed.
pub async fn upload(
    state: &Arc<AppState>,
    raw: &str,
    mut body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let digest = Digest::parse_lowercase(raw)?;
    if state.store.has_blob(&digest) {
        // Nothing to store. The body is read and dropped (up to a limit) so
        // a client still sending sees the 200 instead of a reset connection.
        state.store.touch_blob(&digest);
        body::drain(body, DRAIN_LIMIT).await;
        return Ok(response(
            StatusCode::OK,
            "application/json; charset=utf-8",
            "",
        ));
    }
    use hyper::body::Body as _;
    let size_hint = body.size_hint().exact();
    let store = Arc::clone(&state.store);
    let mut writer = match blocking(move || Ok(store.blob_writer(Some(digest), size_hint)?)).await {
        Ok(w) => w,
        Err(e) => {
            body::drain(body, DRAIN_LIMIT).await;
            return Err(e);
        }
    };
    // Frames are written as they arrive; memory stays at one frame whatever the blob size.
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::BadRequest(format!("reading blob upload: {e}")))?;
        if let Ok(data) = frame.into_data() {
            // Each frame is at most a few hundred KiB; a local write of that size does not
            // stall the runtime long enough to be worth a thread hop per frame.
            if let Err(e) = writer.write(&data) {
                drop(writer);
                body::drain(body, DRAIN_LIMIT).await;
                return Err(e.into());
            }
        }
    }
    let (_, _, created) = blocking(move || Ok(writer.finish()?)).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(response(status, "application/json; charset=utf-8", ""))
}
