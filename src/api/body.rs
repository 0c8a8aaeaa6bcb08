//! Response bodies and request-body reading: a full body, an NDJSON stream
//! fed from a channel, and JSON parsing with a size limit.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::ApiError;

/// The largest JSON request body accepted (images arrive base64 inside JSON).
pub const MAX_JSON_BYTES: usize = 64 << 20;

/// The most bytes a streamed answer may have queued for a client that is
/// not reading them; past it the client counts as gone and its generation
/// stops (the write timeout catches a client that reads nothing at all).
pub const MAX_QUEUED_BYTES: usize = 4 << 20;

/// A response body: whole, or streamed from a channel.
#[derive(Debug)]
pub enum Body {
    /// Sent at once.
    Full(Option<Bytes>),
    /// One chunk per message; ends when every sender is dropped. `queued`
    /// counts the bytes sent and not yet handed to hyper.
    Stream {
        rx: mpsc::UnboundedReceiver<Bytes>,
        queued: Arc<AtomicUsize>,
    },
}

impl Body {
    /// A body streamed from a channel whose sender bounds itself (as the
    /// registry's blob reader does with read-ahead permits).
    pub fn stream(rx: mpsc::UnboundedReceiver<Bytes>) -> Body {
        Body::Stream {
            rx,
            queued: Arc::default(),
        }
    }
}

/// The sending half of a streamed body: a chunk that would take the bytes
/// queued past [`MAX_QUEUED_BYTES`] is refused, as if the client had gone.
#[derive(Debug, Clone)]
pub struct StreamTx {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// A chunk was not queued: the client is gone or has stopped reading.
#[derive(Debug)]
pub struct Gone;

impl StreamTx {
    /// Queues a chunk for the client.
    pub fn send(&self, chunk: Bytes) -> Result<(), Gone> {
        let n = chunk.len();
        let before = self.queued.fetch_add(n, Ordering::Relaxed);
        if before.saturating_add(n) > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            log::info!("a client stopped reading its stream ({before} bytes unread); ending it");
            return Err(Gone);
        }
        self.tx.send(chunk).map_err(|_| Gone)
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match &mut *self {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream { rx, queued } => rx.poll_recv(cx).map(|o| {
                o.map(|b| {
                    queued.fetch_sub(b.len(), Ordering::Relaxed);
                    Ok(Frame::data(b))
                })
            }),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Body::Full(None))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(Some(b)) => hyper::body::SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => hyper::body::SizeHint::with_exact(0),
            Body::Stream { .. } => hyper::body::SizeHint::default(),
        }
    }
}

/// A response with a body and content type.
pub fn response(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(Body::Full(Some(body.into())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A 200 JSON response.
pub fn json<T: Serialize>(value: &T) -> Result<Response<Body>, ApiError> {
    let body = serde_json::to_vec(value)
        .map_err(|e| ApiError::Internal(format!("encode response: {e}")))?;
    Ok(response(
        StatusCode::OK,
        "application/json; charset=utf-8",
        body,
    ))
}

/// An empty 200 response, as copy and delete answer.
pub fn empty_ok() -> Response<Body> {
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::OK;
    r
}

/// A streaming NDJSON response and the sender that feeds it.
///
/// Producers never block (the runner thread must not wait on a slow
/// client); what the channel holds is bounded in bytes by [`StreamTx`].
pub fn ndjson_stream() -> (StreamTx, Response<Body>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let tx = StreamTx {
        tx,
        queued: Arc::clone(&queued),
    };
    let mut r = Response::new(Body::Stream { rx, queued });
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    (tx, r)
}

/// One NDJSON line for a value.
pub fn ndjson_line<T: Serialize>(value: &T) -> Bytes {
    let mut v = serde_json::to_vec(value)
        .unwrap_or_else(|e| crate::error::error_json(&e.to_string()).into_bytes());
    v.push(b'\n');
    Bytes::from(v)
}

/// Reads and parses a JSON request body, with Ollama's messages for an
/// empty or malformed body.
pub async fn read_json<T: DeserializeOwned>(body: Incoming) -> Result<T, ApiError> {
    let bytes = read_limited(body, MAX_JSON_BYTES).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest("missing request body".into()));
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::BadRequest(e.to_string()))
}

/// Reads and discards up to `limit` bytes of a body, so a client that is
/// still sending when we answer early sees the answer instead of a reset.
pub async fn drain(mut body: Incoming, limit: u64) {
    let mut seen = 0u64;
    while seen <= limit {
        match body.frame().await {
            Some(Ok(f)) => seen += f.data_ref().map_or(0, |d| d.len() as u64),
            _ => break,
        }
    }
}

/// Collects a body, refusing one over `limit` bytes.
pub async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    use hyper::body::Body as _;
    // A declared length over the limit is refused before reading anything.
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::TooLarge { limit });
    }
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(ApiError::TooLarge { limit }),
        Err(e) => Err(ApiError::BadRequest(format!("reading request body: {e}"))),
    }
}
