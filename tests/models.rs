//! Creating, listing, showing, copying and deleting models with the real
//! Gemma 3 270M GGUF.

use serde_json::{json, Value};

use crate::harness::{blob_names, gemma, sha256_hex, smollm, Server, GEMMA_TEMPLATE};

#[test]
fn create_tags_show_copy_delete() {
    let s = Server::start();
    let model_digest = s.create_gemma("gemma3:270m");

    let (status, tags) = s.get("/api/tags");
    assert_eq!(status, 200);
    let m = &tags["models"][0];
    assert_eq!(m["name"], "gemma3:270m");
    assert_eq!(m["model"], "gemma3:270m");
    assert_eq!(
        m["details"],
        json!({"parent_model": "", "format": "gguf", "family": "gemma3", "families": ["gemma3"],
               "parameter_size": "268.10M", "quantization_level": "Q4_K_M"})
    );
    let manifest_path = s
        .models
        .join("manifests/registry.ollama.ai/library/gemma3/270m");
    let manifest_bytes =
        std::fs::read(&manifest_path).expect("manifest on disk in Ollama's layout");
    assert_eq!(m["digest"], sha256_hex(&manifest_bytes));
    let manifest: Value = serde_json::from_slice(&manifest_bytes).expect("manifest json");
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        "application/vnd.ollama.image.model"
    );
    assert_eq!(manifest["layers"][0]["digest"], model_digest);
    let layer_sum: u64 = manifest["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .filter_map(|l| l["size"].as_u64())
        .sum();
    assert_eq!(
        m["size"].as_u64(),
        Some(layer_sum + manifest["config"]["size"].as_u64().unwrap_or(0))
    );

    let (status, show) = s.post("/api/show", json!({"model": "GEMMA3:270m"}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["template"], GEMMA_TEMPLATE);
    assert_eq!(show["model_info"]["general.architecture"], "gemma3");
    assert_eq!(show["model_info"]["gemma3.context_length"], 32768);
    assert_eq!(show["model_info"]["tokenizer.ggml.tokens"], json!([]));
    assert!(show["model_info"].get("general.name").is_none());
    assert_eq!(show["capabilities"], json!(["completion"]));
    assert!(show["parameters"]
        .as_str()
        .is_some_and(|p| p.starts_with("stop ") && p.contains("\"<end_of_turn>\"")));
    assert!(show["modelfile"]
        .as_str()
        .is_some_and(|mf| mf.contains("\nFROM gemma3:270m\n") && mf.contains("TEMPLATE \"\"\"")));
    // No path of the store reaches a client.
    let store_path = s.models.display().to_string();
    assert!(!show.to_string().contains(&store_path), "{show}");
    // A model without a template layer shows Ollama's default template,
    // in the answer and in the Modelfile (bare, as Ollama quotes it).
    s.create_linked("bare", &gemma(), json!({}));
    let (status, bare) = s.post("/api/show", json!({"model": "bare"}));
    assert_eq!(status, 200, "{bare}");
    assert_eq!(bare["template"], "{{ .Prompt }}");
    assert!(
        bare["modelfile"]
            .as_str()
            .is_some_and(|mf| mf.contains("\nTEMPLATE {{ .Prompt }}\n")),
        "{}",
        bare["modelfile"]
    );
    let gone = s.call("DELETE", "/api/delete", Some(&json!({"model": "bare"})));
    assert_eq!(gone.0, 200);
    let (_, verbose) = s.post(
        "/api/show",
        json!({"model": "gemma3:270m", "verbose": true}),
    );
    assert_eq!(
        verbose["model_info"]["tokenizer.ggml.tokens"]
            .as_array()
            .map(Vec::len),
        Some(262144)
    );
    assert_eq!(verbose["tensors"].as_array().map(Vec::len), Some(236));

    assert_eq!(
        s.call(
            "POST",
            "/api/copy",
            Some(&json!({"source": "gemma3:270m", "destination": "mine/gemma:v1"}))
        )
        .0,
        200
    );
    let (_, tags) = s.get("/api/tags");
    let names: Vec<&str> = tags["models"]
        .as_array()
        .expect("models")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert!(
        names.contains(&"mine/gemma:v1") && names.contains(&"gemma3:270m"),
        "{names:?}"
    );

    // Deleting one name keeps the shared blobs; deleting the last removes them.
    let blobs_before = blob_names(&s.models);
    assert_eq!(
        s.call(
            "DELETE",
            "/api/delete",
            Some(&json!({"model": "gemma3:270m"}))
        )
        .0,
        200
    );
    assert_eq!(blob_names(&s.models), blobs_before);
    assert!(
        !s.models
            .join("manifests/registry.ollama.ai/library/gemma3")
            .exists(),
        "empty manifest dirs are pruned"
    );
    assert_eq!(
        s.call(
            "DELETE",
            "/api/delete",
            Some(&json!({"name": "mine/gemma:v1"}))
        )
        .0,
        200
    );
    assert!(
        blob_names(&s.models).is_empty(),
        "{:?}",
        blob_names(&s.models)
    );
    assert_eq!(s.get("/api/tags"), (200, json!({"models": []})));
}

#[test]
fn create_from_existing_with_system_prompt() {
    let s = Server::start();
    s.create_gemma("gemma3:270m");
    let (status, lines) = s.stream(
        "/api/create",
        json!({"model": "terse", "from": "gemma3:270m", "system": "You are terse.",
               "parameters": {"temperature": 0.2}, "license": ["MIT", "Apache"],
               "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}),
    );
    assert_eq!(status, 200);
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("using existing layer sha256:")),
        "{statuses:?}"
    );
    assert!(
        statuses
            .iter()
            .any(|s| s.starts_with("creating new layer sha256:")),
        "{statuses:?}"
    );
    assert_eq!(
        &statuses[statuses.len() - 2..],
        ["writing manifest", "success"]
    );

    let (_, show) = s.post("/api/show", json!({"model": "terse"}));
    assert_eq!(show["system"], "You are terse.");
    assert_eq!(show["license"], "MIT\nApache");
    assert_eq!(show["details"]["parent_model"], "gemma3:270m");
    assert_eq!(
        show["template"], GEMMA_TEMPLATE,
        "the base template is kept"
    );
    assert_eq!(show["messages"][1]["content"], "yo");
    let params = show["parameters"].as_str().unwrap_or_default();
    assert!(
        params.contains("temperature")
            && params.contains("0.2")
            && params.contains("<end_of_turn>"),
        "{params}"
    );

    let (status, v) = s.post(
        "/api/create",
        json!({"model": "x", "from": "ghost", "stream": false}),
    );
    assert_eq!(
        (status, v),
        (404, json!({"error": "model \"ghost\" not found"}))
    );
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "x", "from": "terse", "template": "{{ if }}", "stream": false}),
    );
    assert_eq!(status, 400);
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.starts_with("template error")),
        "{v}"
    );
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "x", "from": "terse", "parameters": {"bogus": 1}}),
    );
    assert_eq!(
        (status, v),
        (400, json!({"error": "unknown parameter 'bogus'"}))
    );
}

