//! Generation and chat against the real Gemma 3 270M and SmolLM2 135M.
//! Every test holds the inference lock: two ggml workloads never overlap.

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::{gemma, inference_lock, parse, smollm, wait_for, Server};

fn response_text(v: &Value) -> String {
    v["response"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_default()
}

fn ps_names(s: &Server) -> Vec<String> {
    let (_, v) = s.get("/api/ps");
    v["models"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|m| m["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn generate_streaming_and_not() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let (status, lines) = s.stream(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "Name a color.", "options": {"num_predict": 8, "temperature": 0}}),
    );
    assert_eq!(status, 200);
    assert!(lines.len() >= 2, "{lines:?}");
    let last = lines.last().expect("final chunk");
    assert_eq!(last["done"], true);
    assert_eq!(last["model"], "gemma3:270m");
    for key in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_count",
        "eval_duration",
    ] {
        assert!(
            last[key].as_u64().is_some_and(|n| n > 0),
            "{key} missing in {last}"
        );
    }
    assert!(last["context"].as_array().is_some_and(|c| !c.is_empty()));
    assert!(lines[..lines.len() - 1]
        .iter()
        .all(|l| l["done"] == false && l["response"].is_string()));
    let streamed: String = lines.iter().map(response_text).collect();

    let (status, one) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "Name a color.", "stream": false, "options": {"num_predict": 8, "temperature": 0}}),
    );
    assert_eq!(status, 200);
    assert_eq!(one["done"], true);
    assert_eq!(
        response_text(&one),
        streamed,
        "greedy output is the same streamed or not"
    );
    assert_eq!(one["done_reason"], "length");
    assert_eq!(one["eval_count"], 8);
}

#[test]
fn chat_streaming_and_not() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let messages = json!([{"role": "system", "content": "You answer in one word."}, {"role": "user", "content": "What color is the sky?"}]);
    let (status, lines) = s.stream("/api/chat", json!({"model": "gemma3:270m", "messages": messages, "options": {"num_predict": 12, "seed": 7}}));
    assert_eq!(status, 200);
    let last = lines.last().expect("final chunk");
    assert_eq!(last["done"], true);
    assert!(
        last["done_reason"] == "stop" || last["done_reason"] == "length",
        "{last}"
    );
    assert_eq!(last["message"]["role"], "assistant");
    assert!(last.get("context").is_none(), "chat has no context");
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert!(!text.trim().is_empty(), "{lines:?}");
    assert!(
        !text.contains("<end_of_turn>"),
        "the stop string is not emitted: {text:?}"
    );

    let (status, one) = s.post("/api/chat", json!({"model": "gemma3:270m", "messages": messages, "stream": false, "options": {"num_predict": 12, "seed": 7}}));
    assert_eq!(status, 200);
    assert_eq!(
        one["message"]["content"].as_str(),
        Some(text.as_str()),
        "same seed, same answer"
    );
}

#[test]
fn stop_sequences_and_num_predict() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let req = |opts: Value| {
        s.post("/api/generate", json!({"model": "gemma3:270m", "prompt": "Count from one to twenty: one, two, three,", "raw": true, "stream": false, "options": opts}))
    };
    let (_, free) = req(json!({"temperature": 0, "num_predict": 24}));
    assert_eq!(free["done_reason"], "length");
    assert_eq!(free["eval_count"], 24);
    assert!(
        free.get("context").is_none(),
        "raw answers carry no context"
    );
    let text = response_text(&free);
    // Pick a stop string from the middle of the greedy answer; the answer
    // with it must end right before its first occurrence.
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.len() >= 4, "{text:?}");
    let stop = words[words.len() / 2];
    let (_, stopped) = req(json!({"temperature": 0, "num_predict": 24, "stop": [stop]}));
    assert_eq!(stopped["done_reason"], "stop", "{stopped}");
    let cut = &text[..text.find(stop).expect("stop in text")];
    assert_eq!(response_text(&stopped), cut);
}

