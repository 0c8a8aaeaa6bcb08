//! Registry support, black-box: one server serves its models under `/v2/`
//! with `HEARTH_SERVE_REGISTRY=1`, another pulls from it or pushes to it
//! over loopback with `insecure`, and the tests compare the two stores'
//! files. Pulls and pushes run no inference, so these tests do not take the
//! inference lock.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Seek as _, SeekFrom, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

use serde_json::{json, Value};

use crate::harness::{gemma, sha256_file, Server, GEMMA_TEMPLATE};

/// A registry-serving server with `gemma3:270m`.
fn source() -> Server {
    let a = Server::start_with(&[("HEARTH_SERVE_REGISTRY", "1")]);
    a.create_linked(
        "gemma3:270m",
        &gemma(),
        json!({"template": GEMMA_TEMPLATE, "parameters": {"stop": ["<end_of_turn>"]}}),
    );
    a
}

/// `host:port` of a server, the registry part of a pull name.
fn host(s: &Server) -> &str {
    s.base.trim_start_matches("http://")
}

fn manifest_path(models: &Path, host: &str) -> PathBuf {
    models
        .join("manifests")
        .join(host)
        .join("library/gemma3/270m")
}

fn blob_path(models: &Path, digest: &str) -> PathBuf {
    models.join("blobs").join(digest.replace(':', "-"))
}

/// Every digest a manifest file names, layers first and the config last.
fn digests(manifest: &Path) -> Vec<String> {
    let bytes = std::fs::read(manifest).expect("read manifest");
    let m: Value = serde_json::from_slice(&bytes).expect("manifest json");
    let mut out: Vec<String> = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["digest"].as_str().expect("digest").to_string())
        .collect();
    out.push(m["config"]["digest"].as_str().expect("config").to_string());
    out
}

