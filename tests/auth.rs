//! A box that is safe on a LAN: API keys with two roles, key rotation on
//! SIGHUP, read-only mode and the DNS-rebinding guard on LAN binds, all
//! against the real server on 127.0.0.1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::harness::{inference_lock, parse, wait_for, Server};

const ADMIN: &str = "adm-7c1f0b2e9d";
const ADMIN2: &str = "adm-second-5a";
const INFER: &str = "inf-93e2d4a8b1";

/// A request with the given key (or none): status, `WWW-Authenticate`, body.
fn call_as(
    s: &Server,
    key: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, Option<String>, String) {
    let mut req = ureq::request(method, &s.url(path)).timeout(Duration::from_secs(300));
    if let Some(k) = key {
        req = req.set("Authorization", &format!("Bearer {k}"));
    }
    let res = match body {
        Some(b) => req.send_string(&b.to_string()),
        None => req.call(),
    };
    let r = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("{method} {path}: {e}"),
    };
    let status = r.status();
    let challenge = r.header("WWW-Authenticate").map(str::to_string);
    (status, challenge, r.into_string().unwrap_or_default())
}

/// Every route that changes the store, with a body each accepts.
fn management_routes() -> Vec<(&'static str, String, Value)> {
    vec![
        (
            "POST",
            "/api/create".into(),
            json!({"model": "x", "from": "gemma3:270m"}),
        ),
        (
            "POST",
            "/api/copy".into(),
            json!({"source": "gemma3:270m", "destination": "y"}),
        ),
        (
            "DELETE",
            "/api/delete".into(),
            json!({"model": "gemma3:270m"}),
        ),
        ("POST", "/api/pull".into(), json!({"model": "x"})),
        ("POST", "/api/push".into(), json!({"model": "gemma3:270m"})),
        (
            "POST",
            format!("/api/blobs/sha256:{}", "0".repeat(64)),
            json!({}),
        ),
    ]
}

fn status_as(s: &Server, key: Option<&str>, method: &str, path: &str, body: Value) -> u16 {
    let body = (method != "GET" && method != "HEAD").then_some(&body);
    call_as(s, key, method, path, body).0
}

