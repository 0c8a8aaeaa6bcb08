//! Registry support, black-box: one server serves its models under `/v2/`
//! with `HEARTH_SERVE_REGISTRY=1`, another pulls from it or pushes to it
//! over loopback with `insecure`, and the tests compare the two stores'
//! files. Pulls and pushes run no inference, so these tests do not take the
//! inference lock.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

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

    // A second pull downloads nothing: every layer is complete at once.
    let (status, again) = b.stream("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 200);
    let layer_lines: Vec<&Value> = again.iter().filter(|l| l.get("digest").is_some()).collect();
    assert_eq!(layer_lines.len(), all.len(), "{again:?}");
    assert!(layer_lines.iter().all(|l| l["completed"] == l["total"]));

    // Not streamed: one success object.
    let (status, one) = b.post(
        "/api/pull",
        json!({"name": name, "insecure": true, "stream": false}),
    );
    assert_eq!((status, one), (200, json!({"status": "success"})));

    // The CLI streams the same pull as status lines.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["pull", "--insecure", &name])
        .env("OLLAMA_HOST", host(&b))
        .output()
        .expect("run hearth pull");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("pulling manifest\n"), "{stdout}");
    assert!(stdout.trim_end().ends_with("success"), "{stdout}");
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

    let (status, lines) = b.stream("/api/pull", json!({"model": name, "insecure": true}));
    assert_eq!(status, 200);
    assert_eq!(
        lines.last().and_then(|l| l["status"].as_str()),
        Some("success"),
        "{lines:?}"
    );
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

    // A second push uploads nothing: every blob is complete at once.
    let (status, again) = a.stream("/api/push", json!({"model": name, "insecure": true}));
    assert_eq!(status, 200);
    let layer_lines: Vec<&Value> = again.iter().filter(|l| l.get("digest").is_some()).collect();
    assert_eq!(layer_lines.len(), all.len(), "{again:?}");
    assert!(layer_lines.iter().all(|l| l["completed"] == l["total"]));

    // Not streamed: one success object.
    let (status, one) = a.post(
        "/api/push",
        json!({"name": name, "insecure": true, "stream": false}),
    );
    assert_eq!((status, one), (200, json!({"status": "success"})));

    // The CLI streams the same push as status lines.
    let out = Command::new(env!("CARGO_BIN_EXE_hearth"))
        .args(["push", "--insecure", &name])
        .env("OLLAMA_HOST", host(&a))
        .output()
        .expect("run hearth push");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("retrieving manifest\n"), "{stdout}");
    assert!(stdout.trim_end().ends_with("success"), "{stdout}");
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
}
