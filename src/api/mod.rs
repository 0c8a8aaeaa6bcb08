//! The HTTP side: a hyper 1.x server on tokio with hand-written routes.
//!
//! `api` parses requests into validated types, calls the store, create and
//! (for inference) the scheduler, and writes Ollama's JSON. Status codes come
//! from `error.rs` only.

mod anthropic;
mod blobs;
pub mod body;
mod conn;
mod cors;
mod embed;
mod guard;
pub mod inference;
mod models;
mod openai;
mod registry;
mod tokens;
pub mod types;

pub use crate::infer::{app, AppState};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::error::ApiError;
use body::{response, Body};

/// How long a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The pause after a failed accept (out of file descriptors, say): without
/// it the loop would spin a core and flood the log until one frees.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves until SIGINT/SIGTERM; in-flight requests get a grace period.
/// With `tls`, every connection is HTTPS.
pub async fn serve(
    state: Arc<AppState>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> std::io::Result<()> {
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown_signal());
    reload_keys_on_sighup(Arc::clone(&state));
    let config = &state.config;
    // The header-read timeout also closes keep-alive connections that stay
    // idle (hyper starts it again after each response).
    let mut http = http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(config.idle_timeout);
    let write_timeout = config.write_timeout;
    let limits = conn::Limits::new(config.max_connections);
    log::debug!("at most {} connections at once", limits.max_total());
    let mut failed_accepts = 0u64;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        failed_accepts += 1;
                        // One line per burst, not one per failure.
                        if failed_accepts.is_power_of_two() {
                            log::warn!("accept failed ({failed_accepts} so far): {e}");
                        }
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let Some(place) = limits.admit(peer.ip()) else {
                    log::debug!("refused a connection from {peer}: too many open");
                    tokio::spawn(conn::refuse(stream));
                    continue;
                };
                conn::cap_send_buffer(&stream);
                let stream = conn::WriteDeadline::new(stream, write_timeout);
                let state = Arc::clone(&state);
                let svc = service_fn(move |req| handle(Arc::clone(&state), req, peer));
                let watcher = graceful.watcher();
                let http = http.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _place = place;
                    let result = match tls {
                        None => watcher.watch(http.serve_connection(TokioIo::new(stream), svc)).await,
                        Some(acceptor) => {
                            let handshake = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                            match handshake.await {
                                Ok(Ok(tls_stream)) => {
                                    watcher.watch(http.serve_connection(TokioIo::new(tls_stream), svc)).await
                                }
                                Ok(Err(e)) => {
                                    log::debug!("TLS handshake with {peer} failed: {e}");
                                    return;
                                }
                                Err(_) => {
                                    log::debug!("TLS handshake with {peer} timed out");
                                    return;
                                }
                            }
                        }
                    };
                    if let Err(e) = result {
                        let stalled = std::error::Error::source(&e)
                            .and_then(|s| s.downcast_ref::<std::io::Error>())
                            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut);
                        if stalled {
                            log::info!("dropped {peer}: it stopped reading its answer");
                        } else {
                            log::debug!("connection from {peer}: {e}");
                        }
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    log::info!("shutting down: waiting for requests in flight");
    state.unload_all();
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(Duration::from_secs(10)) => {
            log::warn!("requests still in flight after 10s; their temp files are removed at next start");
        }
    }
    Ok(())
}

/// Re-reads the key file on SIGHUP, so keys rotate without a restart; a
/// file that does not parse keeps the keys in force.
fn reload_keys_on_sighup(state: Arc<AppState>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            log::warn!("cannot listen for SIGHUP; API keys reload only at restart");
            return;
        };
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                match state.keys.reload() {
                    Ok((admin, inference)) => {
                        log::info!("API keys reloaded: {admin} admin, {inference} inference");
                    }
                    Err(e) => log::warn!("API keys not reloaded, the old ones stay: {e}"),
                }
            }
        });
    }
    #[cfg(not(unix))]
    let _ = state;
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// One request: CORS, routing, error mapping and the request log line.
async fn handle(
    state: Arc<AppState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Result<Response<Body>, std::convert::Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let origin = req.headers().get(hyper::header::ORIGIN).cloned();
    let host = req.headers().get(hyper::header::HOST).cloned();
    let mut resp = match cors::check(&state.config, origin.as_ref(), host.as_ref()) {
        cors::Verdict::Forbidden => {
            let mut r = Response::new(Body::Full(None));
            *r.status_mut() = StatusCode::FORBIDDEN;
            r
        }
        cors::Verdict::Preflight if method == Method::OPTIONS => cors::preflight(),
        _ => match guard::check(&state, &method, &path, req.headers()) {
            Some(refused) => refused,
            None => match route(&state, req).await {
                Ok(r) => r,
                Err(e) => response(e.status(), "application/json; charset=utf-8", e.body()),
            },
        },
    };
    if let Some(o) = origin {
        cors::decorate(&state.config, &o, &mut resp);
    }
    log::info!(
        "{peer} {method} {path} {} {:?}",
        resp.status().as_u16(),
        started.elapsed()
    );
    Ok(resp)
}