#[test]
fn seed_reproducibility() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let run = |seed: u64| {
        let (_, v) = s.post(
            "/api/generate",
            json!({"model": "gemma3:270m", "prompt": "Tell me a story.", "stream": false,
            "options": {"seed": seed, "temperature": 1.0, "num_predict": 16}}),
        );
        response_text(&v)
    };
    let a = run(42);
    assert_eq!(a, run(42));
    assert!(!a.is_empty());
}

/// `OLLAMA_KV_CACHE_TYPE=q8_0` (with flash attention, llama.cpp's default
/// on CPUs) runs with a smaller cache; a value Ollama does not know falls
/// back to f16 instead of failing.
#[test]
fn quantized_kv_cache() {
    let _lock = inference_lock();
    let ps_size = |s: &Server| {
        let (status, v) = s.post("/api/generate", json!({"model": "gemma3:270m", "prompt": "Hello", "stream": false, "options": {"num_predict": 4, "temperature": 0}}));
        assert_eq!(status, 200, "{v}");
        assert!(!response_text(&v).is_empty(), "{v}");
        let (_, ps) = s.get("/api/ps");
        ps["models"][0]["size"].as_u64().unwrap_or(0)
    };
    let f16 = ps_size(&Server::with_gemma(&[]));
    let q8 = ps_size(&Server::with_gemma(&[("OLLAMA_KV_CACHE_TYPE", "q8_0")]));
    let q4 = ps_size(&Server::with_gemma(&[("OLLAMA_KV_CACHE_TYPE", "q4_0")]));
    assert!(q4 < q8 && q8 < f16, "f16 {f16}, q8_0 {q8}, q4_0 {q4}");
    // The same plan as f16, give or take the heap the vocabulary takes,
    // which is measured and moves by a few bytes from run to run.
    let same = |a: u64, b: u64| a.abs_diff(b) < 1 << 20;
    let bogus = ps_size(&Server::with_gemma(&[("OLLAMA_KV_CACHE_TYPE", "q3_x")]));
    assert!(same(bogus, f16), "{bogus} != {f16}");
    // Quantized V needs flash attention: with it off, Ollama keeps f16
    // (the plan of an f16 cache without flash attention, whose compute
    // buffer is larger).
    let off = ps_size(&Server::with_gemma(&[
        ("OLLAMA_KV_CACHE_TYPE", "q8_0"),
        ("OLLAMA_FLASH_ATTENTION", "0"),
    ]));
    let f16_off = ps_size(&Server::with_gemma(&[("OLLAMA_FLASH_ATTENTION", "0")]));
    assert!(same(off, f16_off), "{off} != {f16_off}");
}

#[test]
fn load_unload_and_keep_alive() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    assert!(ps_names(&s).is_empty());
    let (status, v) = s.post("/api/generate", json!({"model": "gemma3:270m"}));
    assert_eq!(status, 200);
    assert_eq!(
        (
            v["done"].clone(),
            v["done_reason"].clone(),
            v["response"].clone()
        ),
        (json!(true), json!("load"), json!(""))
    );
    let (_, ps) = s.get("/api/ps");
    let m = &ps["models"][0];
    assert_eq!(m["name"], "gemma3:270m");
    assert_eq!(m["details"]["family"], "gemma3");
    assert!(m["size"].as_u64().is_some_and(|n| n > 200_000_000), "{m}");
    assert_eq!(m["size_vram"], 0);
    assert_eq!(m["context_length"], 4096);
    assert!(m["expires_at"].as_str().is_some_and(|t| t.ends_with('Z')));

    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "gemma3:270m", "messages": [], "keep_alive": 0}),
    );
    assert_eq!(status, 200);
    assert_eq!(v["done_reason"], "unload");
    assert_eq!(v["message"]["content"], "");
    wait_for("unload", || ps_names(&s).is_empty());

    // A short keep_alive expires on its own.
    let (status, _) = s.post("/api/generate", json!({"model": "gemma3:270m", "prompt": "Hi", "keep_alive": "1s", "stream": false, "options": {"num_predict": 2}}));
    assert_eq!(status, 200);
    assert_eq!(ps_names(&s), ["gemma3:270m"]);
    wait_for("keep_alive expiry", || ps_names(&s).is_empty());

    // Forever shows a far-future expiry.
    s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "keep_alive": -1}),
    );
    let (_, ps) = s.get("/api/ps");
    assert!(
        ps["models"][0]["expires_at"]
            .as_str()
            .is_some_and(|t| t.starts_with("2317")),
        "{ps}"
    );

    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "keep_alive": "300"}),
    );
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "time: missing unit in duration \"300\""})
        )
    );
}