fn statuses(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["status"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A GET with headers, returning status, headers of interest and body.
fn get_raw(url: &str, range: Option<&str>) -> (u16, Option<String>, Vec<u8>) {
    let mut req = ureq::get(url).timeout(Duration::from_secs(60));
    if let Some(r) = range {
        req = req.set("Range", r);
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let content_range = resp.header("Content-Range").map(str::to_string);
    let mut body = Vec::new();
    resp.into_reader()
        .read_to_end(&mut body)
        .expect("read body");
    (status, content_range, body)
}

/// A pull or push repeated once everything is in place: streamed, every
/// layer is complete at once; not streamed, one success object; through
/// the CLI, status lines from `first` to `success`.
fn repeat_transfer(s: &Server, verb: &str, name: &str, layers: usize, first: &str) {
    let path = format!("/api/{verb}");
    let (status, again) = s.stream(&path, json!({"model": name, "insecure": true}));
    assert_eq!(status, 200);
    let layer_lines: Vec<&Value> = again.iter().filter(|l| l.get("digest").is_some()).collect();
    assert_eq!(layer_lines.len(), layers, "{again:?}");
    assert!(layer_lines.iter().all(|l| l["completed"] == l["total"]));

    let (status, one) = s.post(
        &path,
        json!({"name": name, "insecure": true, "stream": false}),
    );
    assert_eq!((status, one), (200, json!({"status": "success"})));

    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args([verb, "--insecure", name])
        .env("OLLAMA_HOST", host(s))
        .output()
        .unwrap_or_else(|e| panic!("run hearth {verb}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with(&format!("{first}\n")), "{stdout}");
    assert!(stdout.trim_end().ends_with("success"), "{stdout}");
}

#[test]
fn pull_copies_the_model_byte_for_byte() {
    let a = source();
    let b = Server::start();
    let name = format!("{}/library/gemma3:270m", host(&a));
    let (status, lines) = b.stream("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 200, "{lines:?}");
    let st = statuses(&lines);
    assert_eq!(st.first().map(String::as_str), Some("pulling manifest"));
    let tail: Vec<&str> = st.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["verifying sha256 digest", "writing manifest", "success"],
        "{st:?}"
    );

    let a_manifest = manifest_path(&a.models, "registry.ollama.ai");
    let b_manifest = manifest_path(&b.models, host(&a));
    let a_bytes = std::fs::read(&a_manifest).expect("A manifest");
    assert_eq!(std::fs::read(&b_manifest).expect("B manifest"), a_bytes);
    let all = digests(&a_manifest);
    for d in &all {
        assert_eq!(
            sha256_file(&blob_path(&b.models, d)),
            *d,
            "B's blob {d} differs"
        );
        // Every layer, config included, was reported with its size.
        let pulling = format!("pulling {}", &d[7..19]);
        let line = lines
            .iter()
            .rfind(|l| l["status"] == pulling.as_str())
            .unwrap_or_else(|| panic!("no {pulling} line in {st:?}"));
        assert_eq!(line["digest"], d.as_str());
        assert_eq!(line["total"], line["completed"], "{line}");
    }
    // Layer lines come between the manifest and the verification.
    let first_verify = st
        .iter()
        .position(|s| s == "verifying sha256 digest")
        .expect("a verifying line");
    let last_pulling = st
        .iter()
        .rposition(|s| s.starts_with("pulling ") && s != "pulling manifest")
        .expect("layer lines");
    assert!(last_pulling < first_verify, "{st:?}");

    // B lists the model under A's address and can show it.
    let (_, tags) = b.get("/api/tags");
    let listed: Vec<&str> = tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(listed.contains(&name.as_str()), "{listed:?}");
    let (status, show) = b.post("/api/show", json!({"model": name}));
    assert_eq!(status, 200, "{show}");
    assert!(show["template"]
        .as_str()
        .is_some_and(|t| t.contains("start_of_turn")));

    repeat_transfer(&b, "pull", &name, all.len(), "pulling manifest");
}

/// A pull that replaces a model removes the layers only the old manifest
/// used (Ollama's `removing unused layers`); blobs still in use stay.
#[test]
fn pull_removes_layers_the_new_manifest_dropped() {
    let a = source();
    let b = Server::start();
    let name = format!("{}/library/gemma3:270m", host(&a));
    b.stream_success("/api/pull", json!({"model": name, "insecure": true}));
    let before = digests(&manifest_path(&b.models, host(&a)));
    // A changes the model's system prompt: a new layer and config.
    a.stream_success(
        "/api/create",
        json!({"model": "gemma3:270m", "from": "gemma3:270m", "system": "Be brief."}),
    );
    let lines = b.stream_success("/api/pull", json!({"model": name, "insecure": true}));
    let st = statuses(&lines);
    let tail: Vec<&str> = st.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["writing manifest", "removing unused layers", "success"],
        "{st:?}"
    );
    let after = digests(&manifest_path(&b.models, host(&a)));
    for d in &before {
        let kept = blob_path(&b.models, d).exists();
        assert_eq!(kept, after.contains(d), "{d}: kept {kept}");
    }
    assert!(
        before.iter().any(|d| !after.contains(d)),
        "nothing was replaced"
    );
    // Pulling the same manifest again removes nothing.
    let lines = b.stream_success("/api/pull", json!({"model": name, "insecure": true}));
    assert!(!statuses(&lines)
        .iter()
        .any(|s| s == "removing unused layers"));
}

#[test]
fn pull_errors_are_clear() {
    let a = Server::start_with(&[("HEARTH_SERVE_REGISTRY", "1")]);
    let b = Server::start();
    let h = host(&a);
    let (status, body) = b.post(
        "/api/pull",
        json!({"model": format!("http://{h}/library/gemma3:270m")}),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "insecure protocol http");

    let (status, body) = b.post(
        "/api/pull",
        json!({"model": format!("{h}/library/gemma3:nope"), "insecure": true}),
    );
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "pull model manifest: file does not exist");

    // A registry that cannot be reached: a host name that never resolves
    // (RFC 2606 reserves `.invalid`), and a port nobody listens on. Both
    // give a clean error, soon, over https (the default) and plain http.
    for (model, insecure) in [
        ("registry.invalid/library/gemma3:270m", false),
        ("127.0.0.1:1/library/gemma3:270m", false),
        ("127.0.0.1:1/library/gemma3:270m", true),
    ] {
        let started = Instant::now();
        let (status, body) = b.post(
            "/api/pull",
            json!({"model": model, "insecure": insecure, "stream": false}),
        );
        assert_eq!(status, 500, "{model}: {body}");
        assert!(
            body["error"]
                .as_str()
                .is_some_and(|e| e.starts_with("pull model manifest: ")),
            "{body}"
        );
        assert!(started.elapsed() < Duration::from_secs(20), "{model}");
    }
}

#[test]
fn https_pull_from_a_plain_http_port_fails_cleanly() {
    // Without `insecure` the name means https: the TLS handshake meets a
    // plain-HTTP server, which must end in a clean error, not a hang.
    let a = source();
    let b = Server::start();
    let name = format!("{}/library/gemma3:270m", host(&a));
    let started = Instant::now();
    let (status, body) = b.post("/api/pull", json!({"model": name, "stream": false}));
    assert_eq!(status, 500, "{body}");
    let err = body["error"].as_str().unwrap_or_default();
    assert!(err.starts_with("pull model manifest: "), "{body}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(crate::harness::blob_names(&b.models).is_empty());
    // The same name with `insecure` works, so the https attempt was real.
    let (status, body) = b.post(
        "/api/pull",
        json!({"model": name, "insecure": true, "stream": false}),
    );
    assert_eq!((status, body), (200, json!({"status": "success"})));
}

#[test]
fn registry_endpoints_serve_manifests_and_ranges() {
    let off = Server::start();
    assert_eq!(off.get("/v2/").0, 404);
    assert_eq!(off.get("/v2/library/gemma3/manifests/270m").0, 404);

    let a = source();
    assert_eq!(a.get("/v2/"), (200, json!({})));
    let manifest = manifest_path(&a.models, "registry.ollama.ai");
    let bytes = std::fs::read(&manifest).expect("manifest");
    let resp = ureq::get(&a.url("/v2/library/gemma3/manifests/270m"))
        .call()
        .expect("manifest");
    assert_eq!(
        resp.header("Content-Type"),
        Some("application/vnd.docker.distribution.manifest.v2+json")
    );
    let digest = format!("sha256:{}", crate::harness::sha256_hex(&bytes));
    assert_eq!(resp.header("Docker-Content-Digest"), Some(digest.as_str()));
    let mut got = Vec::new();
    resp.into_reader().read_to_end(&mut got).expect("read");
    assert_eq!(got, bytes);
    let head = ureq::head(&a.url("/v2/library/gemma3/manifests/270m"))
        .call()
        .expect("head");
    assert_eq!(
        head.header("Content-Length"),
        Some(bytes.len().to_string().as_str())
    );

    let (status, body) = a.get("/v2/library/gemma3/manifests/nope");
    assert_eq!(status, 404);
    assert_eq!(body["errors"][0]["code"], "MANIFEST_UNKNOWN");
    let missing = format!("/v2/library/gemma3/blobs/sha256:{}", "0".repeat(64));
    let (status, body) = a.get(&missing);
    assert_eq!(status, 404);
    assert_eq!(body["errors"][0]["code"], "BLOB_UNKNOWN");
    assert_eq!(a.get("/v2/../../etc/manifests/x").0, 404);

    // Ranges of the weights blob.
    let model = digests(&manifest)[0].clone();
    let path = blob_path(&a.models, &model);
    let size = std::fs::metadata(&path).expect("blob").len();
    let url = a.url(&format!("/v2/library/gemma3/blobs/{model}"));
    let mut f = std::fs::File::open(&path).expect("open");
    let mut expect = vec![0u8; 1000];
    f.seek(SeekFrom::Start(5000)).expect("seek");
    f.read_exact(&mut expect).expect("read");
    let (status, range, body) = get_raw(&url, Some("bytes=5000-5999"));
    assert_eq!(status, 206);
    assert_eq!(range, Some(format!("bytes 5000-5999/{size}")));
    assert_eq!(body, expect);
    let (status, range, body) = get_raw(&url, Some(&format!("bytes={}-", size - 10)));
    assert_eq!((status, body.len()), (206, 10));
    assert_eq!(
        range,
        Some(format!("bytes {}-{}/{size}", size - 10, size - 1))
    );
    let (status, _, _) = get_raw(&url, Some(&format!("bytes={size}-")));
    assert_eq!(status, 416);
    let head = ureq::head(&url).call().expect("head blob");
    assert_eq!(
        head.header("Content-Length"),
        Some(size.to_string().as_str())
    );
}

#[test]
fn interrupted_pull_resumes_from_the_partial_file() {
    let a = source();
    let b = Server::start();
    let name = format!("{}/library/gemma3:270m", host(&a));
    let model = digests(&manifest_path(&a.models, "registry.ollama.ai"))[0].clone();
    // What an interrupted pull leaves behind: the first half of the weights.
    let size = std::fs::metadata(gemma()).expect("gemma").len();
    let half = size / 2;
    let partial = b
        .models
        .join("blobs")
        .join(format!("{}-partial", model.replace(':', "-")));
    let mut src = std::fs::File::open(gemma()).expect("open gemma");
    let mut dst = std::fs::File::create(&partial).expect("create partial");
    std::io::copy(&mut (&mut src).take(half), &mut dst).expect("copy half");
    drop(dst);

    let lines = b.stream_success("/api/pull", json!({"model": name, "insecure": true}));
    let first = lines
        .iter()
        .find(|l| l["digest"] == model.as_str())
        .expect("a line for the weights");
    assert_eq!(first["completed"], half, "{first}");
    assert_eq!(sha256_file(&blob_path(&b.models, &model)), model);
    assert!(!partial.exists());
}

#[test]
fn corrupt_source_blob_is_rejected() {
    let a = source();
    let b = Server::start();
    let manifest = manifest_path(&a.models, "registry.ollama.ai");
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).expect("read")).expect("json");
    let template = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .find(|l| l["mediaType"] == "application/vnd.ollama.image.template")
        .and_then(|l| l["digest"].as_str())
        .expect("template layer")
        .to_string();
    // Same length, other bytes: only the digest check can notice. The
    // template blob is a file of A's own, not a link into the model cache.
    let path = blob_path(&a.models, &template);
    let len = std::fs::metadata(&path).expect("template blob").len() as usize;
    std::fs::write(&path, vec![b'x'; len]).expect("corrupt");

    let name = format!("{}/library/gemma3:270m", host(&a));
    let (status, lines) = b.stream("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 200);
    let err = lines
        .last()
        .and_then(|l| l["error"].as_str())
        .unwrap_or_default();
    let want =
        format!("digest mismatch, file must be downloaded again: want {template}, got sha256:");
    assert!(err.starts_with(&want), "{lines:?}");
    assert!(!blob_path(&b.models, &template).exists());
    let partial = format!("{}-partial", template.replace(':', "-"));
    assert!(!b.models.join("blobs").join(partial).exists());
    assert!(!manifest_path(&b.models, host(&a)).exists());
}

#[test]
fn pull_refuses_up_front_what_cannot_fit() {
    let a = source();
    let b = Server::start_with(&[("HEARTH_MAX_DISK", "1MB")]);
    let name = format!("{}/library/gemma3:270m", host(&a));
    let (status, body) = b.post("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 507, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("not enough space")));
    assert!(crate::harness::blob_names(&b.models).is_empty());
}

/// A plain server with `gemma3:270m` copied to `<host of to>/library/mine:v1`,
/// ready to push there.
fn pusher(to: &Server) -> (Server, String) {
    let a = Server::start();
    a.create_linked(
        "gemma3:270m",
        &gemma(),
        json!({"template": GEMMA_TEMPLATE, "parameters": {"stop": ["<end_of_turn>"]}}),
    );
    let name = format!("{}/library/mine:v1", host(to));
    let (status, body) = a.post(
        "/api/copy",
        json!({"source": "gemma3:270m", "destination": name}),
    );
    assert_eq!(status, 200, "{body}");
    (a, name)
}

#[test]
fn push_copies_the_model_byte_for_byte() {
    let b = Server::start_with(&[("HEARTH_SERVE_REGISTRY", "1")]);
    let (a, name) = pusher(&b);
    let (status, lines) = a.stream("/api/push", json!({"model": name, "insecure": true}));
    assert_eq!(status, 200, "{lines:?}");
    let st = statuses(&lines);
    assert_eq!(st.first().map(String::as_str), Some("retrieving manifest"));
    let tail: Vec<&str> = st.iter().rev().take(2).rev().map(String::as_str).collect();
    assert_eq!(tail, ["pushing manifest", "success"], "{st:?}");

    // B stores the manifest under its own default host, byte for byte.
    let a_manifest = a
        .models
        .join("manifests")
        .join(host(&b))
        .join("library/mine/v1");
    let b_manifest = b
        .models
        .join("manifests/registry.ollama.ai/library/mine/v1");
    let a_bytes = std::fs::read(&a_manifest).expect("A manifest");
    assert_eq!(std::fs::read(&b_manifest).expect("B manifest"), a_bytes);
    let all = digests(&a_manifest);
    for d in &all {
        assert_eq!(sha256_file(&blob_path(&b.models, d)), *d, "B's blob {d}");
        let pushing = format!("pushing {}", &d[7..19]);
        let line = lines
            .iter()
            .rfind(|l| l["status"] == pushing.as_str())
            .unwrap_or_else(|| panic!("no {pushing} line in {st:?}"));
        assert_eq!(line["total"], line["completed"], "{line}");
    }
    // The config is pushed last.
    let config = all.last().expect("config");
    let last_layer = lines
        .iter()
        .rev()
        .find_map(|l| l["digest"].as_str())
        .expect("layer lines");
    assert_eq!(last_layer, config);

    let (_, tags) = b.get("/api/tags");
    let listed: Vec<&str> = tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(listed.contains(&"mine:v1"), "{listed:?}");

    repeat_transfer(&a, "push", &name, all.len(), "retrieving manifest");
}

#[test]
fn push_errors_are_clear() {
    let plain = Server::start();
    let (a, name) = pusher(&plain);
    let (status, body) = a.post("/api/push", json!({"model": format!("http://{name}")}));
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "insecure protocol http");

    let missing = format!("{}/library/nope:v1", host(&plain));
    let (status, body) = a.post("/api/push", json!({"model": missing, "insecure": true}));
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("model '") && e.ends_with("' not found")));

    // A server that does not serve a registry refuses the upload; the
    // stream ends in one error line and nothing is stored there.
    let (status, lines) = a.stream("/api/push", json!({"model": name, "insecure": true}));
    assert_eq!(status, 200);
    let err = lines
        .last()
        .and_then(|l| l["error"].as_str())
        .unwrap_or_default();
    assert!(err.contains("start upload: 404"), "{lines:?}");
    assert!(crate::harness::blob_names(&plain.models).is_empty());
}

#[test]
fn registry_uploads_verify_digests_and_manifests() {
    let b = Server::start_with(&[("HEARTH_SERVE_REGISTRY", "1")]);
    let start = || {
        let resp = ureq::post(&b.url("/v2/library/t/blobs/uploads/"))
            .call()
            .expect("start upload");
        assert_eq!(resp.status(), 202);
        resp.header("Location").expect("location").to_string()
    };

    // A chunked upload with a final body, committed with its digest.
    let location = start();
    assert!(
        location.starts_with("/v2/library/t/blobs/uploads/"),
        "{location}"
    );
    let resp = ureq::request("PATCH", &b.url(&location))
        .send_bytes(b"hello ")
        .expect("patch");
    assert_eq!(resp.status(), 202);
    assert_eq!(resp.header("Range"), Some("0-5"));
    let next = resp.header("Location").expect("location").to_string();
    let good = format!("sha256:{}", crate::harness::sha256_hex(b"hello world"));
    let (status, _) = b.send_bytes("PUT", &format!("{next}?digest={good}"), b"world");
    assert_eq!(status, 201);
    assert_eq!(sha256_file(&blob_path(&b.models, &good)), good);
    let (status, _) = b.call("HEAD", &format!("/v2/library/t/blobs/{good}"), None);
    assert_eq!(status, 200);
    // A finished session is gone.
    let (status, _) = b.send_bytes("PATCH", &next, b"more");
    assert_eq!(status, 404);

    // A wrong digest is refused and leaves no blob, nor a temp file.
    let location = start();
    let wrong = format!("sha256:{}", crate::harness::sha256_hex(b"something else"));
    let (status, body) = b.send_bytes("PUT", &format!("{location}?digest={wrong}"), b"bytes");
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        crate::harness::parse(&body)["errors"][0]["code"],
        "DIGEST_INVALID"
    );
    assert!(!blob_path(&b.models, &wrong).exists());
    let actual = format!("sha256:{}", crate::harness::sha256_hex(b"bytes"));
    assert!(!blob_path(&b.models, &actual).exists());
    let tmp = std::fs::read_dir(b.models.join(".hearth-tmp"))
        .expect("tmp")
        .count();
    assert_eq!(tmp, 0);

    // A manifest naming a blob the registry lacks is refused.
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": good, "size": 11},
        "layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": wrong, "size": 5}],
    });
    let (status, body) = b.send_bytes(
        "PUT",
        "/v2/library/t/manifests/latest",
        manifest.to_string().as_bytes(),
    );
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        crate::harness::parse(&body)["errors"][0]["code"],
        "MANIFEST_BLOB_UNKNOWN"
    );
    assert_eq!(b.get("/v2/library/t/manifests/latest").0, 404);

    // Open sessions are bounded: past the limit a new one is refused with
    // 429 until one finishes.
    let open: Vec<String> = (0..64).map(|_| start()).collect();
    let (status, body) = b.call("POST", "/v2/library/t/blobs/uploads/", None);
    assert_eq!(status, 429, "{body}");
    assert_eq!(
        crate::harness::parse(&body)["errors"][0]["code"],
        "TOOMANYREQUESTS"
    );
    let digest = format!("sha256:{}", crate::harness::sha256_hex(b"x"));
    let (status, _) = b.send_bytes("PUT", &format!("{}?digest={digest}", open[0]), b"x");
    assert_eq!(status, 201);
    start();
}

