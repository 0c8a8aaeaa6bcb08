//! The inference engine: the only module that touches llama.cpp.
//!
//! It owns model loading, tokenization, batched generation over parallel
//! sequences with prefix (KV) reuse, sampling, embeddings and the process-wide
//! CPU budget. It knows nothing of HTTP, async runtimes, JSON, chat templates,
//! stop strings or the model store: callers hand it token ids and sampling
//! settings and get events back through a callback on the runner's thread.
//!
//! Layout: `sys/` holds every `unsafe` call; `runner.rs` the per-model thread
//! handle and `worker.rs` its loop (slots, batches); `cpu.rs` the thread budget; `bench.rs` a reusable speed
//! probe. This file holds the public types.

mod bench;
mod cpu;
mod runner;
mod sys;
#[cfg(test)]
mod tests;
mod worker;

use std::path::PathBuf;
use std::time::Duration;

pub use bench::{bench_decode, bench_request, load_phases, BenchResult, LoadPhases, PhaseSettings};
pub use cpu::{CpuBudget, Policy};
pub use runner::{MediaPrompt, PromptPart, Runner};
pub use sys::Footprint;

/// Whether this build has the vision path (cargo feature `vision`).
pub const VISION: bool = cfg!(feature = "vision");

/// Target types for [`quantize`], with llama.cpp's `llama_ftype` numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Quant {
    /// 4-bit K-quant, medium.
    Q4KM,
    /// 4-bit K-quant, small.
    Q4KS,
    /// 8-bit.
    Q8_0,
    /// Half precision.
    F16,
}

impl Quant {
    /// Parses Ollama's names, case-insensitively (`q4_K_M`, alias `q4_K`).
    pub fn parse(s: &str) -> Option<Quant> {
        match s.to_ascii_uppercase().as_str() {
            "Q4_K_M" | "Q4_K" => Some(Quant::Q4KM),
            "Q4_K_S" => Some(Quant::Q4KS),
            "Q8_0" => Some(Quant::Q8_0),
            "F16" => Some(Quant::F16),
            _ => None,
        }
    }

    /// Average bits per weight of a model in this type (K-quant mixes keep
    /// some tensors at higher precision), for estimating output sizes.
    pub fn bits_per_weight(self) -> f64 {
        match self {
            Quant::Q4KM => 4.9,
            Quant::Q4KS => 4.6,
            Quant::Q8_0 => 8.5,
            Quant::F16 => 16.0,
        }
    }

    /// The name Ollama prints (`Q4_K_M`).
    pub fn name(self) -> &'static str {
        match self {
            Quant::Q4KM => "Q4_K_M",
            Quant::Q4KS => "Q4_K_S",
            Quant::Q8_0 => "Q8_0",
            Quant::F16 => "F16",
        }
    }

    fn ftype(self) -> u32 {
        match self {
            Quant::Q4KM => 15,
            Quant::Q4KS => 14,
            Quant::Q8_0 => 7,
            Quant::F16 => 1,
        }
    }
}