#[test]
fn concurrency_and_queue_limit() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[("OLLAMA_NUM_PARALLEL", "2")]);
    let go = |s: &Server| {
        s.post("/api/generate", json!({"model": "gemma3:270m", "prompt": "Say hi.", "stream": false, "options": {"num_predict": 6}}))
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| go(&s))).collect();
        for h in handles {
            let (status, v) = h.join().expect("thread");
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["done"], true);
        }
    });
    drop(s);

    let s = Server::with_gemma(&[("OLLAMA_MAX_QUEUE", "1"), ("OLLAMA_MAX_LOADED_MODELS", "1")]);
    let statuses: Vec<(u16, Value)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8).map(|_| scope.spawn(|| go(&s))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let busy: Vec<&Value> = statuses
        .iter()
        .filter(|(c, _)| *c == 503)
        .map(|(_, v)| v)
        .collect();
    assert!(statuses.iter().any(|(c, _)| *c == 200), "{statuses:?}");
    assert!(!busy.is_empty(), "{statuses:?}");
    assert_eq!(
        busy[0],
        &json!({"error": "server busy, please try again.  maximum pending requests exceeded"})
    );
}

/// With `OLLAMA_MAX_LOADED_MODELS=1` and the one loaded model busy, a
/// request for another model waits for it (as Ollama queues) instead of
/// loading a second model beside it.
#[test]
fn a_full_house_queues_other_models() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[("OLLAMA_MAX_LOADED_MODELS", "1")]);
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    // Gemma is kept busy by a generation that cannot end before the checks
    // below, however fast the machine: the test hangs up on it instead.
    let resp = ureq::post(&s.url("/api/generate"))
        .send_string(&json!({"model": "gemma3:270m", "prompt": "Write a long essay about rivers.", "options": {"num_predict": 100_000}}).to_string())
        .expect("stream");
    let mut lines = BufReader::new(resp.into_reader()).lines();
    let mut next_chunk = move || {
        let line = lines.next().expect("a chunk").expect("read");
        assert!(line.contains("\"done\":false"), "{line}");
    };
    next_chunk();
    std::thread::scope(|scope| {
        let other = scope.spawn(|| {
            s.post("/api/generate", json!({"model": "smollm2:135m", "prompt": "Hi", "stream": false, "options": {"num_predict": 3}}))
        });
        // While Gemma goes on streaming (at least a second and 20 tokens, so
        // the second request has arrived), SmolLM2 is not loaded beside it.
        let started = Instant::now();
        for _ in 0..20 {
            next_chunk();
        }
        while started.elapsed() < Duration::from_secs(1) {
            next_chunk();
        }
        assert_eq!(ps_names(&s), ["gemma3:270m"]);
        assert!(!other.is_finished(), "the second model did not wait");
        // Hanging up ends Gemma's generation; then SmolLM2 takes its place.
        drop(next_chunk);
        let (status, v) = other.join().expect("thread");
        assert_eq!(status, 200, "{v}");
    });
    assert_eq!(ps_names(&s), ["smollm2:135m"]);
}

/// The server's threads whose name starts with `prefix`, by thread id.
fn threads_named(pid: u32, prefix: &str) -> std::collections::BTreeSet<u32> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("/proc task list");
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|t| t.file_name().to_str()?.parse().ok())
        .collect()
}

/// CPU time the whole process has used, in clock ticks (utime + stime).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the parenthesised name: state is the 1st, utime the 12th.
    let rest = &stat[stat.rfind(')').expect("stat name") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime")
}