/// How the token registry below answers token requests.
const TOKEN_OK: u8 = 0;
/// The token endpoint refuses the key.
const TOKEN_REFUSED: u8 = 1;
/// The token endpoint issues a token the registry then refuses.
const TOKEN_USELESS: u8 = 2;
/// The challenge names a realm on another host.
const REALM_ELSEWHERE: u8 = 3;
const GOOD_TOKEN: &str = "tok-7f3a";

/// Files a registry holds, by request path.
type Files = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// A registry that wants Ollama's token auth, on a std listener: every
/// `/v2/` request without `Bearer GOOD_TOKEN` gets a 401 challenge; the
/// realm `/token` checks the ed25519 signature against `public_line` (the
/// puller's `id_ed25519.pub`) over `GET,<url>,<base64(hex(sha256("")))>`
/// and the query Ollama sends, then answers as `mode` says. With a token it
/// serves `files` and takes uploads (one `PATCH`, then `PUT ?digest=`) and
/// manifests into them.
struct TokenRegistry {
    host: String,
    mode: Arc<AtomicU8>,
    token_requests: Arc<AtomicUsize>,
    files: Files,
}

impl TokenRegistry {
    fn start(files: HashMap<String, Vec<u8>>, public_line: String) -> TokenRegistry {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let host = listener.local_addr().expect("addr").to_string();
        let mode = Arc::new(AtomicU8::new(TOKEN_OK));
        let token_requests = Arc::new(AtomicUsize::new(0));
        let files: Files = Arc::new(Mutex::new(files));
        let served = Arc::clone(&files);
        let (m, t, h) = (Arc::clone(&mode), Arc::clone(&token_requests), host.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (m, t, h, f, p) = (
                    Arc::clone(&m),
                    Arc::clone(&t),
                    h.clone(),
                    Arc::clone(&served),
                    public_line.clone(),
                );
                std::thread::spawn(move || {
                    token_registry_answer(conn, &h, &f, &p, m.load(Ordering::SeqCst), &t)
                });
            }
        });
        TokenRegistry {
            host,
            mode,
            token_requests,
            files,
        }
    }
}

