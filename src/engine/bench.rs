//! A small speed probe through the public engine API.
//!
//! It measures what a client sees (prompt evaluation and decode rates of one
//! greedy generation) so the numbers include scheduling overhead. Choosing
//! models, printing and comparing runs is left to the caller (see
//! `src/bin/engbench.rs` in the scratch crate, or a future `hearth bench`).

use std::sync::mpsc;
use std::time::Duration;

use super::{Error, Event, GenerateRequest, Runner, SamplingParams};

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
