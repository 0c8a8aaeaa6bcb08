//! The disk budget: unreferenced blobs are evicted oldest-first, referenced
//! ones never, and a write that cannot fit is refused cleanly.

use serde_json::json;

use crate::harness::{blob_names, Server};

fn blob(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| seed.wrapping_add((i % 251) as u8))
        .collect()
}

#[test]
fn budget_evicts_and_refuses() {
    // 3 MB budget, in bytes as HEARTH_MAX_DISK reads them.
    let s = Server::start_with(&[("HEARTH_MAX_DISK", "3MB")]);
    let mb = 1_000_000;
    let (st, _, old_loose) = s.upload_bytes(&blob(1, mb));
    assert_eq!(st, 201);
    // Eviction goes by modification time; the test sets the blobs' ages
    // itself instead of sleeping between uploads.
    aged(&s, &old_loose, 300);
    // A referenced blob: a tiny GGUF that a model is created from.
    let gguf = tiny_gguf();
    let (st, _, gguf_digest) = s.upload_bytes(&gguf);
    assert_eq!(st, 201);
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "tiny", "files": {"t.gguf": gguf_digest}, "stream": false}),
    );
    assert_eq!(status, 200, "{v}");
    aged(&s, &gguf_digest, 200);

    let (st, _, second_loose) = s.upload_bytes(&blob(2, mb));
    assert_eq!(st, 201);
    aged(&s, &second_loose, 100);

    // 2 MB + a bit used. Another 1.5 MB only fits by evicting the oldest unreferenced blob.
    let (st, body, newest) = s.upload_bytes(&blob(3, 1_500_000));
    assert_eq!(st, 201, "{body}");
    let names = blob_names(&s.models);
    assert!(
        !names.contains(&old_loose.replace(':', "-")),
        "oldest unreferenced blob evicted: {names:?}"
    );
    assert!(names.contains(&newest.replace(':', "-")));
    assert!(
        names.contains(&second_loose.replace(':', "-")),
        "only as much as needed is evicted"
    );
    assert!(
        names.contains(&gguf_digest.replace(':', "-")),
        "referenced blob kept"
    );

    // 3.5 MB cannot fit even after evicting everything unreferenced: a clean 507.
    let before = blob_names(&s.models);
    let (st, body, _) = s.upload_bytes(&blob(4, 3_500_000));
    assert_eq!(st, 507, "{body}");
    let err: serde_json::Value = serde_json::from_str(&body).expect("json error");
    assert!(
        err["error"]
            .as_str()
            .is_some_and(|e| e.contains("not enough space")),
        "{err}"
    );
    assert_eq!(
        blob_names(&s.models),
        before,
        "a refused write touches nothing"
    );
    assert!(std::fs::read_dir(s.models.join(".hearth-tmp"))
        .expect("tmp")
        .next()
        .is_none());
    let (status, show) = s.post("/api/show", json!({"model": "tiny"}));
    assert_eq!(status, 200, "{show}");
}

/// Sets the modification time of blob `digest` to `secs` seconds ago.
fn aged(s: &Server, digest: &str, secs: u64) {
    let path = s.models.join("blobs").join(digest.replace(':', "-"));
    let file = std::fs::File::options()
        .write(true)
        .open(&path)
        .expect("open blob");
    let when = std::time::SystemTime::now() - std::time::Duration::from_secs(secs);
    file.set_modified(when).expect("set mtime");
}

/// A minimal valid GGUF (no tensors) with an architecture key.
fn tiny_gguf() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"GGUF");
    b.extend_from_slice(&3u32.to_le_bytes());
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(&1u64.to_le_bytes());
    let key = b"general.architecture";
    b.extend_from_slice(&(key.len() as u64).to_le_bytes());
    b.extend_from_slice(key);
    b.extend_from_slice(&8u32.to_le_bytes());
    let val = b"llama";
    b.extend_from_slice(&(val.len() as u64).to_le_bytes());
    b.extend_from_slice(val);
    b
}