fn token_registry_answer(
    mut conn: TcpStream,
    host: &str,
    files: &Files,
    public_line: &str,
    mode: u8,
    token_requests: &AtomicUsize,
) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let method = line.split_whitespace().next().unwrap_or("").to_string();
    let target = line.split_whitespace().nth(1).unwrap_or("").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let auth = headers.get("authorization").cloned().unwrap_or_default();
    let mut body = vec![
        0u8;
        headers
            .get("content-length")
            .map_or(0, |l| l.parse().unwrap_or(0))
    ];
    if reader.read_exact(&mut body).is_err() {
        return;
    }
    let respond = |conn: &mut TcpStream, status: &str, extra: &str, body: &[u8]| {
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n{extra}\r\n",
            body.len()
        );
        let _ = conn.write_all(head.as_bytes());
        let _ = conn.write_all(body);
    };
    if let Some(query) = target.strip_prefix("/token?") {
        token_requests.fetch_add(1, Ordering::SeqCst);
        // The signature covers the full URL as sent, and the empty body's hash.
        let empty = crate::harness::sha256_hex(b"");
        let data = format!("GET,http://{host}{target},{}", STANDARD.encode(empty));
        let public = public_line.split_whitespace().nth(1).unwrap_or("?");
        let signed = auth.split_once(':').is_some_and(|(key, sig)| {
            let blob = STANDARD.decode(key).unwrap_or_default();
            let sig = STANDARD.decode(sig).unwrap_or_default();
            // The wire blob is `string "ssh-ed25519"` then `string <32 bytes>`.
            key == public
                && blob.len() == 51
                && ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &blob[19..])
                    .verify(data.as_bytes(), &sig)
                    .is_ok()
        });
        let keys: Vec<&str> = query
            .split('&')
            .map(|p| p.split('=').next().unwrap_or(""))
            .collect();
        let query_ok = keys == ["nonce", "scope", "service", "ts"]
            && query.contains("&scope=repository%3Alibrary%2Ftiny%3Apull&")
            && query.contains("&service=test-registry&");
        if !signed || !query_ok || mode == TOKEN_REFUSED {
            let body = br#"{"errors":[{"code":"UNAUTHORIZED","message":"key not registered"}]}"#;
            respond(&mut conn, "401 Unauthorized", "", body);
            return;
        }
        let token = if mode == TOKEN_USELESS {
            "nope"
        } else {
            GOOD_TOKEN
        };
        let body = format!(r#"{{"token":"{token}"}}"#);
        respond(&mut conn, "200 OK", "", body.as_bytes());
        return;
    }
    if auth != format!("Bearer {GOOD_TOKEN}") {
        let realm_host = if mode == REALM_ELSEWHERE {
            "elsewhere.invalid"
        } else {
            host
        };
        let challenge = format!(
            "WWW-Authenticate: Bearer realm=\"http://{realm_host}/token\",service=\"test-registry\",scope=\"repository:library/tiny:pull\"\r\n"
        );
        respond(&mut conn, "401 Unauthorized", &challenge, b"{}");
        return;
    }
    let mut files = files.lock().unwrap_or_else(|e| e.into_inner());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    match method.as_str() {
        "GET" | "HEAD" => match files.get(path) {
            Some(b) if method == "GET" => respond(&mut conn, "200 OK", "", b),
            Some(_) => respond(&mut conn, "200 OK", "", b""),
            None => respond(&mut conn, "404 Not Found", "", b"{}"),
        },
        "POST" if path.ends_with("/blobs/uploads/") => {
            let location = format!("Location: {path}session\r\n");
            respond(&mut conn, "202 Accepted", &location, b"");
        }
        "PATCH" => {
            files.insert(path.to_string(), body);
            let location = format!("Location: {path}\r\n");
            respond(&mut conn, "202 Accepted", &location, b"");
        }
        "PUT" if path.contains("/manifests/") => {
            files.insert(path.to_string(), body);
            respond(&mut conn, "201 Created", "", b"");
        }
        "PUT" => {
            let digest = query.strip_prefix("digest=").unwrap_or_default();
            let uploaded = files.remove(path).unwrap_or_default();
            let repo = path.split("/blobs/").next().unwrap_or_default();
            files.insert(format!("{repo}/blobs/{digest}"), uploaded);
            respond(&mut conn, "201 Created", "", b"");
        }
        _ => respond(&mut conn, "405 Method Not Allowed", "", b""),
    }
}