/// Quantizes a GGUF file into another with llama.cpp's quantizer. Blocking;
/// it reads and writes files, so the caller owns where they live.
pub fn quantize(
    input: &std::path::Path,
    output: &std::path::Path,
    quant: Quant,
    threads: usize,
) -> Result<(), Error> {
    sys::quantize(
        input,
        output,
        quant.ftype(),
        i32::try_from(threads).unwrap_or(1),
    )
    .map_err(Error::Quantize)
}

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("failed to load model {path}: {reason}")]
    LoadFailed { path: PathBuf, reason: String },
    #[error("failed to create a llama.cpp context: {0}")]
    ContextFailed(String),
    #[error("failed to tokenize the input")]
    Tokenize,
    #[error("llama_decode failed with code {code}")]
    Decode { code: i32 },
    #[error("prompt of {tokens} tokens does not fit the context of {n_ctx} tokens")]
    PromptTooLong { tokens: usize, n_ctx: usize },
    #[error("the prompt is empty")]
    EmptyPrompt,
    #[error("token id {0} is not in the vocabulary")]
    InvalidToken(i32),
    #[error("invalid grammar: {0}")]
    Grammar(String),
    #[error("sampling failed")]
    Sampling,
    #[error("sampler setup failed: {0}")]
    Sampler(String),
    #[error("no embeddings were produced: {0}")]
    Embeddings(String),
    #[error("this model was loaded for embeddings and cannot generate")]
    NotGenerative,
    #[error("invalid load parameters: {0}")]
    InvalidParams(String),
    #[error("could not start the runner thread: {0}")]
    Spawn(String),
    #[error("the model runner has stopped")]
    RunnerGone,
    #[error("quantization failed: {0}")]
    Quantize(String),
    #[error("this model has no vision projector loaded")]
    NoVision,
    #[error("image {index} could not be decoded as an image")]
    BadImage { index: usize },
    #[error("failed to tokenize the prompt with its images: {0}")]
    MediaTokenize(String),
    #[error("evaluating the prompt with its images failed with code {code}")]
    MediaEval { code: i32 },
}

/// How to load a model and size its context.
#[derive(Clone, Debug)]
pub struct LoadParams {
    /// Context length per sequence (llama.cpp rounds it up to a multiple of 256).
    pub n_ctx: u32,
    /// Max tokens per decode call (also the micro-batch size).
    pub n_batch: u32,
    /// Threads this model may use when it has the CPU to itself.
    pub n_threads: usize,
    /// Parallel sequences (slots) sharing the context.
    pub n_parallel: u32,
    /// Create the context for embeddings (the model's own pooling).
    pub embeddings: bool,
    /// Memory-map the weights instead of reading them.
    pub use_mmap: bool,
    /// KV cache element type; quantized types need flash attention.
    pub kv_type: KvType,
    /// Flash attention: `None` lets llama.cpp decide (on where supported).
    pub flash_attention: Option<bool>,
    /// A multimodal projector (clip GGUF) to load with the model, for
    /// prompts with images.
    pub projector: Option<PathBuf>,
}

impl Default for LoadParams {
    fn default() -> Self {
        LoadParams {
            n_ctx: 2048,
            n_batch: 512,
            n_threads: 2,
            n_parallel: 1,
            embeddings: false,
            use_mmap: true,
            kv_type: KvType::F16,
            flash_attention: None,
            projector: None,
        }
    }
}

/// The KV cache's element type (`OLLAMA_KV_CACHE_TYPE`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// Half precision, Ollama's default.
    #[default]
    F16,
    /// 8-bit: about half the memory of F16, needs flash attention.
    Q8_0,
    /// 4-bit: about a quarter, needs flash attention.
    Q4_0,
}

impl KvType {
    /// Parses Ollama's names (`f16`, `q8_0`, `q4_0`), case-insensitively.
    pub fn parse(s: &str) -> Option<KvType> {
        match s.to_ascii_lowercase().as_str() {
            "f16" => Some(KvType::F16),
            "q8_0" => Some(KvType::Q8_0),
            "q4_0" => Some(KvType::Q4_0),
            _ => None,
        }
    }

    /// The name Ollama uses.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }
}

/// Facts about a loaded model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub n_ctx_train: u32,
    /// Actual context length per sequence after llama.cpp's rounding.
    pub n_ctx: u32,
    pub n_parallel: u32,
    pub n_embd: u32,
    pub n_vocab: u32,
    pub chat_template: Option<String>,
    /// Whether the tokenizer expects a BOS token at the start.
    pub add_bos: bool,
    /// `general.architecture` from the GGUF header.
    pub architecture: Option<String>,
    /// A vision projector is loaded: prompts may carry images.
    pub vision: bool,
}

