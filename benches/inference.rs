//! Inference speed and memory: raw llama.cpp through the engine API versus
//! the same work through `POST /api/generate`, plus cold start, RSS, two
//! models at once and four streams on one model.
//!
//! `cargo bench --bench inference` prints a table. Run it alone: ggml's
//! threads spin, so anything else on the machine skews every number.

// A benchmark reports by printing its table.
#![allow(clippy::print_stdout)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hearth::engine::{bench_decode, bench_request, CpuBudget, Event, LoadParams, Runner};
use serde_json::{json, Value};

const PROMPT_TOKENS: usize = 128;
const GEN_TOKENS: usize = 128;
const RUNS: usize = 3;

fn main() {
    let models = common::models_dir();
    let gemma = models.join("gemma3-270m-q4_k_m.gguf");
    let smol = models.join("smollm2-135m-instruct-q4_1.gguf");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());

    // (a) Raw: the engine API, no server.
    let runner = Runner::load(
        &gemma,
        LoadParams {
            n_ctx: 4096,
            n_batch: 512,
            n_threads: threads,
            n_parallel: 1,
            embeddings: false,
            use_mmap: true,
            ..LoadParams::default()
        },
        Arc::new(CpuBudget::new(threads)),
    )
    .expect("load gemma");
    bench_decode(&runner, 16, 8).expect("warm-up");
    // Each run gets a different first token, so no run reuses the KV cache
    // of the one before and prompt evaluation is measured in full.
    let prompt_text = prompt_of(&runner, PROMPT_TOKENS);
    let raw: Vec<Raw> = (0..RUNS)
        .map(|i| raw_run(&runner, &format!("Run {i}. {prompt_text}")))
        .collect();
    let raw_decode = median(raw.iter().map(|r| r.decode_tps).collect());
    let raw_prompt = median(raw.iter().map(|r| r.prompt_tps).collect());
    let raw_prompt_ms = median(raw.iter().map(|r| r.prompt_ms).collect());
    drop(runner);

    // (b) The same through HTTP, starting from an unloaded model.
    let server = Server::start(&[]);
    server.create("gemma", &gemma);
    let cold = server.generate("gemma", "Hello", 1);
    let http: Vec<Gen> = (0..RUNS)
        .map(|i| server.generate("gemma", &format!("Run {i}. {prompt_text}"), GEN_TOKENS))
        .collect();
    let http_decode = median(http.iter().map(Gen::decode_tps).collect());
    let http_prompt = median(http.iter().map(Gen::prompt_tps).collect());
    let http_ttft_ms = median(http.iter().map(|g| g.ttft.as_secs_f64() * 1000.0).collect());
    let rss_mb = server.rss_mb();
    let gguf_mb = std::fs::metadata(&gemma).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    drop(server);

    // (c) Four streams on one model versus one.
    let server = Server::start(&[("OLLAMA_NUM_PARALLEL", "4")]);
    server.create("gemma", &gemma);
    server.generate("gemma", "warm", 4);
    let one = aggregate(&server, &["gemma"], &prompt_text);
    let four = aggregate(&server, &["gemma"; 4], &prompt_text);
    drop(server);

    // (d) Two models decoding at once versus each alone.
    let server = Server::start(&[]);
    server.create("gemma", &gemma);
    server.create("smol", &smol);
    server.generate("gemma", "warm", 4);
    server.generate("smol", "warm", 4);
    let solo_g = server
        .generate("gemma", &format!("Solo. {prompt_text}"), GEN_TOKENS)
        .decode_tps();
    let solo_s = server
        .generate("smol", &format!("Solo. {prompt_text}"), GEN_TOKENS)
        .decode_tps();
    let (g, s) = std::thread::scope(|scope| {
        let a =
            scope.spawn(|| server.generate("gemma", &format!("Pair. {prompt_text}"), GEN_TOKENS));
        let b =
            scope.spawn(|| server.generate("smol", &format!("Pair. {prompt_text}"), GEN_TOKENS));
        (a.join().expect("gemma"), b.join().expect("smol"))
    });
    drop(server);

    // (e) Embeddings: all-MiniLM-L6-v2 converted from Safetensors by the server.
    let server = Server::start(&[]);
    let mini = models.join("all-minilm-l6-v2");
    let started = Instant::now();
    server.create_from_dir("minilm", &mini);
    let convert_s = started.elapsed().as_secs_f64();
    let safetensors_mb = std::fs::metadata(mini.join("model.safetensors"))
        .map(|m| m.len())
        .unwrap_or(0) as f64
        / 1e6;
    let sentences: Vec<String> = (0..64)
        .map(|i| format!("Sentence number {i} is about rivers, mills and grain."))
        .collect();
    server.embed("minilm", &sentences[..1]);
    let per_sec = |batch: usize| {
        let started = Instant::now();
        for chunk in sentences.chunks(batch) {
            server.embed("minilm", chunk);
        }
        sentences.len() as f64 / started.elapsed().as_secs_f64()
    };
    let (e1, e16, e64) = (per_sec(1), per_sec(16), per_sec(64));
    drop(server);

    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!(
        "hearth inference bench: {} {} threads, commit {commit}, Gemma 3 270M Q4_K_M, prompt ~{PROMPT_TOKENS} tokens ({} via HTTP), {GEN_TOKENS} generated, median of {RUNS}",
        std::env::consts::ARCH,
        threads,
        http[0].prompt_count
    );
    println!("| measure | raw engine | via HTTP | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| decode tokens/s | {raw_decode:.1} | {http_decode:.1} | {:.3} |",
        http_decode / raw_decode
    );
    println!(
        "| prompt eval tokens/s | {raw_prompt:.0} | {http_prompt:.0} | {:.3} |",
        http_prompt / raw_prompt
    );
    println!(
        "| time to first token (128-token prompt) | {raw_prompt_ms:.0} ms (prompt eval) | {http_ttft_ms:.0} ms | {:.2} |",
        http_ttft_ms / raw_prompt_ms
    );
    println!(
        "| unloaded model to first token | | {:.0} ms | |",
        cold.ttft.as_secs_f64() * 1000.0
    );
    println!("| server RSS with the model loaded | | {rss_mb:.0} MB (GGUF {gguf_mb:.0} MB) | |");
    println!("| 1 stream, aggregate tokens/s | | {one:.1} | |");
    println!(
        "| 4 streams (OLLAMA_NUM_PARALLEL=4), aggregate tokens/s | | {four:.1} | {:.2}x |",
        four / one
    );
    println!(
        "| two models at once: Gemma 3 270M | | {:.1} (solo {solo_g:.1}) | {:.0}% |",
        g.decode_tps(),
        100.0 * g.decode_tps() / solo_g
    );
    println!(
        "| two models at once: SmolLM2 135M | | {:.1} (solo {solo_s:.1}) | {:.0}% |",
        s.decode_tps(),
        100.0 * s.decode_tps() / solo_s
    );
    print_embed(convert_s, safetensors_mb, e1, e16, e64);
}