/// A one-layer model as registry files: the manifest and its blobs by path.
fn tiny_model() -> (HashMap<String, Vec<u8>>, Vec<String>) {
    let layer = b"not really a model, but bytes with a digest".to_vec();
    let config = br#"{"model_format":"gguf","model_family":"tiny"}"#.to_vec();
    let digest = |b: &[u8]| format!("sha256:{}", crate::harness::sha256_hex(b));
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.ollama.image.model",
                    "digest": digest(&layer), "size": layer.len()}],
    });
    let mut files = HashMap::new();
    let digests = vec![digest(&layer), digest(&config)];
    files.insert(
        "/v2/library/tiny/manifests/latest".to_string(),
        manifest.to_string().into_bytes(),
    );
    files.insert(format!("/v2/library/tiny/blobs/{}", digests[0]), layer);
    files.insert(format!("/v2/library/tiny/blobs/{}", digests[1]), config);
    (files, digests)
}

#[test]
fn pull_and_push_fetch_a_signed_token_when_challenged() {
    let b = Server::start();
    // `serve` made the key pair in its home at start-up, private key 0600.
    let key_dir = b.models.parent().expect("home").join(".ollama");
    let public_line = std::fs::read_to_string(key_dir.join("id_ed25519.pub")).expect("pub key");
    assert!(public_line.starts_with("ssh-ed25519 AAAA"), "{public_line}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(key_dir.join("id_ed25519"))
            .expect("private key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let (files, digests) = tiny_model();
    let reg = TokenRegistry::start(files, public_line.trim().to_string());
    let name = format!("{}/library/tiny", reg.host);

    // The key is refused: a 401 with the token endpoint's message (as a
    // short line, not its whole body), nothing stored.
    reg.mode.store(TOKEN_REFUSED, Ordering::SeqCst);
    let (status, body) = b.post("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["error"],
        "pull model manifest: 401: key not registered"
    );
    // A token the registry does not take: Ollama's words after one retry.
    reg.mode.store(TOKEN_USELESS, Ordering::SeqCst);
    let (status, body) = b.post("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["error"],
        "pull model manifest: unauthorized: access denied"
    );
    // A realm on another host is never asked.
    reg.mode.store(REALM_ELSEWHERE, Ordering::SeqCst);
    let before = reg.token_requests.load(Ordering::SeqCst);
    let (status, body) = b.post("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not match original host")),
        "{body}"
    );
    assert_eq!(reg.token_requests.load(Ordering::SeqCst), before);
    assert!(crate::harness::blob_names(&b.models).is_empty());

    // A signed request gets the token; the manifest and both blobs come
    // with it, and one token serves the whole pull.
    reg.mode.store(TOKEN_OK, Ordering::SeqCst);
    let before = reg.token_requests.load(Ordering::SeqCst);
    b.stream_success("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(reg.token_requests.load(Ordering::SeqCst), before + 1);
    for d in &digests {
        assert_eq!(sha256_file(&blob_path(&b.models, d)), *d);
    }

    // A push to another repository of the same registry: challenged at its
    // first request, then every blob and the manifest go up with the token.
    let other = format!("{}/library/other:v1", reg.host);
    let (status, body) = b.post(
        "/api/copy",
        json!({"source": format!("{name}:latest"), "destination": other}),
    );
    assert_eq!(status, 200, "{body}");
    let before = reg.token_requests.load(Ordering::SeqCst);
    b.stream_success("/api/push", json!({"model": other, "insecure": true}));
    assert_eq!(reg.token_requests.load(Ordering::SeqCst), before + 1);
    let files = reg.files.lock().expect("files");
    for d in &digests {
        let pushed = files
            .get(&format!("/v2/library/other/blobs/{d}"))
            .unwrap_or_else(|| panic!("{d} not pushed"));
        assert_eq!(format!("sha256:{}", crate::harness::sha256_hex(pushed)), *d);
    }
    let manifest = std::fs::read(
        b.models
            .join("manifests")
            .join(&reg.host)
            .join("library/other/v1"),
    )
    .expect("B's manifest");
    assert_eq!(files.get("/v2/library/other/manifests/v1"), Some(&manifest));
}

/// The sidecar of a parted download in B's store, if any.
fn sidecar(models: &Path, digest: &str) -> PathBuf {
    models
        .join("blobs")
        .join(format!("{}-partial.json", digest.replace(':', "-")))
}

fn partial(models: &Path, digest: &str) -> PathBuf {
    models
        .join("blobs")
        .join(format!("{}-partial", digest.replace(':', "-")))
}

/// The `completed` of each line about `digest` (0 where omitted).
fn completions(lines: &[Value], digest: &str) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l["digest"] == digest)
        .map(|l| l["completed"].as_u64().unwrap_or(0))
        .collect()
}

