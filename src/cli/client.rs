//! The CLI's HTTP client: blocking requests to a running server, with the
//! server's `{"error": ...}` text turned into an [`ApiError`] that keeps the
//! status, so verbs can react to a 404. What to send and how to print the
//! answer is left to the verbs.

use std::io::{BufRead, BufReader, Read};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

/// An error answer from the server: its status and its message.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: u16,
    /// The server's `error` text, or the raw body when it is not JSON.
    pub message: String,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

/// The status of an error if it came from the server, for verbs that treat
/// some answers (404 above all) specially.
pub fn status_of(err: &anyhow::Error) -> Option<u16> {
    err.downcast_ref::<ApiError>().map(|e| e.status)
}

/// A connection to one server. Clones share the agent's connection pool.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    /// `Authorization: Bearer` for a server that wants an API key
    /// (`OLLAMA_API_KEY`, as Ollama's Python client sends it).
    key: Option<String>,
}

impl Client {
    /// A client for `base` (`http://host:port`, no trailing slash).
    pub fn new(base: String) -> Client {
        let agent = crate::tls::agent_builder(crate::config::client_tls_ca().as_deref())
            // Connecting is quick or not at all; reads have no limit because a
            // model load or a long generation can keep a stream quiet for minutes.
            .timeout_connect(Duration::from_secs(5))
            .build();
        Client {
            agent,
            base,
            key: crate::config::client_api_key(),
        }
    }

    /// A request with the API key, when one is set.
    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = self.agent.request(method, &self.url(path));
        match &self.key {
            Some(k) => req.set("Authorization", &format!("Bearer {k}")),
            None => req,
        }
    }

    /// The server's base URL, for messages.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// GET a JSON answer.
    pub fn get(&self, path: &str) -> anyhow::Result<Value> {
        let res = self.request("GET", path).call();
        read_json(self.check(res)?)
    }

    /// POST JSON and read a JSON answer (an empty body reads as `null`).
    pub fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let res = self.request("POST", path).send_json(body);
        read_json(self.check(res)?)
    }

    /// DELETE with a JSON body.
    pub fn delete(&self, path: &str, body: &Value) -> anyhow::Result<()> {
        let res = self.request("DELETE", path).send_json(body);
        self.check(res).map(drop)
    }

    /// POST JSON and call `each` with every NDJSON line of the streamed
    /// answer. A line with an `error` key ends the stream as an error, as
    /// Ollama's clients treat it.
    pub fn stream(
        &self,
        path: &str,
        body: &Value,
        mut each: impl FnMut(&Value) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let res = self.request("POST", path).send_json(body);
        let reader = BufReader::new(self.check(res)?.into_reader());
        for line in reader.lines() {
            let line = line.context("read the server's answer")?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line)
                .with_context(|| format!("the server sent a line that is not JSON: {line}"))?;
            if let Some(e) = v.get("error") {
                anyhow::bail!(ApiError {
                    status: 200,
                    message: e.as_str().map_or_else(|| e.to_string(), str::to_string),
                });
            }
            each(&v)?;
        }
        Ok(())
    }

    /// Whether the server already has a blob (`HEAD /api/blobs/:digest`).
    pub fn has_blob(&self, digest: &str) -> anyhow::Result<bool> {
        let res = self.request("HEAD", &format!("/api/blobs/{digest}")).call();
        match res {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            other => self.check(other).map(|_| true),
        }
    }

    /// Uploads `len` bytes from `body` as the blob `digest`.
    pub fn upload_blob(&self, digest: &str, len: u64, body: impl Read) -> anyhow::Result<()> {
        let res = self
            .request("POST", &format!("/api/blobs/{digest}"))
            // A declared length lets the server reserve disk space up front
            // instead of growing its reservation as chunks arrive.
            .set("Content-Length", &len.to_string())
            .send(body);
        self.check(res).map(drop)
    }

    /// Turns a ureq result into the response, or into an error that names
    /// the server's message or the connection problem.
    fn check(&self, res: Result<ureq::Response, ureq::Error>) -> anyhow::Result<ureq::Response> {
        match res {
            Ok(r) => Ok(r),
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                let message = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
                    .unwrap_or_else(|| {
                        let t = text.trim();
                        if t.is_empty() {
                            format!("the server answered {status}")
                        } else {
                            t.to_string()
                        }
                    });
                let message = match (status, self.key.is_some()) {
                    (401, false) => format!(
                        "{message}; the server at {} wants an API key: set OLLAMA_API_KEY to one of its keys",
                        self.base
                    ),
                    (401, true) => format!(
                        "{message}; the server at {} does not accept the key in OLLAMA_API_KEY",
                        self.base
                    ),
                    (403, _) => format!(
                        "{message}; the server at {} refuses this with the key in use (an inference key, or a read-only server)",
                        self.base
                    ),
                    _ => message,
                };
                Err(ApiError { status, message }.into())
            }
            Err(ureq::Error::Transport(t)) => {
                let text = t.to_string();
                if text.contains("certificate") || text.contains("tls") || text.contains("TLS") {
                    anyhow::bail!(
                        "TLS with {} failed: {text}; for a box whose certificate a private CA signs, set HEARTH_TLS_CA to that CA's PEM file",
                        self.base
                    )
                }
                if t.kind() == ureq::ErrorKind::ConnectionFailed {
                    anyhow::bail!(
                        "could not connect to a hearth server at {}; run 'hearth serve' to start it",
                        self.base
                    )
                }
                Err(anyhow::anyhow!("{t}")).context(format!("talk to {}", self.base))
            }
        }
    }
}

/// Reads a JSON body; an empty one (copy, delete) reads as `null`.
fn read_json(res: ureq::Response) -> anyhow::Result<Value> {
    let text = res.into_string().context("read the server's answer")?;
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(&text).context("the server's answer is not JSON")
}
