//! Safetensors import and embeddings: all-MiniLM-L6-v2 is uploaded file by
//! file, converted to GGUF by the server, and must embed like
//! sentence-transformers.

use std::path::Path;

use serde_json::{json, Value};

use crate::harness::{inference_lock, models_dir, Server};

const REFERENCE: &str = include_str!("../src/convert/testdata/minilm-reference.json");

/// The files of all-MiniLM-L6-v2 that a create uploads.
const MINILM_FILES: [&str; 7] = [
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "model.safetensors",
    "1_Pooling/config.json",
];

/// Bytes of the MiniLM files a create uploads.
fn uploads_size(dir: &Path) -> u64 {
    MINILM_FILES
        .iter()
        .map(|f| {
            std::fs::metadata(dir.join(f))
                .expect("test model file")
                .len()
        })
        .sum()
}

/// Uploads every file of a model directory and creates a model from them.
fn create_from_dir(s: &Server, name: &str, dir: &Path) -> (u16, Vec<Value>) {
    let mut files = serde_json::Map::new();
    for rel in MINILM_FILES {
        let digest = s.upload_file(&dir.join(rel));
        files.insert(rel.to_string(), Value::String(digest));
    }
    s.stream("/api/create", json!({"model": name, "files": files}))
}

/// A Safetensors create whose conversion runs into the disk budget is a
/// 507 (the store's refusal), leaves no model and no half-written blob,
/// and keeps the uploaded files.
#[test]
fn safetensors_create_over_the_disk_budget_is_507() {
    let dir = models_dir().join("all-minilm-l6-v2");
    let uploads = uploads_size(&dir);
    // The uploads fit; their 46 MB GGUF conversion does not.
    let budget = (uploads + 10_000_000).to_string();
    let s = Server::start_with(&[("HEARTH_MAX_DISK", budget.as_str())]);
    let mut map = serde_json::Map::new();
    for rel in MINILM_FILES {
        map.insert(
            rel.to_string(),
            Value::String(s.upload_file(&dir.join(rel))),
        );
    }
    let before = crate::harness::blob_names(&s.models);
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "minilm", "files": map, "stream": false}),
    );
    assert_eq!(status, 507, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("not enough space")),
        "{v}"
    );
    assert_eq!(s.get("/api/tags"), (200, json!({"models": []})));
    assert_eq!(crate::harness::blob_names(&s.models), before);
    assert!(std::fs::read_dir(s.models.join(".hearth-tmp"))
        .expect("tmp")
        .next()
        .is_none());
}

/// Quantizing writes its output outside the blob writers; it holds the
/// output's expected size in the disk budget first, so a quantization that
/// cannot fit is a 507 before the quantizer writes a byte.
#[test]
fn quantizing_over_the_disk_budget_is_refused_before_it_writes() {
    let _lock = inference_lock();
    let dir = models_dir().join("all-minilm-l6-v2");
    let uploads = uploads_size(&dir);
    // The size of the F16 conversion, from an unbudgeted server.
    let f16 = {
        let s = Server::start();
        let (status, lines) = create_from_dir(&s, "minilm", &dir);
        assert_eq!(status, 200, "{lines:?}");
        let (status, v) = s.post("/api/show", json!({"model": "minilm"}));
        assert_eq!(status, 200, "{v}");
        let manifest = std::fs::read(
            s.models
                .join("manifests/registry.ollama.ai/library/minilm/latest"),
        )
        .expect("manifest");
        let manifest: Value = serde_json::from_slice(&manifest).expect("manifest JSON");
        manifest["layers"]
            .as_array()
            .and_then(|ls| {
                ls.iter()
                    .find(|l| l["mediaType"] == "application/vnd.ollama.image.model")
            })
            .and_then(|l| l["size"].as_u64())
            .expect("weights layer")
    };
    // Uploads and conversion fit; the Q8_0 copy (about half of F16) does not.
    let budget = uploads + f16 + 5_000_000;
    let s = Server::start_with(&[("HEARTH_MAX_DISK", budget.to_string().as_str())]);
    let mut files = serde_json::Map::new();
    for rel in MINILM_FILES {
        files.insert(
            rel.to_string(),
            Value::String(s.upload_file(&dir.join(rel))),
        );
    }
    let (status, lines) = s.stream(
        "/api/create",
        json!({"model": "minilm:q8", "files": files, "quantize": "q8_0"}),
    );
    assert_eq!(status, 200, "{lines:?}");
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert!(
        !statuses.iter().any(|s| s.starts_with("quantizing")),
        "the quantizer started: {lines:?}"
    );
    let error = lines
        .last()
        .and_then(|l| l["error"].as_str())
        .unwrap_or_default();
    assert!(error.contains("not enough space"), "{lines:?}");
    assert!(std::fs::read_dir(s.models.join(".hearth-tmp"))
        .expect("tmp")
        .next()
        .is_none());
    let used: u64 = std::fs::read_dir(s.models.join("blobs"))
        .expect("blobs")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        used <= budget,
        "{used} bytes of blobs over a budget of {budget}"
    );
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (na * nb)
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