async fn route(state: &Arc<AppState>, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path().to_string();
    let m = req.method().clone();
    let is = |allowed: &[Method]| allowed.contains(&m);
    let range = req.headers().get(hyper::header::RANGE).cloned();
    let query = req.uri().query().map(str::to_string);
    let body = req.into_body();
    let (get, post, head, delete) = (Method::GET, Method::POST, Method::HEAD, Method::DELETE);
    match path.as_str() {
        "/" if is(&[get.clone(), head.clone()]) => Ok(response(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "Ollama is running",
        )),
        "/api/version" if is(&[get.clone(), head.clone()]) => {
            body::json(&serde_json::json!({ "version": env!("CARGO_PKG_VERSION") }))
        }
        "/api/tags" if is(&[get.clone(), head.clone()]) => models::tags(state).await,
        "/api/ps" if m == get => inference::ps(state).await,
        "/api/generate" if m == post => inference::generate(state, body).await,
        "/api/chat" if m == post => inference::chat(state, body).await,
        "/api/embed" if m == post => embed::embed_route(state, body).await,
        "/api/embeddings" if m == post => embed::embeddings_route(state, body).await,
        "/api/show" if m == post => models::show(state, body).await,
        "/api/tokenize" if m == post => tokens::tokenize(state, body).await,
        "/api/detokenize" if m == post => tokens::detokenize(state, body).await,
        // An offline Ollama's answer with no cloud settings (v0.33
        // `server/routes.go` StatusHandler); hearth has no cloud to offer.
        "/api/status" if m == get => body::json(&serde_json::json!({
            "cloud": {"disabled": false, "source": "none"}
        })),
        "/api/create" if m == post => models::create(state, body).await,
        "/api/copy" if m == post => models::copy(state, body).await,
        "/api/delete" if m == delete => models::delete(state, body).await,
        "/api/pull" if m == post => registry::pull(state, body).await,
        "/api/push" if m == post => registry::push(state, body).await,
        p if p == "/v2" || p.starts_with("/v2/") => {
            registry::serve(state, &m, p, query.as_deref(), range.as_ref(), body).await
        }
        p if p.starts_with("/v1/messages") => Ok(anthropic::route(state, &m, p, body).await),
        p if p.starts_with("/v1/") => Ok(openai::route(state, &m, p, body).await),
        p if p.starts_with("/api/blobs/") && m == head => {
            blobs::head(state, &p["/api/blobs/".len()..])
        }
        p if p.starts_with("/api/blobs/") && m == post => {
            blobs::upload(state, &p["/api/blobs/".len()..], body).await
        }
        "/" | "/api/version" | "/api/tags" | "/api/show" | "/api/create" | "/api/copy"
        | "/api/delete" | "/api/pull" | "/api/push" => Ok(not_allowed(&path)),
        p if p.starts_with("/api/blobs/") => Ok(not_allowed(p)),
        _ => Ok(response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "404 page not found",
        )),
    }
}

/// 405 with the methods the path does allow.
fn not_allowed(path: &str) -> Response<Body> {
    let allow = match path {
        "/" | "/api/version" | "/api/tags" => "GET, HEAD",
        "/api/ps" => "GET",
        "/api/delete" => "DELETE",
        p if p.starts_with("/api/blobs/") => "HEAD, POST",
        _ => "POST",
    };
    let mut r = response(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        "405 method not allowed",
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// Runs a long blocking job that reports `Progress` (create, pull, push):
/// streamed as NDJSON status lines, or answered once with `success` (or the
/// error's status) when the client asked for no stream. A client that hangs
/// up does not stop the job: a half-done create or transfer is worse than a
/// finished one nobody watched.
pub async fn progress_job<F>(
    stream: bool,
    what: &'static str,
    job: F,
) -> Result<Response<Body>, ApiError>
where
    F: FnOnce(&mut dyn FnMut(types::Progress)) -> Result<(), ApiError> + Send + 'static,
{
    if !stream {
        blocking(move || job(&mut |_| {})).await?;
        return body::json(&types::Progress::status("success"));
    }
    let (tx, resp) = body::ndjson_stream();
    tokio::task::spawn_blocking(move || {
        let mut send = |p: types::Progress| {
            let _ = tx.send(body::ndjson_line(&p));
        };
        if let Err(e) = job(&mut send) {
            if e.status().is_server_error() {
                log::error!("{what} failed: {e}");
            }
            let mut line = crate::error::error_json(&e.to_string()).into_bytes();
            line.push(b'\n');
            let _ = tx.send(line.into());
        }
    });
    Ok(resp)
}

/// [`crate::infer::blocking`] for handlers, whose errors are [`ApiError`]s.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    crate::infer::blocking(f).await
}