#[test]
fn keys_guard_every_kind_of_route() {
    let s = Server::start_with(&[
        ("HEARTH_API_KEYS", &format!("{ADMIN},{ADMIN2}")),
        ("HEARTH_INFERENCE_KEYS", INFER),
        ("OLLAMA_DEBUG", "1"),
    ]);
    s.create_gemma("gemma3:270m");

    // The exempt routes answer everyone.
    for (m, p) in [
        ("GET", "/"),
        ("HEAD", "/"),
        ("GET", "/api/version"),
        ("HEAD", "/api/version"),
    ] {
        assert_eq!(status_as(&s, None, m, p, json!({})), 200, "{m} {p}");
    }

    // No key or an unknown key: 401 on every other kind of route, with a
    // Bearer challenge and an error in the route's own shape.
    let routes = [
        ("GET", "/api/tags", json!({})),
        ("POST", "/api/show", json!({"model": "gemma3:270m"})),
        ("GET", "/api/ps", json!({})),
        ("POST", "/api/generate", json!({"model": "gemma3:270m"})),
        (
            "POST",
            "/api/create",
            json!({"model": "x", "from": "gemma3:270m"}),
        ),
        ("DELETE", "/api/delete", json!({"model": "gemma3:270m"})),
        ("POST", "/api/pull", json!({"model": "x"})),
        ("GET", "/v1/models", json!({})),
        ("GET", "/nope", json!({})),
    ];
    for key in [None, Some("wrong-key")] {
        for (m, p, body) in &routes {
            let body = (*m != "GET").then_some(body);
            let (status, challenge, text) = call_as(&s, key, m, p, body);
            assert_eq!(status, 401, "{key:?} {m} {p}: {text}");
            assert_eq!(challenge.as_deref(), Some("Bearer"), "{m} {p}");
            let v = parse(&text);
            if p.starts_with("/v1/") {
                assert_eq!(v["error"]["code"], "invalid_api_key", "{v}");
                assert!(v["error"]["message"].is_string(), "{v}");
            } else {
                assert!(
                    v["error"]
                        .as_str()
                        .is_some_and(|e| e.starts_with("unauthorized")),
                    "{v}"
                );
            }
        }
    }

    // An inference key runs and reads models, and nothing else.
    for (m, p, body) in [
        ("GET", "/api/tags", json!({})),
        ("POST", "/api/show", json!({"model": "gemma3:270m"})),
        ("GET", "/api/ps", json!({})),
        ("GET", "/v1/models", json!({})),
    ] {
        assert_eq!(status_as(&s, Some(INFER), m, p, body), 200, "{m} {p}");
    }
    {
        let _lock = inference_lock();
        let (status, _, text) = call_as(
            &s,
            Some(INFER),
            "POST",
            "/api/generate",
            Some(
                &json!({"model": "gemma3:270m", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
            ),
        );
        assert_eq!(status, 200, "{text}");
    }
    for (m, p, body) in management_routes() {
        let p = p.as_str();
        let (status, challenge, text) = call_as(&s, Some(INFER), m, p, Some(&body));
        assert_eq!(status, 403, "{m} {p}: {text}");
        assert!(challenge.is_none());
        assert!(parse(&text)["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("forbidden")));
    }
    assert_eq!(
        s.get("/api/tags").1["models"].as_array().map(Vec::len),
        Some(1)
    );

    // Either admin key does everything.
    let copy = json!({"source": "gemma3:270m", "destination": "mine:v1"});
    assert_eq!(status_as(&s, Some(ADMIN2), "POST", "/api/copy", copy), 200);
    let gone = json!({"model": "mine:v1"});
    assert_eq!(
        status_as(&s, Some(ADMIN), "DELETE", "/api/delete", gone),
        200
    );

    // No key, not even a refused one, reaches the log, at debug level.
    let log = s.log().join("\n");
    assert!(
        log.contains("API keys required: 2 admin, 1 inference"),
        "{log}"
    );
    for k in [ADMIN, ADMIN2, INFER, "wrong-key"] {
        assert!(!log.contains(k), "{k} in the log");
    }
}

fn hangup(s: &Server) {
    let ok = Command::new("kill")
        .args(["-HUP", &s.pid().to_string()])
        .status()
        .is_ok_and(|st| st.success());
    assert!(ok, "kill -HUP");
}

#[test]
fn a_key_file_rotates_on_sighup_and_a_bad_one_keeps_the_old_keys() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("keys");
    std::fs::write(&file, "# box keys\nold-admin-key\n").expect("write keys");
    let path = file.display().to_string();
    let s = Server::start_with(&[("HEARTH_API_KEYS_FILE", &path)]);
    assert_eq!(
        status_as(&s, Some("old-admin-key"), "GET", "/api/tags", json!({})),
        200
    );
    assert_eq!(status_as(&s, None, "GET", "/api/tags", json!({})), 401);

    std::fs::write(&file, "new-kiosk-key inference\nnew-admin-key admin\n").expect("rewrite");
    hangup(&s);
    wait_for("the new keys", || {
        status_as(&s, Some("new-kiosk-key"), "GET", "/api/tags", json!({})) == 200
    });
    assert_eq!(
        status_as(&s, Some("old-admin-key"), "GET", "/api/tags", json!({})),
        401
    );
    let copy = json!({"source": "a", "destination": "b"});
    assert_eq!(
        status_as(&s, Some("new-kiosk-key"), "POST", "/api/copy", copy.clone()),
        403
    );
    assert_eq!(
        status_as(&s, Some("new-admin-key"), "POST", "/api/copy", copy),
        404
    );

    // A file that does not parse keeps the keys in force, and says why.
    std::fs::write(&file, "new-admin-key operator\n").expect("rewrite");
    hangup(&s);
    wait_for("the refusal in the log", || {
        s.log().iter().any(|l| l.contains("API keys not reloaded"))
    });
    assert_eq!(
        status_as(&s, Some("new-kiosk-key"), "GET", "/api/tags", json!({})),
        200
    );
    assert!(!s.log().join("\n").contains("new-admin-key"));
}

#[test]
fn read_only_boxes_run_models_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    {
        let mut setup = Server::start_in(&models, &[]);
        setup.create_gemma("gemma3:270m");
        assert!(setup.terminate());
    }
    let s = Server::start_in(
        &models,
        &[("HEARTH_READ_ONLY", "1"), ("HEARTH_API_KEYS", ADMIN)],
    );
    for (m, p, body) in management_routes() {
        let p = p.as_str();
        // Refused for the admin key too.
        let (status, _, text) = call_as(&s, Some(ADMIN), m, p, Some(&body));
        assert_eq!(status, 403, "{m} {p}: {text}");
        assert!(text.contains("read-only"), "{text}");
    }
    let _lock = inference_lock();
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "Hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        s.get("/api/tags").1["models"].as_array().map(Vec::len),
        Some(1)
    );
}

/// A raw request with a chosen `Host` header; returns the status (0 when
/// no HTTP answer came, e.g. from a TLS port, which may also close the
/// connection before the request is written).
fn status_with_host(port: &str, host: &str) -> u16 {
    let mut conn = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let request = format!("GET /api/version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if conn.write_all(request.as_bytes()).is_err() {
        return 0;
    }
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn lan_binds_answer_only_names_the_box_goes_by() {
    let s = Server::start_with(&[
        ("OLLAMA_HOST", "0.0.0.0:0"),
        ("HEARTH_ALLOWED_HOSTS", "Box.Lan"),
    ]);
    let port = s.base.rsplit(':').next().unwrap_or("").to_string();
    // A rebound name is refused; IP literals, localhost and listed names pass.
    assert_eq!(status_with_host(&port, "evil.example"), 403);
    assert_eq!(
        status_with_host(&port, &format!("evil.example:{port}")),
        403
    );
    assert_eq!(status_with_host(&port, &format!("127.0.0.1:{port}")), 200);
    assert_eq!(status_with_host(&port, "192.168.1.20"), 200);
    assert_eq!(status_with_host(&port, "[::1]"), 200);
    assert_eq!(status_with_host(&port, "localhost"), 200);
    assert_eq!(status_with_host(&port, &format!("box.lan:{port}")), 200);
    let me = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let me = me.trim();
    if !me.is_empty() {
        assert_eq!(status_with_host(&port, me), 200);
        assert_eq!(status_with_host(&port, &format!("{me}.local")), 200);
    }
}

fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A private CA and a certificate it signs for 127.0.0.1 and localhost,
/// made with the `openssl` command in `dir`: (CA, certificate, key) paths.
fn private_ca_and_certificate(dir: &std::path::Path) -> (String, String, String) {
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509", "-days", "1", "-subj", "/CN=hearth test CA"];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    openssl(dir, &ca);
    let mut csr = vec!["req", "-new", "-subj", "/CN=hearth box"];
    csr.extend(ec);
    csr.extend(["-keyout", "box.key", "-out", "box.csr"]);
    openssl(dir, &csr);
    std::fs::write(
        dir.join("box.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n",
    )
    .expect("write extensions");
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "box.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "box.ext",
            "-out",
            "box.pem",
        ],
    );
    let path = |f: &str| dir.join(f).display().to_string();
    (path("ca.pem"), path("box.pem"), path("box.key"))
}

/// `hearth list` against `host` with extra environment.
fn cli_list(host: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.arg("list")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("OLLAMA_HOST", host);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run hearth list")
}

#[test]
fn https_with_a_certificate_and_a_cli_that_trusts_its_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = private_ca_and_certificate(dir.path());
    let s = Server::start_with(&[
        ("HEARTH_TLS_CERT", &cert),
        ("HEARTH_TLS_KEY", &key),
        ("HEARTH_API_KEYS", ADMIN),
    ]);
    assert!(
        s.log().iter().any(|l| l.contains("(https, version")),
        "{:?}",
        s.log()
    );
    let port = s.base.rsplit(':').next().unwrap_or("").to_string();
    let https = format!("https://127.0.0.1:{port}");
    // The CLI trusts the box's CA when told, and sends its key over TLS.
    let out = cli_list(&https, &[("HEARTH_TLS_CA", &ca), ("OLLAMA_API_KEY", ADMIN)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("NAME"));
    // Without the CA the certificate is not trusted.
    let out = cli_list(&https, &[("OLLAMA_API_KEY", ADMIN)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("HEARTH_TLS_CA"), "{err}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    assert_eq!(status_with_host(&port, "127.0.0.1"), 0);
}

#[test]
fn registry_reads_need_a_key_and_writes_an_admin_key() {
    let s = Server::start_with(&[
        ("HEARTH_SERVE_REGISTRY", "1"),
        ("HEARTH_API_KEYS", ADMIN),
        ("HEARTH_INFERENCE_KEYS", INFER),
    ]);
    let (status, _, text) = call_as(&s, None, "GET", "/v2/", None);
    assert_eq!(status, 401);
    assert_eq!(parse(&text)["errors"][0]["code"], "UNAUTHORIZED");
    assert_eq!(call_as(&s, Some(INFER), "GET", "/v2/", None).0, 200);
    let upload = "/v2/library/t/blobs/uploads/";
    let (status, _, text) = call_as(&s, Some(INFER), "POST", upload, Some(&json!({})));
    assert_eq!(status, 403);
    assert_eq!(parse(&text)["errors"][0]["code"], "DENIED");
    assert_eq!(
        call_as(&s, Some(ADMIN), "POST", upload, Some(&json!({}))).0,
        202
    );
}