/// ggml's workers live as long as the model: a stream at two threads runs
/// on the same two runner threads from token to token (ggml used to start
/// and join a worker for every token), and once the answer is done the
/// model's threads sleep instead of polling for work.
#[test]
fn decode_threads_persist_and_rest_when_idle() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[("HEARTH_THREADS", "2")]);
    let pid = s.pid();
    let resp = ureq::post(&s.url("/api/generate"))
        .send_string(&json!({"model": "gemma3:270m", "prompt": "Write a long essay about rivers.", "options": {"num_predict": 40, "temperature": 0}}).to_string())
        .expect("stream");
    let mut lines = BufReader::new(resp.into_reader()).lines();
    let mut chunk = || lines.next().expect("a chunk").expect("read");
    for _ in 0..3 {
        chunk();
    }
    // The runner thread and one pool worker, both named after the model.
    let runners = threads_named(pid, "runner-");
    assert_eq!(runners.len(), 2, "{runners:?}");
    let mut done = false;
    for _ in 0..40 {
        let line = chunk();
        assert_eq!(threads_named(pid, "runner-"), runners, "after {line}");
        if line.contains("\"done\":true") {
            done = true;
            break;
        }
    }
    assert!(done, "no final chunk within 40 tokens");
    // Idle: over a full second the process uses (almost) no CPU. A pool left
    // polling would burn a core for a good part of it.
    let before = cpu_ticks(pid);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(pid) - before;
    assert!(used <= 5, "{used} ticks of CPU in a second while idle");
    assert_eq!(threads_named(pid, "runner-"), runners);
}

#[test]
fn client_disconnect_frees_the_slot() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let resp = ureq::post(&s.url("/api/generate"))
        .send_string(&json!({"model": "gemma3:270m", "prompt": "Write a very long essay about rivers.", "options": {"num_predict": 2000}}).to_string())
        .expect("stream");
    let mut lines = BufReader::new(resp.into_reader()).lines();
    for _ in 0..3 {
        let line = lines.next().expect("a chunk").expect("read");
        assert!(line.contains("\"done\":false"), "{line}");
    }
    drop(lines);
    // With one slot, this only finishes quickly if the abandoned generation stopped.
    let started = Instant::now();
    let (status, v) = s.post("/api/generate", json!({"model": "gemma3:270m", "prompt": "Hi", "stream": false, "options": {"num_predict": 4}}));
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn unknown_and_corrupt_models() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    assert_eq!(
        s.post("/api/generate", json!({"model": "ghost", "prompt": "hi"})),
        (404, json!({"error": "model 'ghost' not found"}))
    );
    assert_eq!(
        s.post(
            "/api/chat",
            json!({"model": "ghost", "messages": [{"role": "user", "content": "hi"}]})
        ),
        (404, json!({"error": "model 'ghost' not found"}))
    );
    assert_eq!(
        s.post("/api/chat", json!({"messages": []})),
        (400, json!({"error": "model is required"}))
    );
    // A GGUF whose header is intact but whose tensor data is cut off: create
    // accepts it, loading fails cleanly, and the server keeps serving.
    let bytes = std::fs::read(gemma()).expect("gemma");
    let (status, _, digest) = s.upload_bytes(&bytes[..bytes.len() / 2]);
    assert_eq!(status, 201);
    let (status, v) = s.post(
        "/api/create",
        json!({"model": "broken", "files": {"b.gguf": digest}, "stream": false}),
    );
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "broken", "prompt": "hi", "stream": false}),
    );
    assert_eq!(status, 500, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
    let (status, v) = s.post("/api/generate", json!({"model": "gemma3:270m", "prompt": "hi", "stream": false, "options": {"num_predict": 3}}));
    assert_eq!(status, 200, "{v}");
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "hi", "raw": true, "system": "x"}),
    );
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "raw mode does not support template, system, or context"})
        )
    );
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "hi", "top_logprobs": 21}),
    );
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "top_logprobs must be between 0 and 20"})
        )
    );
    let (status, v) = s.post("/api/chat", json!({"model": "gemma3:270m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}));
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "registry.ollama.ai/library/gemma3:270m does not support tools"})
        )
    );
}