/// Puts a model into a registry server's store by hand: one layer of
/// `size` pseudo-random bytes (A's own file, safe to corrupt) and a config.
/// Returns the pull name on `a`, the layer's digest and its bytes.
fn junk_model(a: &Server, size: usize) -> (String, String, Vec<u8>) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let layer: Vec<u8> = (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let config = br#"{"model_format":"gguf","model_family":"junk"}"#.to_vec();
    let digest = |b: &[u8]| format!("sha256:{}", crate::harness::sha256_hex(b));
    for bytes in [&layer, &config] {
        std::fs::write(blob_path(&a.models, &digest(bytes)), bytes).expect("write blob");
    }
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                   "digest": digest(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.ollama.image.model",
                    "digest": digest(&layer), "size": layer.len()}],
    });
    let dir = a.models.join("manifests/registry.ollama.ai/library/junk");
    std::fs::create_dir_all(&dir).expect("manifest dir");
    std::fs::write(dir.join("latest"), manifest.to_string()).expect("manifest");
    (
        format!("{}/library/junk:latest", host(a)),
        digest(&layer),
        layer,
    )
}

#[test]
fn parted_pull_copies_the_model_byte_for_byte() {
    let a = source();
    // 16 MB parts: the 253 MB weights come in 16 parts, the small layers
    // as one stream each.
    let b = Server::start_with(&[("HEARTH_PULL_PART_SIZE", "16MB")]);
    let name = format!("{}/library/gemma3:270m", host(&a));
    let lines = b.stream_success("/api/pull", json!({"model": name, "insecure": true}));
    let a_manifest = manifest_path(&a.models, "registry.ollama.ai");
    assert_eq!(
        std::fs::read(manifest_path(&b.models, host(&a))).expect("B manifest"),
        std::fs::read(&a_manifest).expect("A manifest")
    );
    for d in digests(&a_manifest) {
        assert_eq!(sha256_file(&blob_path(&b.models, &d)), d, "B's blob {d}");
        assert!(!partial(&b.models, &d).exists());
        assert!(!sidecar(&b.models, &d).exists());
        // Progress summed over parts only grows, and ends at the total.
        let done = completions(&lines, &d);
        assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
        let size = std::fs::metadata(blob_path(&b.models, &d))
            .expect("blob")
            .len();
        assert_eq!(done.last().copied(), Some(size));
    }
    let st = statuses(&lines);
    let verify = st
        .iter()
        .position(|s| s == "verifying sha256 digest")
        .expect("verifying line");
    assert!(st[verify..].iter().all(|s| !s.starts_with("pulling ")));
}

