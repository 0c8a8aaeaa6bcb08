//! The test harness: starts `hearth serve` on 127.0.0.1:0 with a temporary
//! store, finds the port from its start-up log line, and offers a tiny
//! HTTP client on top of ureq.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the test models live: `HEARTH_TEST_MODELS`, else the cache that
/// `scripts/fetch-test-models.sh` fills.
pub fn models_dir() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/hearth/models")
        })
}

/// A test model file, which must exist (run scripts/fetch-test-models.sh).
pub fn model_file(name: &str) -> PathBuf {
    let p = models_dir().join(name);
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/fetch-test-models.sh",
        p.display()
    );
    p
}

/// The Gemma 3 270M GGUF.
pub fn gemma() -> PathBuf {
    model_file("gemma3-270m-q4_k_m.gguf")
}

/// Tests that run inference hold this lock, so two ggml workloads never
/// share the cores (their spinning threads would starve each other).
pub fn inference_lock() -> MutexGuard<'static, ()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Polls `done` until it holds, failing the test after 20 s: for state the
/// server reaches on its own (a log line, a model unloaded).
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A running server with its own store.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// The store root (inside `_dir` unless given).
    pub models: PathBuf,
    /// The key the helpers send (`Authorization: Bearer`): the first of
    /// `HEARTH_API_KEYS` when the server was started with some.
    pub key: Option<String>,
    /// Every line the server logged so far.
    log: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    /// Starts a server with a fresh store.
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    /// Starts a server with a fresh store and extra environment variables.
    pub fn start_with(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let models = dir.path().join("models");
        let mut s = Server::start_in(&models, env);
        s._dir = Some(dir);
        s
    }

    /// Starts a server on an existing store.
    pub fn start_in(models: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
        cmd.arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            // A home of its own: `serve` creates `~/.ollama/id_ed25519`
            // (the registry key) when missing, which must not land in the
            // real home; the store's parent is the server's temp dir.
            .env("HOME", models.parent().unwrap_or(models))
            .env("OLLAMA_HOST", "127.0.0.1:0")
            .env("OLLAMA_MODELS", models)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hearth");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line.clone());
                if std::env::var_os("HEARTH_TEST_LOG").is_some() {
                    eprintln!("[hearth] {line}");
                }
                if let Some(rest) = line.split("Listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(addr);
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("hearth did not log its address within 30s");
        let key = env
            .iter()
            .find(|(k, _)| *k == "HEARTH_API_KEYS")
            .and_then(|(_, v)| v.split(',').next())
            .map(str::to_string);
        Server {
            child,
            base: format!("http://{addr}"),
            models: models.to_path_buf(),
            key,
            log,
            _dir: None,
        }
    }

    /// What the server logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A request with the helpers' key, if any.
    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let req = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(300));
        match &self.key {
            Some(k) => req.set("Authorization", &format!("Bearer {k}")),
            None => req,
        }
    }

    /// The full URL of a path.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The server's process id, to read its threads and CPU time in /proc.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory in MiB, from /proc.
    pub fn rss_mib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("/proc status");
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS");
        kib / 1024
    }

    /// `kill -9`, then wait.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then wait for a clean exit; returns whether it exited in time.
    pub fn terminate(&mut self) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Sends a request with an optional JSON body; returns status and body text.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, String) {
        let req = self.request(method, path);
        let res = match body {
            Some(b) => req.send_string(&b.to_string()),
            None => req.call(),
        };
        into_parts(res)
    }

    /// Sends raw bytes.
    pub fn send_bytes(&self, method: &str, path: &str, bytes: &[u8]) -> (u16, String) {
        let req = self.request(method, path);
        into_parts(req.send_bytes(bytes))
    }

    /// POST JSON and parse the JSON answer.
    pub fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let (status, text) = self.call("POST", path, Some(&body));
        (status, parse(&text))
    }

    /// GET and parse the JSON answer.
    pub fn get(&self, path: &str) -> (u16, Value) {
        let (status, text) = self.call("GET", path, None);
        (status, parse(&text))
    }

    /// Streams a progress request (create, pull, push) and checks that it
    /// answered 200 and ended with `success`; returns the lines.
    pub fn stream_success(&self, path: &str, body: Value) -> Vec<Value> {
        let (status, lines) = self.stream(path, body);
        assert_eq!(status, 200, "{lines:?}");
        assert_eq!(
            lines.last().and_then(|l| l["status"].as_str()),
            Some("success"),
            "{lines:?}"
        );
        lines
    }

    /// POST JSON and read an NDJSON stream into its lines.
    pub fn stream(&self, path: &str, body: Value) -> (u16, Vec<Value>) {
        let (status, text) = self.call("POST", path, Some(&body));
        let lines = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(parse)
            .collect();
        (status, lines)
    }

    /// Uploads a file as a blob, returning its `sha256:` digest.
    pub fn upload_file(&self, path: &Path) -> String {
        let digest = sha256_file(path);
        let file = std::fs::File::open(path).expect("open model");
        let res = self
            .request("POST", &format!("/api/blobs/{digest}"))
            .send(file);
        let (status, body) = into_parts(res);
        assert!(status == 201 || status == 200, "upload {status}: {body}");
        digest
    }

    /// Uploads bytes as a blob, returning its digest.
    pub fn upload_bytes(&self, bytes: &[u8]) -> (u16, String, String) {
        let digest = format!("sha256:{}", sha256_hex(bytes));
        let (status, body) = self.send_bytes("POST", &format!("/api/blobs/{digest}"), bytes);
        (status, body, digest)
    }

    /// Uploads the Gemma GGUF and creates a model from it with a template.
    pub fn create_gemma(&self, name: &str) -> String {
        let digest = self.upload_file(&gemma());
        self.stream_success(
            "/api/create",
            serde_json::json!({
                "model": name,
                "files": {"gemma3-270m-q4_k_m.gguf": digest},
                "template": GEMMA_TEMPLATE,
                "parameters": {"stop": ["<end_of_turn>"]},
            }),
        );
        digest
    }

    /// Places a model file into the store as a blob without uploading it
    /// (a hard link when the cache is on the same filesystem), returning its digest.
    pub fn link_blob(&self, file: &Path) -> String {
        let digest = sha256_file_cached(file);
        let target = self.models.join("blobs").join(digest.replace(':', "-"));
        if !target.exists() && std::fs::hard_link(file, &target).is_err() {
            std::fs::copy(file, &target).expect("copy model into the store");
        }
        digest
    }

    /// Creates a model from a test GGUF already linked into the store.
    pub fn create_linked(&self, name: &str, file: &Path, extra: Value) -> Vec<Value> {
        let digest = self.link_blob(file);
        let mut req = serde_json::json!({"model": name, "files": {"model.gguf": digest}});
        if let (Some(obj), Some(more)) = (req.as_object_mut(), extra.as_object()) {
            obj.extend(more.clone());
        }
        self.stream_success("/api/create", req)
    }

    /// A server with `gemma3:270m` (Ollama's Gemma 3 template and stop) ready.
    pub fn with_gemma(env: &[(&str, &str)]) -> Server {
        let s = Server::start_with(env);
        s.create_linked(
            "gemma3:270m",
            &gemma(),
            serde_json::json!({"template": GEMMA_TEMPLATE, "parameters": {"stop": ["<end_of_turn>"]}}),
        );
        s
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ollama's library template for Gemma 3.
pub const GEMMA_TEMPLATE: &str = r#"{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"#;

fn into_parts(res: Result<ureq::Response, ureq::Error>) -> (u16, String) {
    match res {
        Ok(r) => {
            let status = r.status();
            let mut s = String::new();
            let _ = r.into_reader().read_to_string(&mut s);
            (status, s)
        }
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("transport error: {e}"),
    }
}

/// Parses JSON, or keeps the raw text as a JSON string when it is not JSON.
pub fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// sha256 of bytes, hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex(&sha2::Sha256::digest(bytes))
}

/// `sha256:<hex>` of a file, streamed.
pub fn sha256_file(path: &Path) -> String {
    use sha2::Digest as _;
    let mut f = std::fs::File::open(path).expect("open");
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    format!("sha256:{}", hex(&h.finalize()))
}

/// `sha256_file`, remembered per path for the life of the test binary.
pub fn sha256_file_cached(path: &Path) -> String {
    static CACHE: OnceLock<Mutex<std::collections::HashMap<PathBuf, String>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(d) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(path) {
        return d.clone();
    }
    let d = sha256_file(path);
    cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(path.to_path_buf(), d.clone());
    d
}

/// The SmolLM2 135M Instruct GGUF (ChatML template inside).
pub fn smollm() -> PathBuf {
    model_file("smollm2-135m-instruct-q4_1.gguf")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The blob files in a store (names only).
pub fn blob_names(models: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(models.join("blobs"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}