#[test]
fn chat_history_reuses_the_cache_and_smollm_template() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let intro = "My name is Ada. I live by the sea, in a small white house with a red door, and every morning I walk along the shore \
        collecting shells, counting boats and talking to the fishermen about the weather, the tides and the price of fish. Remember my name.";
    let first = json!([{"role": "user", "content": intro}]);
    let (status, a) = s.post("/api/chat", json!({"model": "gemma3:270m", "messages": first, "stream": false, "options": {"num_predict": 8, "temperature": 0}}));
    assert_eq!(status, 200);
    let full_first = a["prompt_eval_count"].as_u64().unwrap_or(0);
    let reply = a["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let second = json!([{"role": "user", "content": intro},
        {"role": "assistant", "content": reply}, {"role": "user", "content": "What is my name?"}]);
    let (status, b) = s.post("/api/chat", json!({"model": "gemma3:270m", "messages": second, "stream": false, "options": {"num_predict": 8, "temperature": 0}}));
    assert_eq!(status, 200);
    // The second prompt repeats the first turn (which the engine reuses
    // from its cache, see engine::tests::second_turn_reuses_prefix); the
    // count is the whole prompt all the same, as Ollama reports it.
    let second_count = b["prompt_eval_count"].as_u64().unwrap_or(0);
    assert!(full_first > 60, "first prompt {full_first}");
    assert!(
        second_count > full_first,
        "second prompt {second_count}, first prompt {full_first}"
    );
    // The same request twice counts the same, cache hit or not.
    let (status, again) = s.post("/api/chat", json!({"model": "gemma3:270m", "messages": second, "stream": false, "options": {"num_predict": 8, "temperature": 0}}));
    assert_eq!(status, 200);
    assert_eq!(again["prompt_eval_count"], b["prompt_eval_count"]);
    assert!(
        again["load_duration"].as_u64().is_some_and(|n| n > 0),
        "{again}"
    );

    // SmolLM2 has no template layer: its GGUF's ChatML template is recognised.
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    // Its template's default system prompt becomes the model's system layer.
    let (_, show) = s.post("/api/show", json!({"model": "smollm2:135m"}));
    assert_eq!(
        show["system"],
        "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    );
    let (status, v) = s.post("/api/chat", json!({"model": "smollm2:135m", "messages": [{"role": "user", "content": "Say hello."}], "stream": false, "options": {"num_predict": 10, "temperature": 0}}));
    assert_eq!(status, 200, "{v}");
    let text = v["message"]["content"].as_str().unwrap_or_default();
    assert!(
        !text.trim().is_empty() && !text.contains("<|im_start|>"),
        "{text:?}"
    );
}