#[test]
fn minilm_from_safetensors_matches_sentence_transformers() {
    let _lock = inference_lock();
    let s = Server::start();
    let (status, lines) = create_from_dir(&s, "minilm", &models_dir().join("all-minilm-l6-v2"));
    assert_eq!(status, 200);
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert!(statuses.contains(&"converting model"), "{lines:?}");
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("creating new layer sha256:")),
        "{statuses:?}"
    );
    assert_eq!(statuses.last(), Some(&"success"), "{lines:?}");

    let (_, show) = s.post("/api/show", json!({"model": "minilm"}));
    assert_eq!(show["capabilities"], json!(["embedding"]));
    assert_eq!(show["details"]["family"], "bert");
    assert_eq!(show["details"]["quantization_level"], "F16");

    let reference: Value = serde_json::from_str(REFERENCE).expect("fixture");
    let sentences = reference["sentences"].as_array().expect("sentences");
    let inputs: Vec<&str> = sentences
        .iter()
        .filter_map(|s| s["input"].as_str())
        .collect();
    let (status, v) = s.post("/api/embed", json!({"model": "minilm", "input": inputs}));
    assert_eq!(status, 200, "{v}");
    let got = v["embeddings"].as_array().expect("embeddings");
    assert_eq!(got.len(), inputs.len());
    for (sentence, vector) in sentences.iter().zip(got) {
        let c = cosine(&floats(vector), &floats(&sentence["embedding"]));
        assert!(c >= 0.999, "{}: cosine {c}", sentence["input"]);
        let norm: f64 = floats(vector).iter().map(|x| x * x).sum::<f64>().sqrt();
        assert!((norm - 1.0).abs() < 1e-3, "unit length, got {norm}");
    }
    let expected_tokens: u64 = sentences
        .iter()
        .filter_map(|s| s["token_ids"].as_array())
        .map(|t| t.len() as u64)
        .sum();
    assert_eq!(v["prompt_eval_count"].as_u64(), Some(expected_tokens));
    assert!(v["total_duration"].as_u64().is_some_and(|n| n > 0));

    // The legacy route returns the same unit vector.
    let (status, legacy) = s.post(
        "/api/embeddings",
        json!({"model": "minilm", "prompt": inputs[0]}),
    );
    assert_eq!(status, 200);
    let c = cosine(&floats(&legacy["embedding"]), &floats(&got[0]));
    assert!(c > 0.99999, "legacy and current differ: {c}");

    // The OpenAI route gives the same vectors, as floats or base64.
    let (status, oai) = s.post(
        "/v1/embeddings",
        json!({"model": "minilm", "input": [inputs[0], inputs[1]]}),
    );
    assert_eq!(status, 200, "{oai}");
    assert_eq!(oai["object"], "list");
    assert_eq!(oai["data"][1]["index"], 1);
    assert!(cosine(&floats(&oai["data"][0]["embedding"]), &floats(&got[0])) > 0.99999);
    let (_, b64) = s.post(
        "/v1/embeddings",
        json!({"model": "minilm", "input": "hello", "encoding_format": "base64"}),
    );
    // 384 float32s are 1536 bytes, 2048 base64 characters.
    assert_eq!(
        b64["data"][0]["embedding"].as_str().map(str::len),
        Some(2048)
    );
    let (status, bad) = s.post("/v1/embeddings", json!({"model": "minilm", "input": []}));
    assert_eq!(
        (status, bad["error"]["message"].clone()),
        (400, json!("invalid input"))
    );

    // dimensions cuts and renormalises.
    let (_, short) = s.post(
        "/api/embed",
        json!({"model": "minilm", "input": "hello", "dimensions": 8}),
    );
    assert_eq!(short["embeddings"][0].as_array().map(Vec::len), Some(8));

    // Too long with truncate:false is a 400; with truncation it works.
    let long = "word ".repeat(2000);
    let (status, v) = s.post(
        "/api/embed",
        json!({"model": "minilm", "input": long, "truncate": false}),
    );
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "the input length exceeds the context length"})
        )
    );
    let (status, _) = s.post("/api/embed", json!({"model": "minilm", "input": long}));
    assert_eq!(status, 200);

    // Empty input loads the model and returns no vectors.
    assert_eq!(
        s.post("/api/embed", json!({"model": "minilm", "input": ""})),
        (200, json!({"model": "minilm", "embeddings": []}))
    );
    assert_eq!(
        s.post("/api/embeddings", json!({"model": "minilm", "prompt": ""})),
        (200, json!({"embedding": []}))
    );

    // An embedding model cannot generate.
    assert_eq!(
        s.post("/api/generate", json!({"model": "minilm", "prompt": "hi"})),
        (
            400,
            json!({"error": "\"minilm\" does not support generate"})
        )
    );
    assert_eq!(
        s.post("/api/embed", json!({"model": "ghost", "input": "x"})),
        (
            404,
            json!({"error": "model \"ghost\" not found, try pulling it first"})
        )
    );
    assert_eq!(
        s.post("/api/embed", json!({"model": "minilm", "input": [1, 2]}))
            .0,
        400
    );
}