/// A GGUF whose chat template is a known format gets Ollama's template and
/// stop words as layers at create time, reported as Ollama reports them.
#[test]
fn create_autodetects_a_known_chat_template() {
    let s = Server::start();
    let lines = s.create_linked("smol", &smollm(), json!({}));
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert!(
        statuses.contains(&"using autodetected template chatml"),
        "{statuses:?}"
    );
    let (_, show) = s.post("/api/show", json!({"model": "smol"}));
    let template = show["template"].as_str().unwrap_or_default();
    assert!(template.contains("<|im_start|>{{ .Role }}"), "{show}");
    let params = show["parameters"].as_str().unwrap_or_default();
    assert!(
        params.contains("stop") && params.contains("<|im_end|>"),
        "{params}"
    );

    // The request's own template and parameters win over the detected ones.
    s.create_linked(
        "smol-own",
        &smollm(),
        json!({"template": "{{ .Prompt }}", "parameters": {"stop": ["END"], "temperature": 0.3}}),
    );
    let (_, show) = s.post("/api/show", json!({"model": "smol-own"}));
    assert_eq!(show["template"], "{{ .Prompt }}");
    let params = show["parameters"].as_str().unwrap_or_default();
    assert!(
        params.contains("END") && !params.contains("<|im_end|>") && params.contains("0.3"),
        "{params}"
    );

    // Gemma 3 270M ships no chat template: nothing is detected.
    let lines = s.create_linked("g", &gemma(), json!({}));
    assert!(
        !lines.iter().any(|l| l["status"]
            .as_str()
            .is_some_and(|s| s.contains("autodetected"))),
        "{lines:?}"
    );
}

#[test]
fn hostile_names_are_refused() {
    let s = Server::start();
    let (_, _, digest) = s.upload_bytes(b"GGUF-not-really");
    for bad in [
        "../evil",
        "a/../../b",
        "/etc/passwd",
        "x:../../y",
        "..",
        "a b",
        "ns/m/x/y",
        "m:",
        "\u{0}",
    ] {
        let (status, v) = s.post(
            "/api/create",
            json!({"model": bad, "files": {"m.gguf": digest}}),
        );
        assert_eq!(
            (status, &v),
            (400, &json!({"error": "invalid model name"})),
            "{bad:?}"
        );
        let (status, _) = s.post("/api/show", json!({"model": bad}));
        assert_eq!(status, 400, "{bad:?}");
        let (status, _) = s.call("DELETE", "/api/delete", Some(&json!({"model": bad})));
        assert_eq!(status, 400, "{bad:?}");
    }
    for path in ["../x.gguf", "/abs.gguf", "a/../../b.gguf", ""] {
        let (status, v) = s.post(
            "/api/create",
            json!({"model": "ok", "files": {path: digest}}),
        );
        assert_eq!(
            (status, v),
            (400, json!({"error": "file path must be relative"})),
            "{path:?}"
        );
    }
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "ok", "files": {"m.gguf": "sha256:zz"}}),
    );
    assert_eq!(
        (status, v),
        (400, json!({"error": "invalid digest format"}))
    );
    let (status, v) = s.post("/api/copy", json!({"source": "a", "destination": "../b"}));
    assert_eq!(
        (status, v),
        (400, json!({"error": "destination \"../b\" is invalid"}))
    );
    // Nothing escaped the store (beside it is only the server's HOME key
    // directory, `.ollama`).
    let outside: Vec<_> = std::fs::read_dir(s.models.parent().expect("parent"))
        .expect("dir")
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| n != ".ollama")
        .collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("models")]);
}