/// Sampling settings; defaults match Ollama's.
#[derive(Clone, Debug)]
pub struct SamplingParams {
    /// 0 or below means greedy.
    pub temperature: f32,
    pub top_k: i32,
    pub top_p: f32,
    pub min_p: f32,
    pub typical_p: f32,
    /// Tokens of history the penalties look at; -1 = the whole context.
    pub repeat_last_n: i32,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    /// `None` picks a random seed.
    pub seed: Option<u32>,
    /// A GBNF grammar whose start rule is `root`.
    pub grammar: Option<String>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_last_n: 64,
            repeat_penalty: 1.1,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            seed: None,
            grammar: None,
        }
    }
}

/// One generation request.
#[derive(Clone, Debug)]
pub struct GenerateRequest {
    pub prompt: Vec<i32>,
    pub sampling: SamplingParams,
    /// Max tokens to generate; -1 = until end-of-generation or context end.
    pub num_predict: i32,
    /// Stop (without emitting it) when the model produces an EOG token.
    pub stop_at_eog: bool,
    /// Tokens at the start of the prompt that survive truncation and shifts.
    pub num_keep: u32,
    /// Truncate long prompts and shift the context when it fills, instead of
    /// failing / stopping.
    pub shift: bool,
    /// Report each sampled token's log probability and this many most
    /// likely alternatives (`None` = no log probabilities).
    pub logprobs: Option<usize>,
    /// A prompt with images (from [`Runner::tokenize_media`]). When set it
    /// is what gets evaluated, and `prompt` holds only its text tokens (for
    /// the repetition penalties). Such a prompt is never truncated, shifted
    /// or served from another request's KV cache.
    pub media: Option<MediaPrompt>,
}

/// Log probability of a sampled token under the model's distribution (before
/// sampling settings), with the most likely alternatives.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprob {
    /// `ln p(token)`.
    pub logprob: f32,
    /// `(token id, ln p)` of the most likely tokens, most likely first.
    pub top: Vec<(i32, f32)>,
}

impl GenerateRequest {
    /// A request with default sampling that runs until EOG.
    pub fn new(prompt: Vec<i32>) -> Self {
        GenerateRequest {
            prompt,
            sampling: SamplingParams::default(),
            num_predict: -1,
            stop_at_eog: true,
            num_keep: 0,
            shift: true,
            logprobs: None,
            media: None,
        }
    }
}

/// Why a generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DoneReason {
    /// The model produced an end-of-generation token.
    Stop,
    /// `num_predict` was reached, or the context filled without shifting.
    Length,
}

/// What a generation reports, in order: `PromptDone`, `Token`*, then `Done`
/// (or `Error` at any point, which ends the stream).
#[derive(Debug)]
pub enum Event {
    PromptDone {
        /// Prompt tokens evaluated by this request.
        prompt_tokens: usize,
        /// Prompt tokens reused from the slot's KV cache.
        cached_tokens: usize,
        /// From admission to the prompt's logits being ready.
        duration: Duration,
    },
    Token {
        id: i32,
        /// Raw bytes of the token piece; may be a partial UTF-8 sequence
        /// (use [`Utf8Assembler`]).
        bytes: Vec<u8>,
        /// Present when the request asked for log probabilities.
        logprob: Option<TokenLogprob>,
    },
    Done {
        reason: DoneReason,
        /// Tokens generated (the EOG token that ended it is not counted).
        eval_count: usize,
        eval_duration: Duration,
    },
    Error(Error),
}

/// Callback that receives a generation's events on the runner thread.
/// Returning `false` (client gone) cancels the generation at once.
pub type Sink = Box<dyn FnMut(Event) -> bool + Send>;

/// Buffers token bytes and releases only complete UTF-8 characters, so a
/// character split across tokens is never emitted half-way.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the text that is complete so far. Invalid bytes
    /// become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    // `good` is valid UTF-8 by construction.
                    out.push_str(&String::from_utf8_lossy(good));
                    match e.error_len() {
                        // An invalid sequence: replace it and go on.
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            rest = &bad[n..];
                        }
                        // An incomplete sequence at the end: keep it.
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        let keep = rest.to_vec();
        self.pending = keep;
        out
    }

    /// Returns whatever is left (lossily), e.g. at the end of a stream.
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}