#[test]
fn parted_pull_resumes_only_the_missing_parts() {
    let a = Server::start_with(&[("HEARTH_SERVE_REGISTRY", "1")]);
    let size = 40_000_000;
    let (name, layer, bytes) = junk_model(&a, size);
    // 4 MB minimum parts: 40 MB / 16 is less, so ten 4 MB parts.
    let b = Server::start_with(&[("HEARTH_PULL_PART_SIZE", "4MB")]);
    // What an interrupted parted pull leaves: the sized partial file with
    // parts 0 and 2 complete, 1 half done, the rest empty, and its sidecar.
    let part = 4_000_000usize;
    let mut file = vec![0u8; size];
    let mut completed = vec![0u64; 10];
    for (i, len) in [(0usize, part), (1, part / 2), (2, part)] {
        file[i * part..i * part + len].copy_from_slice(&bytes[i * part..i * part + len]);
        completed[i] = len as u64;
    }
    std::fs::write(partial(&b.models, &layer), &file).expect("partial");
    let record = json!({"size": size, "part_size": part, "completed": completed});
    std::fs::write(sidecar(&b.models, &layer), record.to_string()).expect("sidecar");

    let lines = b.stream_success("/api/pull", json!({"model": name, "insecure": true}));
    let done = completions(&lines, &layer);
    assert_eq!(done.first().copied(), Some(10_000_000), "{done:?}");
    assert_eq!(
        std::fs::read(blob_path(&b.models, &layer)).expect("blob"),
        bytes
    );
    assert!(!partial(&b.models, &layer).exists());
    assert!(!sidecar(&b.models, &layer).exists());
}

#[test]
fn parted_pull_resumes_after_the_server_is_killed() {
    let a = source();
    let env = [("HEARTH_PULL_PART_SIZE", "16MB")];
    let mut b = Server::start_with(&env);
    let name = format!("{}/library/gemma3:270m", host(&a));
    let model = digests(&manifest_path(&a.models, "registry.ollama.ai"))[0].clone();
    let total = std::fs::metadata(gemma()).expect("gemma").len();
    // Read the stream until the weights are partly there, then kill B.
    let resp = ureq::post(&b.url("/api/pull"))
        .send_json(json!({"model": name, "insecure": true}))
        .expect("pull");
    let mut seen = 0;
    for line in BufReader::new(resp.into_reader()).lines() {
        let Ok(line) = line else { break };
        let v: Value = serde_json::from_str(&line).expect("json line");
        if v["digest"] == model.as_str() {
            seen = v["completed"].as_u64().unwrap_or(0);
            if seen > 0 {
                break;
            }
        }
    }
    b.kill9();
    if seen >= total {
        // Loopback was faster than the progress ticks: nothing to resume.
        eprintln!("the weights arrived before the first progress line; resume not exercised");
        return;
    }
    // Every reported byte was saved first, so the sidecar holds at least as much.
    let record: Value =
        serde_json::from_slice(&std::fs::read(sidecar(&b.models, &model)).expect("sidecar"))
            .expect("sidecar json");
    let saved: u64 = record["completed"]
        .as_array()
        .expect("completed")
        .iter()
        .filter_map(Value::as_u64)
        .sum();
    assert!(saved >= seen && saved < total, "{saved} {seen}");
    assert_eq!(
        std::fs::metadata(partial(&b.models, &model))
            .expect("partial")
            .len(),
        total
    );

    let b2 = Server::start_in(&b.models, &env);
    let lines = b2.stream_success("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(completions(&lines, &model).first().copied(), Some(saved));
    assert_eq!(sha256_file(&blob_path(&b.models, &model)), model);
    assert!(!partial(&b.models, &model).exists());
    assert!(!sidecar(&b.models, &model).exists());
}

#[test]
fn parted_pull_rejects_a_corrupt_source() {
    let a = Server::start_with(&[("HEARTH_SERVE_REGISTRY", "1")]);
    let (name, layer, mut bytes) = junk_model(&a, 20_000_000);
    // Same length, one byte changed: only the digest check can notice.
    bytes[12_345_678] ^= 0xff;
    std::fs::write(blob_path(&a.models, &layer), &bytes).expect("corrupt");
    let b = Server::start_with(&[("HEARTH_PULL_PART_SIZE", "2MB")]);
    let (status, lines) = b.stream("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 200);
    let err = lines
        .last()
        .and_then(|l| l["error"].as_str())
        .unwrap_or_default();
    let want = format!("digest mismatch, file must be downloaded again: want {layer}, got sha256:");
    assert!(err.starts_with(&want), "{lines:?}");
    assert!(!blob_path(&b.models, &layer).exists());
    assert!(!partial(&b.models, &layer).exists());
    assert!(!sidecar(&b.models, &layer).exists());
    assert!(!b
        .models
        .join("manifests")
        .join(host(&a))
        .join("library/junk/latest")
        .exists());
}

/// A registry on 127.0.0.1 that answers every request with `answer(path)`
/// (a whole HTTP response); returns its `host:port`.
fn fake_registry(answer: impl Fn(&str) -> String + Send + 'static) -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let mut reader = std::io::BufReader::new(conn.try_clone().expect("clone"));
            let mut line = String::new();
            if std::io::BufRead::read_line(&mut reader, &mut line).is_err() {
                continue;
            }
            // Drain the headers.
            let mut h = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let _ = std::io::Write::write_all(&mut conn, answer(&path).as_bytes());
        }
    });
    addr
}

