//! The basics every client relies on: liveness, version, errors, CORS, shutdown.

use std::io::{Read, Write};
use std::net::TcpStream;

use serde_json::json;

use crate::harness::Server;

#[test]
fn root_and_version() {
    let s = Server::start();
    assert_eq!(s.call("GET", "/", None), (200, "Ollama is running".into()));
    assert_eq!(s.call("HEAD", "/", None).0, 200);
    let (status, v) = s.get("/api/version");
    assert_eq!(status, 200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(s.get("/api/tags"), (200, json!({"models": []})));
}

#[test]
fn error_statuses_and_bodies() {
    let s = Server::start();
    assert_eq!(
        s.call("GET", "/nope", None),
        (404, "404 page not found".into())
    );
    assert_eq!(s.call("GET", "/api/show", None).0, 405);
    assert_eq!(s.call("POST", "/api/tags", Some(&json!({}))).0, 405);
    let (status, body) = s.send_bytes("POST", "/api/show", b"{not json");
    assert_eq!(status, 400);
    let v: serde_json::Value = serde_json::from_str(&body).expect("json error body");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    assert_eq!(
        s.send_bytes("POST", "/api/show", b""),
        (400, json!({"error": "missing request body"}).to_string())
    );
    assert_eq!(
        s.post("/api/show", json!({})),
        (400, json!({"error": "model is required"}))
    );
    assert_eq!(
        s.post("/api/show", json!({"model": "ghost"})),
        (404, json!({"error": "model 'ghost:latest' not found"}))
    );
    assert_eq!(
        s.call("DELETE", "/api/delete", Some(&json!({"model": "ghost"}))),
        (404, json!({"error": "model 'ghost' not found"}).to_string())
    );
    assert_eq!(
        s.post("/api/copy", json!({"source": "ghost", "destination": "x"})),
        (404, json!({"error": "model \"ghost\" not found"}))
    );
    assert_eq!(
        s.post("/api/create", json!({"model": "x"})),
        (
            400,
            json!({"error": "neither 'from' or 'files' was specified"})
        )
    );
}

#[test]
fn oversized_body_is_413() {
    let s = Server::start();
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut tcp = TcpStream::connect(&addr).expect("connect");
    let req = format!(
        "POST /api/show HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{{}}"
    );
    tcp.write_all(req.as_bytes()).expect("write");
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 512];
    let n = tcp.read(&mut buf).expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(head.contains("\"error\""), "{head}");
}

#[test]
fn cors() {
    let s = Server::start();
    let get = |origin: &str| {
        let r = ureq::get(&s.url("/api/version"))
            .set("Origin", origin)
            .call();
        match r {
            Ok(r) => (
                r.status(),
                r.header("access-control-allow-origin").map(str::to_string),
            ),
            Err(ureq::Error::Status(c, r)) => (
                c,
                r.header("access-control-allow-origin").map(str::to_string),
            ),
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(
        get("http://localhost:3000"),
        (200, Some("http://localhost:3000".into()))
    );
    assert_eq!(get("https://evil.example"), (403, None));
    let pre = ureq::request("OPTIONS", &s.url("/api/chat"))
        .set("Origin", "http://127.0.0.1:8080")
        .set("Access-Control-Request-Method", "POST")
        .call()
        .expect("preflight");
    assert_eq!(pre.status(), 204);
    assert!(pre
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST")));

    let open = Server::start_with(&[("OLLAMA_ORIGINS", "chrome-extension://*")]);
    let r = ureq::get(&open.url("/"))
        .set("Origin", "chrome-extension://abc")
        .call()
        .expect("allowed");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("chrome-extension://abc")
    );
}

#[test]
fn sigterm_exits_cleanly() {
    let mut s = Server::start();
    assert!(s.terminate(), "server did not exit on SIGTERM");
}
