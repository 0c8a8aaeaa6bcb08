//! Registry support, black-box: one server (A) serves its models under
//! `/v2/` with `HEARTH_SERVE_REGISTRY=1`, another (B) pulls them over
//! loopback with `insecure`, and the tests compare the two stores' files.
//! Pulls run no inference, so these tests do not take the inference lock.

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

    // The default registry is out of reach from a test box: a clean error, soon.
    let started = Instant::now();
    let (status, body) = b.post(
        "/api/pull",
        json!({"model": "gemma3:270m", "stream": false}),
    );
    assert_eq!(status, 500, "{body}");
    assert!(body["error"]
        .as_str()
        .is_some_and(|e| e.starts_with("pull model manifest: ")));
    assert!(started.elapsed() < Duration::from_secs(20));

    // Push is refused plainly.
    let (status, body) = b.post("/api/push", json!({"model": "x/y"}));
    assert_eq!(status, 501);
    assert_eq!(body["error"], "push is not supported yet");
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