/// One raw engine run's speeds.
struct Raw {
    decode_tps: f64,
    prompt_tps: f64,
    prompt_ms: f64,
}

/// Plain English text of about `n` tokens, the same prompt raw and via HTTP.
fn prompt_of(runner: &Runner, n: usize) -> String {
    let sentence = "The river runs past the old mill, where the miller counts sacks of grain and tells stories to the children of the village. ";
    let mut text = String::new();
    while runner.tokenize(&text, true, true).map_or(0, |t| t.len()) < n {
        text.push_str(sentence);
    }
    text
}

/// A greedy generation of `text` through the engine API.
fn raw_run(runner: &Runner, text: &str) -> Raw {
    let mut req = bench_request(runner, 1, GEN_TOKENS);
    req.prompt = runner.tokenize(text, true, true).expect("tokenize");
    let (tx, rx) = std::sync::mpsc::channel();
    runner
        .generate(req, Box::new(move |ev| tx.send(ev).is_ok()))
        .expect("generate");
    let mut r = Raw {
        decode_tps: 0.0,
        prompt_tps: 0.0,
        prompt_ms: 0.0,
    };
    for ev in rx {
        match ev {
            Event::PromptDone {
                prompt_tokens,
                duration,
                ..
            } => {
                r.prompt_ms = duration.as_secs_f64() * 1000.0;
                r.prompt_tps = prompt_tokens as f64 / duration.as_secs_f64();
            }
            Event::Done {
                eval_count,
                eval_duration,
                ..
            } => {
                r.decode_tps = eval_count as f64 / eval_duration.as_secs_f64();
                break;
            }
            Event::Error(e) => panic!("{e}"),
            Event::Token { .. } => {}
        }
    }
    r
}

