//! Blob upload and existence, including crashes mid-upload.

use std::io::Write;
use std::net::TcpStream;

use serde_json::json;

use crate::harness::{blob_names, sha256_hex, Server};

#[test]
fn blob_cases() {
    let s = Server::start();
    let data = b"hello blobs".repeat(1000);
    let digest = format!("sha256:{}", sha256_hex(&data));
    assert_eq!(s.call("HEAD", &format!("/api/blobs/{digest}"), None).0, 404);

    // A body that does not hash to the digest is refused and leaves nothing behind.
    let (status, body) = s.send_bytes("POST", &format!("/api/blobs/{digest}"), b"something else");
    assert_eq!(status, 400);
    assert!(body.contains("digest mismatch"), "{body}");
    assert!(blob_names(&s.models).is_empty());

    let (status, _, d) = s.upload_bytes(&data);
    assert_eq!((status, d.as_str()), (201, digest.as_str()));
    let (status, _, _) = s.upload_bytes(&data);
    assert_eq!(status, 200, "an existing blob answers 200");
    assert_eq!(s.call("HEAD", &format!("/api/blobs/{digest}"), None).0, 200);
    let dash = digest.replace("sha256:", "sha256-");
    assert_eq!(s.call("HEAD", &format!("/api/blobs/{dash}"), None).0, 200);
    assert_eq!(
        std::fs::read(s.models.join("blobs").join(&dash)).expect("blob file"),
        data
    );

    let upper = format!("sha256:{}", sha256_hex(&data).to_uppercase());
    for bad in [
        upper.as_str(),
        "sha256:abc",
        "md5:0000",
        "sha256:../../etc/passwd",
        "sha256:%2e%2e",
    ] {
        let (status, body) = s.send_bytes("POST", &format!("/api/blobs/{bad}"), b"x");
        assert_eq!(
            (status, body),
            (400, json!({"error": "invalid digest format"}).to_string()),
            "{bad}"
        );
        assert_eq!(
            s.call("HEAD", &format!("/api/blobs/{bad}"), None).0,
            400,
            "{bad}"
        );
    }
    assert!(std::fs::read_dir(s.models.join(".hearth-tmp"))
        .expect("tmp")
        .next()
        .is_none());
}

/// A server killed with SIGKILL mid-upload leaves no visible blob, and the
/// next start cleans the temp area.
#[test]
fn kill9_during_upload() {
    let mut s = Server::start();
    let total: usize = 64 << 20;
    let digest = format!("sha256:{}", "ab".repeat(32));
    let addr = s.base.trim_start_matches("http://").to_string();
    let mut tcp = TcpStream::connect(&addr).expect("connect");
    write!(
        tcp,
        "POST /api/blobs/{digest} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {total}\r\n\r\n"
    )
    .expect("headers");
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..16 {
        tcp.write_all(&chunk).expect("body");
    }
    // Wait until the server has written part of the upload to its temp area.
    let tmp = s.models.join(".hearth-tmp");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::fs::read_dir(&tmp).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "upload never reached the temp area"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    s.kill9();
    assert!(
        blob_names(&s.models).is_empty(),
        "a half-written blob became visible"
    );

    let models = s.models.clone();
    let s2 = Server::start_in(&models, &[]);
    assert_eq!(
        std::fs::read_dir(&tmp).expect("tmp").count(),
        0,
        "leftovers not cleaned"
    );
    assert_eq!(
        s2.call("HEAD", &format!("/api/blobs/{digest}"), None).0,
        404
    );
    assert_eq!(s2.get("/api/tags"), (200, json!({"models": []})));
    drop(s);
}