fn redirect_to(location: &str) -> String {
    format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
}

#[test]
fn pulls_follow_only_safe_redirects_and_echo_no_error_bodies() {
    let b = Server::start();
    let pull = |host: &str| {
        b.post(
            "/api/pull",
            json!({"model": format!("{host}/library/m:latest"), "insecure": true, "stream": false}),
        )
    };
    // To plain http on another host: refused, not followed.
    let elsewhere =
        fake_registry(|_| redirect_to("http://127.0.0.2:9/v2/library/m/manifests/latest"));
    let (status, body) = pull(&elsewhere);
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("refusing a redirect to 127.0.0.2:9")),
        "{body}"
    );
    // On the same host, followed, at most five times.
    let looping = fake_registry(|path| redirect_to(&format!("{path}x")));
    let (status, body) = pull(&looping);
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("too many redirects")),
        "{body}"
    );
    // An error body comes back as one short line, nothing more.
    let page = format!(
        "upstream says no\n{}\nsecret-internal-detail",
        "x".repeat(10_000)
    );
    let noisy = fake_registry(move |_| {
        format!(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
            page.len()
        )
    });
    let (status, body) = pull(&noisy);
    assert_eq!(status, 500, "{body}");
    let e = body["error"].as_str().unwrap_or_default();
    assert!(e.contains("upstream says no"), "{e}");
    assert!(
        !e.contains("secret-internal-detail") && e.len() < 300,
        "{e}"
    );
}

#[test]
fn pulls_from_a_keyed_box_need_its_key() {
    let a = Server::start_with(&[
        ("HEARTH_SERVE_REGISTRY", "1"),
        ("HEARTH_API_KEYS", "box-a-key-91c3"),
    ]);
    a.create_linked("gemma3:270m", &gemma(), json!({}));
    let name = format!("{}/library/gemma3:270m", host(&a));
    // Without a key for box A, its registry refuses.
    let b = Server::start();
    let (status, body) = b.post(
        "/api/pull",
        json!({"model": name, "insecure": true, "stream": false}),
    );
    assert_eq!(status, 401, "{body}");
    // With HEARTH_REGISTRY_KEYS naming A's key, the pull goes through.
    let keys = format!("{}=box-a-key-91c3", host(&a));
    let c = Server::start_with(&[("HEARTH_REGISTRY_KEYS", &keys)]);
    let (status, body) = c.post(
        "/api/pull",
        json!({"model": name, "insecure": true, "stream": false}),
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "success");
    assert!(!c.log().join("\n").contains("box-a-key-91c3"));
}

#[test]
fn hostile_manifest_sizes_are_refused_before_anything_is_allocated() {
    let b = Server::start();
    let pull_with = |size: u64| {
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": format!("sha256:{}", "1".repeat(64)), "size": 2},
            "layers": [{"mediaType": "application/vnd.ollama.image.model",
                        "digest": format!("sha256:{}", "2".repeat(64)), "size": size}],
        })
        .to_string();
        let host = fake_registry(move |_| {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.docker.distribution.manifest.v2+json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{manifest}",
                manifest.len()
            )
        });
        let started = Instant::now();
        let answer = b.post(
            "/api/pull",
            json!({"model": format!("{host}/library/m:latest"), "insecure": true, "stream": false}),
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        answer
    };
    // 10^18 bytes: not a model file.
    let (status, body) = pull_with(1_000_000_000_000_000_000);
    assert_eq!(status, 500, "{body}");
    assert!(
        body["error"].as_str().is_some_and(|e| e.contains("claims")),
        "{body}"
    );
    // 3 TiB: plausible, but more than the disk holds, with no budget set.
    let (status, body) = pull_with(3 << 40);
    assert_eq!(status, 507, "{body}");
    // Nothing was left behind.
    assert!(
        std::fs::read_dir(b.models.join("blobs"))
            .map(|d| d.count())
            .unwrap_or(0)
            == 0
    );
}