#[test]
fn logprobs_are_reported() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "One, two,", "stream": false,
        "logprobs": true, "top_logprobs": 3, "options": {"temperature": 0, "num_predict": 4}}),
    );
    assert_eq!(status, 200, "{v}");
    let lps = v["logprobs"].as_array().expect("logprobs");
    assert_eq!(lps.len(), 4, "{v}");
    let text: String = lps.iter().filter_map(|l| l["token"].as_str()).collect();
    assert_eq!(text, response_text(&v), "the tokens spell the answer");
    for l in lps {
        let lp = l["logprob"].as_f64().expect("logprob");
        assert!(lp <= 0.0, "{l}");
        let top = l["top_logprobs"].as_array().expect("top");
        assert_eq!(top.len(), 3);
        // Greedy: the chosen token is the most likely one.
        assert!(
            (top[0]["logprob"].as_f64().unwrap_or(1.0) - lp).abs() < 1e-4,
            "{l}"
        );
    }
    let (_, lines) = s.stream(
        "/api/chat",
        json!({"model": "gemma3:270m", "messages": [{"role": "user", "content": "Hi"}],
        "logprobs": true, "options": {"num_predict": 3}}),
    );
    // Streamed: each chunk carries the log probabilities of its own tokens
    // (Ollama's shape), and together they spell the answer.
    let (last, chunks) = lines.split_last().expect("final");
    assert!(last["logprobs"].is_null(), "{last}");
    let lps: Vec<&Value> = chunks
        .iter()
        .flat_map(|c| c["logprobs"].as_array().into_iter().flatten())
        .collect();
    assert_eq!(lps.len(), 3, "{lines:?}");
    assert!(chunks.iter().all(|c| c["logprobs"].is_array()), "{lines:?}");
    let spelled: String = lps.iter().filter_map(|l| l["token"].as_str()).collect();
    let content: String = chunks
        .iter()
        .filter_map(|c| c["message"]["content"].as_str())
        .collect();
    assert_eq!(spelled, content);
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "gemma3:270m", "messages": [{"role": "user", "content": "Hi"}],
        "logprobs": true, "top_logprobs": 2, "max_tokens": 3}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v["choices"][0]["logprobs"]["content"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{v}"
    );
    // The legacy completions API asks with a number of alternatives.
    let (status, v) = s.post(
        "/v1/completions",
        json!({"model": "gemma3:270m", "prompt": "One, two,", "logprobs": 2, "max_tokens": 3, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    let lps = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .expect("logprobs");
    assert_eq!(lps.len(), 3, "{v}");
    assert!(lps
        .iter()
        .all(|l| l["top_logprobs"].as_array().map(Vec::len) == Some(2)));
    let (status, v) = s.post(
        "/v1/completions",
        json!({"model": "gemma3:270m", "prompt": "One, two,", "max_tokens": 2}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
    // Streamed over SSE, each chunk has its own.
    let (status, text) = s.call(
        "POST",
        "/v1/chat/completions",
        Some(
            &json!({"model": "gemma3:270m", "messages": [{"role": "user", "content": "Hi"}],
        "logprobs": true, "max_tokens": 3, "stream": true}),
        ),
    );
    assert_eq!(status, 200, "{text}");
    let n: usize = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|e| *e != "[DONE]")
        .map(|e| {
            parse(e)["choices"][0]["logprobs"]["content"]
                .as_array()
                .map_or(0, Vec::len)
        })
        .sum();
    assert_eq!(n, 3, "{text}");
}

#[test]
fn tokenize_and_detokenize_round_trip() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let (status, v) = s.post(
        "/api/tokenize",
        json!({"model": "gemma3:270m", "content": "Hello world"}),
    );
    assert_eq!(status, 200, "{v}");
    let with_bos: Vec<i64> = v["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    let (_, v) = s.post(
        "/api/tokenize",
        json!({"model": "gemma3:270m", "content": "Hello world", "add_special": false, "with_pieces": true}),
    );
    let pieces = v["tokens"].as_array().expect("pieces").clone();
    assert_eq!(
        pieces.len() + 1,
        with_bos.len(),
        "BOS only with add_special"
    );
    let text: String = pieces.iter().filter_map(|p| p["piece"].as_str()).collect();
    assert_eq!(text, "Hello world");
    let ids: Vec<i64> = pieces.iter().filter_map(|p| p["id"].as_i64()).collect();
    assert_eq!(ids, with_bos[1..]);
    let (status, v) = s.post(
        "/api/detokenize",
        json!({"model": "gemma3:270m", "tokens": ids}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["content"], "Hello world");
    // Ids outside the vocabulary and unknown models are the client's error.
    let (status, v) = s.post(
        "/api/detokenize",
        json!({"model": "gemma3:270m", "tokens": [1, -1]}),
    );
    assert_eq!(
        (status, v["error"].clone()),
        (400, json!("token -1 is not in the model's vocabulary"))
    );
    let (status, _) = s.post(
        "/api/detokenize",
        json!({"model": "gemma3:270m", "tokens": [999_999_999]}),
    );
    assert_eq!(status, 400);
    let (status, _) = s.post("/api/tokenize", json!({"model": "nope", "content": "x"}));
    assert_eq!(status, 404);
    // Ollama's offline status answer.
    assert_eq!(
        s.get("/api/status"),
        (200, json!({"cloud": {"disabled": false, "source": "none"}}))
    );
}

#[test]
fn unlimited_generation_stops_at_ten_contexts() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "raw": true, "stream": false,
               "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
               "options": {"num_ctx": 32, "num_predict": -1, "temperature": 0}}),
    );
    assert_eq!(status, 200, "{v}");
    // Counting goes on through context shifts until the cap: 10 × num_ctx.
    assert_eq!(v["done_reason"], "length", "{v}");
    assert_eq!(v["eval_count"], 320, "{v}");
}