#[test]
fn truncated_and_bogus_gguf() {
    let s = Server::start();
    let bytes = std::fs::read(gemma()).expect("gemma");
    let (_, _, truncated) = s.upload_bytes(&bytes[..1 << 20]);
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "broken", "files": {"m.gguf": truncated}, "stream": false}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid GGUF")),
        "{v}"
    );
    // Streaming: the error arrives as the last line.
    let (status, lines) = s.stream(
        "/api/create",
        json!({"model": "broken", "files": {"m.gguf": truncated}}),
    );
    assert_eq!(status, 200);
    assert!(
        lines.last().is_some_and(|l| l["error"].is_string()),
        "{lines:?}"
    );

    let (_, _, text) = s.upload_bytes(b"just some text, not a model");
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "broken", "files": {"m.gguf": text}, "stream": false}),
    );
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "supplied file was not in GGUF format"})
        )
    );
    assert_eq!(
        s.get("/api/tags"),
        (200, json!({"models": []})),
        "no half-created model"
    );
}

/// A store written by hand exactly as Ollama lays it out is listed as is.
#[test]
fn reads_an_ollama_store() {
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    let blobs = models.join("blobs");
    std::fs::create_dir_all(&blobs).expect("blobs");
    let put = |bytes: &[u8], colon: bool| -> (String, u64) {
        let hex = sha256_hex(bytes);
        let sep = if colon { ":" } else { "-" };
        std::fs::write(blobs.join(format!("sha256{sep}{hex}")), bytes).expect("write blob");
        (format!("sha256:{hex}"), bytes.len() as u64)
    };
    let (weights, wsize) = put(b"GGUF pretend weights", false);
    // Old Ollama versions named blobs with a colon; they are renamed at start.
    let (template, tsize) = put(b"{{ .Prompt }}", true);
    let config = br#"{"model_format":"gguf","model_family":"llama","model_families":["llama"],"model_type":"3.2B","file_type":"Q4_K_M","architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let (config_digest, csize) = put(config, false);
    let manifest = format!(
        "{{\"schemaVersion\":2,\"mediaType\":\"application/vnd.docker.distribution.manifest.v2+json\",\"config\":{{\"mediaType\":\"application/vnd.docker.container.image.v1+json\",\"digest\":\"{config_digest}\",\"size\":{csize}}},\"layers\":[{{\"mediaType\":\"application/vnd.ollama.image.model\",\"digest\":\"{weights}\",\"size\":{wsize}}},{{\"mediaType\":\"application/vnd.ollama.image.template\",\"digest\":\"{template}\",\"size\":{tsize}}}]}}"
    );
    let mdir = models.join("manifests/registry.ollama.ai/library/llama3.2");
    std::fs::create_dir_all(&mdir).expect("manifest dir");
    std::fs::write(mdir.join("latest"), &manifest).expect("manifest");
    let other = models.join("manifests/example.com/team/tool");
    std::fs::create_dir_all(&other).expect("dir");
    std::fs::write(other.join("v2"), &manifest).expect("manifest");

    let s = Server::start_in(&models, &[]);
    let (status, tags) = s.get("/api/tags");
    assert_eq!(status, 200);
    let list = tags["models"].as_array().expect("models");
    assert_eq!(list.len(), 2, "{tags}");
    let llama = list
        .iter()
        .find(|m| m["name"] == "llama3.2:latest")
        .expect("llama3.2 listed");
    assert_eq!(llama["digest"], sha256_hex(manifest.as_bytes()));
    assert_eq!(llama["size"].as_u64(), Some(wsize + tsize + csize));
    assert_eq!(llama["details"]["parameter_size"], "3.2B");
    assert_eq!(llama["details"]["family"], "llama");
    assert!(list.iter().any(|m| m["name"] == "example.com/team/tool:v2"));
    assert!(
        blobs.join(template.replace(':', "-")).exists(),
        "colon blob renamed"
    );
    let (status, show) = s.post("/api/show", json!({"model": "Llama3.2"}));
    assert_eq!(status, 200, "case-insensitive lookup: {show}");
    assert_eq!(show["template"], "{{ .Prompt }}");
    assert_eq!(
        show["model_info"],
        json!({}),
        "model_info is {{}} when the weights cannot be read"
    );
}