fn print_embed(convert_s: f64, safetensors_mb: f64, one: f64, sixteen: f64, all: f64) {
    println!();
    println!("| embeddings (all-MiniLM-L6-v2) | value |");
    println!("|---|---|");
    println!(
        "| create from Safetensors (upload + convert), {safetensors_mb:.0} MB | {convert_s:.2} s |"
    );
    println!("| 64 sentences, one call each | {one:.0} inputs/s |");
    println!("| 64 sentences, 16 per call | {sixteen:.0} inputs/s |");
    println!(
        "| 64 sentences, one call | {all:.0} inputs/s ({:.1}x one per call) |",
        all / one
    );
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Tokens per second over all streams, generated at the same time.
fn aggregate(server: &Server, models: &[&str], prompt: &str) -> f64 {
    let started = Instant::now();
    let tokens: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = models
            .iter()
            .enumerate()
            .map(|(i, m)| {
                scope.spawn(move || {
                    server
                        .generate(m, &format!("Stream {i}. {prompt}"), GEN_TOKENS)
                        .eval_count
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().expect("stream")).sum()
    });
    tokens as f64 / started.elapsed().as_secs_f64()
}

/// One generation as the client saw it.
struct Gen {
    ttft: Duration,
    eval_count: u64,
    eval_ns: u64,
    prompt_count: u64,
    prompt_ns: u64,
}

impl Gen {
    fn decode_tps(&self) -> f64 {
        self.eval_count as f64 / (self.eval_ns.max(1) as f64 / 1e9)
    }
    fn prompt_tps(&self) -> f64 {
        self.prompt_count as f64 / (self.prompt_ns.max(1) as f64 / 1e9)
    }
}

struct Server {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Server {
    fn start(env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
        cmd.arg("serve")
            .env("OLLAMA_HOST", "127.0.0.1:0")
            .env("OLLAMA_MODELS", dir.path().join("models"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hearth");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let addr = loop {
            let line = lines.next().expect("log line").expect("read");
            if let Some(rest) = line.split("Listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Keep draining the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Server {
            child,
            base: format!("http://{addr}"),
            _dir: dir,
        }
    }

    fn create(&self, name: &str, gguf: &Path) {
        let bytes = std::fs::read(gguf).expect("read gguf");
        let digest = {
            use sha2::Digest as _;
            let h = sha2::Sha256::digest(&bytes);
            format!(
                "sha256:{}",
                h.iter().map(|b| format!("{b:02x}")).collect::<String>()
            )
        };
        ureq::post(&format!("{}/api/blobs/{digest}", self.base))
            .send_bytes(&bytes)
            .expect("upload");
        ureq::post(&format!("{}/api/create", self.base))
            .send_json(json!({"model": name, "files": {"m.gguf": digest}, "template": "{{ .Prompt }}", "stream": false}))
            .expect("create");
    }

    fn create_from_dir(&self, name: &str, dir: &Path) {
        let mut files = serde_json::Map::new();
        for rel in [
            "config.json",
            "tokenizer.json",
            "modules.json",
            "model.safetensors",
            "1_Pooling/config.json",
        ] {
            let bytes = std::fs::read(dir.join(rel)).expect("read model file");
            let digest = sha256(&bytes);
            ureq::post(&format!("{}/api/blobs/{digest}", self.base))
                .send_bytes(&bytes)
                .expect("upload");
            files.insert(rel.to_string(), Value::String(digest));
        }
        ureq::post(&format!("{}/api/create", self.base))
            .send_json(json!({"model": name, "files": files, "stream": false}))
            .expect("create");
    }

    fn embed(&self, model: &str, inputs: &[String]) {
        ureq::post(&format!("{}/api/embed", self.base))
            .send_json(json!({"model": model, "input": inputs}))
            .expect("embed");
    }

    fn generate(&self, model: &str, prompt: &str, n: usize) -> Gen {
        let started = Instant::now();
        let resp = ureq::post(&format!("{}/api/generate", self.base))
            .send_json(json!({"model": model, "prompt": prompt, "raw": true,
                "options": {"temperature": 0, "num_predict": n}}))
            .expect("generate");
        let mut ttft = None;
        for line in BufReader::new(resp.into_reader()).lines() {
            let v: Value = serde_json::from_str(&line.expect("read")).expect("json");
            ttft.get_or_insert_with(|| started.elapsed());
            if v["done"] == true {
                return Gen {
                    ttft: ttft.unwrap_or_default(),
                    eval_count: v["eval_count"].as_u64().unwrap_or(0),
                    eval_ns: v["eval_duration"].as_u64().unwrap_or(0),
                    prompt_count: v["prompt_eval_count"].as_u64().unwrap_or(0),
                    prompt_ns: v["prompt_eval_duration"].as_u64().unwrap_or(0),
                };
            }
        }
        panic!("stream ended without a final chunk");
    }

    fn rss_mb(&self) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let h = sha2::Sha256::digest(bytes);
    format!(
        "sha256:{}",
        h.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