#[test]
fn unsupported_architecture_is_named() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("config.json"),
        r#"{"architectures": ["FooModel"], "model_type": "foo"}"#,
    )
    .expect("config");
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ",
    )
    .expect("weights");
    let mut files = serde_json::Map::new();
    for rel in ["config.json", "model.safetensors"] {
        files.insert(
            rel.into(),
            Value::String(s.upload_file(&dir.path().join(rel))),
        );
    }
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "foo", "files": files, "stream": false}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"].as_str().is_some_and(|e| e.contains("FooModel")),
        "{v}"
    );
    assert_eq!(s.get("/api/tags"), (200, json!({"models": []})));
}

#[test]
fn quantize_on_create() {
    let _lock = inference_lock();
    let s = Server::start();
    let dir = models_dir().join("all-minilm-l6-v2");
    let mut files = serde_json::Map::new();
    for rel in [
        "config.json",
        "tokenizer.json",
        "modules.json",
        "model.safetensors",
        "1_Pooling/config.json",
    ] {
        files.insert(
            rel.to_string(),
            Value::String(s.upload_file(&dir.join(rel))),
        );
    }
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "bad", "files": files, "quantize": "q3_nope", "stream": false}),
    );
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "unsupported quantization type q3_nope - supported types are F32, F16, Q4_K_S, Q4_K_M, Q8_0"})
        )
    );
    let (status, lines) = s.stream(
        "/api/create",
        json!({"model": "minilm:q8", "files": files, "quantize": "q8_0"}),
    );
    assert_eq!(status, 200);
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert!(
        statuses.contains(&"quantizing F16 model to Q8_0"),
        "{lines:?}"
    );
    assert_eq!(statuses.last(), Some(&"success"), "{lines:?}");
    // Progress counts over the source's size, ending complete.
    let counts: Vec<(u64, u64)> = lines
        .iter()
        .filter(|l| l["status"] == "quantizing F16 model to Q8_0")
        .filter_map(|l| Some((l["completed"].as_u64()?, l["total"].as_u64()?)))
        .collect();
    let (done, total) = *counts.last().expect("quantize progress");
    assert!(total > 40_000_000 && done == total, "{counts:?}");
    assert!(counts.windows(2).all(|w| w[0].0 <= w[1].0), "{counts:?}");
    let (_, show) = s.post("/api/show", json!({"model": "minilm:q8"}));
    assert_eq!(show["details"]["quantization_level"], "Q8_0");
    let (_, tags) = s.get("/api/tags");
    let size = tags["models"][0]["size"].as_u64().unwrap_or(0);
    assert!(
        size > 10_000_000 && size < 40_000_000,
        "Q8_0 MiniLM is smaller than F16: {size}"
    );

    // Quantizing from an existing F16 model (not files) makes a Q8_0
    // model too, and tags and show say so.
    let (status, lines) = s.stream(
        "/api/create",
        json!({"model": "minilm:f16", "files": files}),
    );
    assert_eq!(status, 200, "{lines:?}");
    let (status, lines) = s.stream(
        "/api/create",
        json!({"model": "minilm:q8-from", "from": "minilm:f16", "quantize": "q8_0"}),
    );
    assert_eq!(status, 200);
    assert!(
        lines
            .iter()
            .any(|l| l["status"] == "quantizing F16 model to Q8_0"),
        "{lines:?}"
    );
    let (_, show) = s.post("/api/show", json!({"model": "minilm:q8-from"}));
    assert_eq!(show["details"]["quantization_level"], "Q8_0");
    let (_, tags) = s.get("/api/tags");
    let entry = tags["models"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["name"] == "minilm:q8-from"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["details"]["quantization_level"], "Q8_0", "{tags}");
    // A quantized model cannot be the source, from files or from a model.
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "again", "from": "minilm:q8", "quantize": "q4_K_M", "stream": false}),
    );
    assert_eq!(status, 400, "{v}");

    let reference: Value = serde_json::from_str(REFERENCE).expect("fixture");
    let first = &reference["sentences"][0];
    let (status, v) = s.post(
        "/api/embed",
        json!({"model": "minilm:q8", "input": first["input"]}),
    );
    assert_eq!(status, 200, "{v}");
    let c = cosine(&floats(&v["embeddings"][0]), &floats(&first["embedding"]));
    assert!(c > 0.99, "quantized embedding drifted: {c}");

    // An already quantized model cannot be quantized again.
    let gguf = s.link_blob(&crate::harness::gemma());
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "g", "files": {"g.gguf": gguf}, "quantize": "q8_0", "stream": false}),
    );
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "quantization is only supported for F16, BF16 and F32 models"})
        )
    );
}
