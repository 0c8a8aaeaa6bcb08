//! A small speed probe through the public engine API.
//!
//! It measures what a client sees (prompt evaluation and decode rates of one
//! greedy generation) so the numbers include scheduling overhead. Choosing
//! models, printing and comparing runs is left to the caller (see
//! `src/bin/engbench.rs` in the scratch crate, or a future `hearth bench`).

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use super::sys::{Batch, Context, ContextSettings, LlamaModel};
use super::{Error, Event, GenerateRequest, KvType, Runner, SamplingParams};

/// Result of one [`bench_decode`] run.
#[derive(Clone, Copy, Debug, Default)]
pub struct BenchResult {
    pub prompt_tokens: usize,
    pub prompt_duration: Duration,
    pub gen_tokens: usize,
    pub gen_duration: Duration,
}

impl BenchResult {
    /// Prompt evaluation speed in tokens per second.
    pub fn prompt_tps(&self) -> f64 {
        rate(self.prompt_tokens, self.prompt_duration)
    }

    /// Generation speed in tokens per second.
    pub fn gen_tps(&self) -> f64 {
        rate(self.gen_tokens, self.gen_duration)
    }
}

fn rate(n: usize, d: Duration) -> f64 {
    let s = d.as_secs_f64();
    if s > 0.0 {
        n as f64 / s
    } else {
        0.0
    }
}

/// Builds a greedy request of `prompt_tokens` distinct-ish tokens that
/// generates exactly `gen_tokens` tokens (EOG does not stop it).
pub fn bench_request(runner: &Runner, prompt_tokens: usize, gen_tokens: usize) -> GenerateRequest {
    let n_vocab = runner.info().n_vocab.max(2) as usize;
    // Ordinary vocabulary ids away from the special tokens at the start.
    let prompt = (0..prompt_tokens.max(1))
        .map(|i| i32::try_from(1000 + (i * 7919) % (n_vocab - 1000).max(1)).unwrap_or(1))
        .collect();
    GenerateRequest {
        prompt,
        sampling: SamplingParams {
            temperature: 0.0,
            repeat_penalty: 1.0,
            ..SamplingParams::default()
        },
        num_predict: i32::try_from(gen_tokens).unwrap_or(i32::MAX),
        stop_at_eog: false,
        num_keep: 0,
        shift: true,
        logprobs: None,
        media: None,
    }
}

/// Runs one generation and reports prompt and decode speed. Blocks.
pub fn bench_decode(
    runner: &Runner,
    prompt_tokens: usize,
    gen_tokens: usize,
) -> Result<BenchResult, Error> {
    let req = bench_request(runner, prompt_tokens, gen_tokens);
    let (tx, rx) = mpsc::channel();
    runner.generate(
        req,
        Box::new(move |ev| {
            let _ = tx.send(ev);
            true
        }),
    )?;
    let mut r = BenchResult::default();
    for ev in rx {
        match ev {
            Event::PromptDone {
                prompt_tokens,
                duration,
                ..
            } => {
                r.prompt_tokens = prompt_tokens;
                r.prompt_duration = duration;
            }
            Event::Token { .. } => {}
            Event::Done {
                eval_count,
                eval_duration,
                ..
            } => {
                r.gen_tokens = eval_count;
                r.gen_duration = eval_duration;
                return Ok(r);
            }
            Event::Error(e) => return Err(e),
        }
    }
    Err(Error::RunnerGone)
}

/// Where the time from "model not loaded" to "first token" goes, phase by
/// phase, measured on the calling thread with llama.cpp directly.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoadPhases {
    /// Reading the GGUF's metadata and building the vocabulary, alone.
    pub vocab: Duration,
    /// The whole model load: metadata, vocabulary, mapping the tensors and
    /// repacking the ones the CPU kernels want in another layout.
    pub model: Duration,
    /// Creating the context: the KV cache allocated and zeroed, the compute
    /// graphs planned and their buffers reserved.
    pub context: Duration,
    /// Evaluating a short prompt right after: the first touch of every
    /// weight page.
    pub first_eval: Duration,
    /// One more token: the steady state.
    pub next_token: Duration,
}

/// How [`load_phases`] sets up the context.
#[derive(Clone, Copy, Debug)]
pub struct PhaseSettings {
    pub n_ctx: u32,
    pub threads: usize,
    /// Sliding-window layers get a full-length cache (llama.cpp's default).
    pub full_swa_cache: bool,
    /// Drop the file's pages from the page cache first, so the load reads
    /// the disk as on a box that just booted.
    pub from_disk: bool,
}

/// Loads `path` phase by phase and times each phase (see [`LoadPhases`]).
pub fn load_phases(path: &Path, s: PhaseSettings) -> Result<LoadPhases, String> {
    let mut phases = LoadPhases::default();
    if s.from_disk {
        evict_from_page_cache(path)?;
    }
    let t = Instant::now();
    drop(LlamaModel::load_vocab(path)?);
    phases.vocab = t.elapsed();
    if s.from_disk {
        evict_from_page_cache(path)?;
    }
    let t = Instant::now();
    let model = Arc::new(LlamaModel::load(path, true)?);
    phases.model = t.elapsed();
    let threads = i32::try_from(s.threads.max(1)).unwrap_or(1);
    let t = Instant::now();
    let settings = ContextSettings {
        n_ctx_total: s.n_ctx,
        n_batch: 512,
        n_seq_max: 1,
        n_threads: threads,
        embeddings: false,
        kv_type: KvType::F16,
        flash_attention: None,
        full_swa_cache: s.full_swa_cache,
    };
    let mut ctx = Context::new(Arc::clone(&model), &settings)?;
    phases.context = t.elapsed();
    let prompt = model
        .tokenize("Why is the sky blue?", true, false)
        .ok_or("the prompt does not tokenize")?;
    let mut batch = Batch::new(prompt.len().max(1));
    let last = prompt.len().saturating_sub(1);
    for (i, &token) in prompt.iter().enumerate() {
        let pos = i32::try_from(i).map_err(|_| "prompt too long")?;
        batch.push(token, pos, 0, i == last).ok_or("batch full")?;
    }
    let t = Instant::now();
    ctx.decode(&batch)
        .map_err(|rc| format!("decode failed: {rc}"))?;
    phases.first_eval = t.elapsed();
    batch.clear();
    let pos = i32::try_from(prompt.len()).map_err(|_| "prompt too long")?;
    batch.push(prompt[last], pos, 0, true).ok_or("batch full")?;
    let t = Instant::now();
    ctx.decode(&batch)
        .map_err(|rc| format!("decode failed: {rc}"))?;
    phases.next_token = t.elapsed();
    Ok(phases)
}

/// Asks the kernel to drop the cached pages of `path` (clean pages that no
/// process maps), so the next read comes from the disk.
fn evict_from_page_cache(path: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd as _;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: the descriptor is open for the call; fadvise only advises
    // the kernel about the file's cached pages.
    let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc == 0 {
        Ok(())
    } else {
        Err(format!("posix_fadvise: error {rc}"))
    }
}
