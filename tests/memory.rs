//! The memory budget: what `/api/ps` says a loaded model takes is what the
//! server's resident memory grows by, a model that cannot fit is refused
//! with Ollama's wording before anything is allocated, and idle models make
//! room for a new one.

use serde_json::{json, Value};

use crate::harness::{gemma, inference_lock, smollm, wait_for, Server};

/// Loads `model` with a prompt long enough to fill a batch (every compute
/// buffer is touched) and returns the server's growth in resident memory
/// and what `/api/ps` reports, both in MiB.
fn load_and_measure(s: &Server, model: &str, num_ctx: u32) -> (f64, f64) {
    let before = s.rss_mib();
    let prompt: Vec<String> = (0..200).map(|i| format!("word{i}")).collect();
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": model, "prompt": prompt.join(" "), "raw": true, "stream": false,
               "options": {"num_ctx": num_ctx, "num_predict": 1}}),
    );
    assert_eq!(status, 200, "{v}");
    let prompt_tokens = v["prompt_eval_count"].as_u64().expect("prompt_eval_count");
    assert!(
        prompt_tokens > 512,
        "{prompt_tokens} tokens do not fill a batch"
    );
    let grown = s.rss_mib().saturating_sub(before) as f64;
    let loaded = models_loaded(s);
    assert_eq!(loaded.len(), 1, "{loaded:?}");
    let size = loaded[0]["size"].as_u64().expect("size") as f64 / 1_048_576.0;
    // Unload, so the next measurement starts from the same place.
    let (status, v) = s.post("/api/generate", json!({"model": model, "keep_alive": 0}));
    assert_eq!(status, 200, "{v}");
    (grown, size)
}

/// `/api/ps`'s models.
fn models_loaded(s: &Server) -> Vec<Value> {
    let (status, v) = s.get("/api/ps");
    assert_eq!(status, 200, "{v}");
    v["models"].as_array().cloned().unwrap_or_default()
}

fn names_loaded(s: &Server) -> Vec<String> {
    models_loaded(s)
        .iter()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn the_estimate_matches_resident_memory_within_fifteen_percent() {
    let _lock = inference_lock();
    let s = Server::start();
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    s.create_linked("gemma3:270m", &gemma(), json!({}));
    let idle = s.rss_mib();
    for model in ["smollm2:135m", "gemma3:270m"] {
        for num_ctx in [1024, 8192] {
            // Unloading gives the memory back to the system (within what
            // the first load's runtime, thread pools and allocator keep).
            wait_for("the last model's memory to be freed", || {
                models_loaded(&s).is_empty() && s.rss_mib() < idle + 40
            });
            let (grown, size) = load_and_measure(&s, model, num_ctx);
            eprintln!("{model} num_ctx {num_ctx}: planned {size:.1} MiB, RSS +{grown:.1} MiB");
            assert!(
                (size - grown).abs() <= 0.15 * grown,
                "{model} at num_ctx {num_ctx}: /api/ps says {size:.1} MiB, RSS grew {grown:.1} MiB"
            );
        }
    }
    wait_for("the last model's memory to be freed", || {
        models_loaded(&s).is_empty() && s.rss_mib() < idle + 40
    });
}

#[test]
fn a_model_over_the_budget_is_refused_in_ollamas_words() {
    let s = Server::start_with(&[("HEARTH_MAX_MEMORY", "100MiB")]);
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    let before = s.rss_mib();
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "smollm2:135m", "prompt": "hi", "stream": false}),
    );
    assert_eq!(status, 500, "{v}");
    let error = v["error"].as_str().expect("error");
    // "model requires more system memory (133.3 MiB) than is available (90.1 MiB)"
    let (needed, available) = error
        .strip_prefix("model requires more system memory (")
        .and_then(|r| r.strip_suffix(")"))
        .and_then(|r| r.split_once(") than is available ("))
        .unwrap_or_else(|| panic!("{error}"));
    assert!(
        needed.ends_with(" MiB") && available.ends_with(" MiB"),
        "{error}"
    );
    assert!(models_loaded(&s).is_empty());
    // Planned, not allocated: the refusal cost next to nothing.
    assert!(
        s.rss_mib() < before + 30,
        "RSS {} MiB, was {before}",
        s.rss_mib()
    );
}

#[test]
fn idle_models_make_room_and_the_budget_is_never_passed() {
    let _lock = inference_lock();
    // Either model fits (SmolLM2 ~135 MiB, Gemma 3 ~305 MiB at num_ctx
    // 512), both together do not; the count alone would allow three.
    let budget_mib = 400;
    let s = Server::start_with(&[
        ("HEARTH_MAX_MEMORY", "400MiB"),
        ("OLLAMA_MAX_LOADED_MODELS", "3"),
    ]);
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    s.create_linked("gemma3:270m", &gemma(), json!({}));
    let generate = |model: &str| {
        s.post(
            "/api/generate",
            json!({"model": model, "prompt": "Once upon a time", "raw": true, "stream": false,
                   "options": {"num_ctx": 512, "num_predict": 4}}),
        )
    };
    let (status, v) = generate("smollm2:135m");
    assert_eq!(status, 200, "{v}");
    assert_eq!(names_loaded(&s), ["smollm2:135m"]);
    let (status, v) = generate("gemma3:270m");
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        names_loaded(&s),
        ["gemma3:270m"],
        "the idle model made room"
    );
    assert!(s.rss_mib() <= budget_mib, "RSS {} MiB", s.rss_mib());
    // A busy model is waited for, not refused: SmolLM2 loads once Gemma's
    // stream has finished.
    std::thread::scope(|scope| {
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let url = s.url("/api/generate");
        let busy = scope.spawn(move || {
            let res = ureq::post(&url)
                .send_json(
                    json!({"model": "gemma3:270m", "prompt": "Once upon a time", "raw": true,
                                  "options": {"num_ctx": 512, "num_predict": 48}}),
                )
                .expect("gemma stream");
            let mut lines = std::io::BufRead::lines(std::io::BufReader::new(res.into_reader()));
            let first = lines.next().expect("a first chunk").expect("read");
            first_tx.send(first).expect("signal");
            lines
                .map(|l| l.expect("read"))
                .last()
                .expect("a last chunk")
        });
        let first = first_rx.recv().expect("gemma started");
        assert!(first.contains("\"done\":false"), "{first}");
        let (status, v) = generate("smollm2:135m");
        assert_eq!(status, 200, "{v}");
        let last = busy.join().expect("busy request");
        assert!(
            last.contains("\"done\":true"),
            "Gemma's stream finished: {last}"
        );
    });
    assert_eq!(names_loaded(&s), ["smollm2:135m"]);
    assert!(s.rss_mib() <= budget_mib, "RSS {} MiB", s.rss_mib());
}
