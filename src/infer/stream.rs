//! The event stream of one generation: starting it on the runner, and
//! turning the engine's events into text with stop strings (a tail that
//! could still become one is held back) and UTF-8 assembly, plus the
//! statistics of the final chunk. What the text then looks like on the wire
//! is the dialect's business.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::prepare::Job;
use super::Error;
use crate::engine::{self, DoneReason, Event, Utf8Assembler};
use crate::scheduler::Lease;

/// Accumulated statistics and text of one generation.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Everything generated, stop strings cut.
    pub(crate) text: String,
    /// The generated tokens (for `context`).
    pub(crate) out_tokens: Vec<i32>,
    /// Tokens in the prompt, cached or not.
    pub(crate) prompt_eval_count: usize,
    /// Time spent evaluating the prompt.
    pub(crate) prompt_eval_duration: Duration,
    /// Tokens generated.
    pub(crate) eval_count: usize,
    /// Time spent generating.
    pub(crate) eval_duration: Duration,
    /// `stop` or `length`.
    pub(crate) done_reason: Option<&'static str>,
    /// An error that ended the generation.
    pub(crate) error: Option<String>,
    /// Per-token log probabilities, when asked for.
    pub(crate) logprobs: Vec<TokenLp>,
}

/// A generated token's id, bytes and log probabilities.
pub(crate) type TokenLp = (i32, Vec<u8>, engine::TokenLogprob);

/// A token's log probability with its alternatives as bytes, ready to write.
#[derive(Debug)]
pub(crate) struct Logprob {
    /// The token's bytes.
    pub(crate) bytes: Vec<u8>,
    /// Its log probability.
    pub(crate) logprob: f32,
    /// The most likely alternatives, when asked for.
    pub(crate) top: Vec<(Vec<u8>, f32)>,
}

/// Resolves the alternatives' token ids to bytes (through the model's
/// vocabulary), keeping `top` of them (none for 0).
pub(crate) fn resolve_logprobs(lease: &Lease, lps: &[TokenLp], top: usize) -> Vec<Logprob> {
    lps.iter()
        .map(|(_, bytes, lp)| Logprob {
            bytes: bytes.clone(),
            logprob: lp.logprob,
            top: if top > 0 {
                lp.top
                    .iter()
                    .map(|(id, l)| (lease.runner.token_bytes(*id), *l))
                    .collect()
            } else {
                Vec::new()
            },
        })
        .collect()
}

/// Starts the generation on the runner; events arrive on the receiver.
pub(crate) fn start(job: &Job, lease: &Lease) -> Result<mpsc::UnboundedReceiver<Event>, Error> {
    let o = &job.opts;
    let request = engine::GenerateRequest {
        prompt: job.tokens.clone(),
        sampling: engine::SamplingParams {
            temperature: o.temperature,
            top_k: o.top_k,
            top_p: o.top_p,
            min_p: o.min_p,
            typical_p: o.typical_p,
            repeat_last_n: o.repeat_last_n,
            repeat_penalty: o.repeat_penalty,
            presence_penalty: o.presence_penalty,
            frequency_penalty: o.frequency_penalty,
            seed: o.seed,
            grammar: job.grammar.clone(),
        },
        num_predict: predict_limit(o.num_predict, o.num_ctx),
        stop_at_eog: true,
        num_keep: o.num_keep,
        shift: job.shift,
        logprobs: job.logprobs,
        media: job.media.clone(),
    };
    let (etx, erx) = mpsc::unbounded_channel::<Event>();
    lease
        .runner
        .generate(request, Box::new(move |ev| etx.send(ev).is_ok()))
        .map_err(|e| match e {
            engine::Error::PromptTooLong { .. } => Error::TooLong(
                "the prompt is longer than the context length currently available to the model; shorten the prompt, adjust the context length in settings, or use a model with a longer context length",
            ),
            engine::Error::Grammar(g) => Error::Format(format!("invalid format grammar: {g}")),
            other => Error::Internal(other.to_string()),
        })?;
    Ok(erx)
}

/// The most tokens one generation may produce: "no limit" (-1) becomes
/// 10 × `num_ctx`, as Ollama caps it (its `llm/server.go`, as the
/// hostile-input issue measured), and a larger explicit limit is cut to the
/// same bound, so no request generates forever through context shifts.
fn predict_limit(num_predict: i32, num_ctx: u32) -> i32 {
    let cap = i32::try_from(u64::from(num_ctx).saturating_mul(10)).unwrap_or(i32::MAX);
    if num_predict < 0 || num_predict > cap {
        cap
    } else {
        num_predict
    }
}

/// Reads engine events, applies stop strings and UTF-8 assembly, and hands
/// text pieces to `emit` (which returns false when the client is gone).
pub(crate) async fn consume(
    mut rx: mpsc::UnboundedReceiver<Event>,
    stops: &[String],
    mut emit: impl FnMut(&str, &[TokenLp]) -> bool,
) -> Outcome {
    let mut out = Outcome::default();
    // Log probabilities not yet handed to `emit`.
    let mut lp_sent = 0;
    let mut utf8 = Utf8Assembler::new();
    let mut held = String::new();
    let mut eval_started = Instant::now();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::PromptDone {
                prompt_tokens,
                cached_tokens,
                duration,
            } => {
                // The whole prompt, cached tokens included, as Ollama counts
                // it (its runners report the prompt's length before the
                // cache trims it; at v0.33 `llm/llama_server.go` adds
                // llama-server's `cache_n` to `prompt_n`). Clients' usage
                // and cost figures come from this field. The duration is
                // the time actually spent on the uncached part.
                out.prompt_eval_count = prompt_tokens.saturating_add(cached_tokens);
                out.prompt_eval_duration = duration;
                eval_started = Instant::now();
            }
            Event::Token { id, bytes, logprob } => {
                if let Some(lp) = logprob {
                    out.logprobs.push((id, bytes.clone(), lp));
                }
                out.eval_count += 1;
                out.out_tokens.push(id);
                held.push_str(&utf8.push(&bytes));
                if let Some(at) = stops.iter().filter_map(|s| held.find(s.as_str())).min() {
                    held.truncate(at);
                    out.done_reason = Some("stop");
                    out.eval_duration = eval_started.elapsed();
                    if !held.is_empty() || lp_sent < out.logprobs.len() {
                        out.text.push_str(&held);
                        emit(&held, &out.logprobs[lp_sent..]);
                    }
                    return out;
                }
                // Hold back the longest tail that could still become a stop string.
                let keep = stops
                    .iter()
                    .map(|s| partial_suffix(&held, s))
                    .max()
                    .unwrap_or(0);
                let ready = held.len() - keep;
                // Text is handed on when ready; log probabilities go with
                // every token, with empty text while it is held back.
                if ready > 0 || lp_sent < out.logprobs.len() {
                    let piece: String = held.drain(..ready).collect();
                    out.text.push_str(&piece);
                    let ok = emit(&piece, &out.logprobs[lp_sent..]);
                    lp_sent = out.logprobs.len();
                    if !ok {
                        out.error = Some("client disconnected".into());
                        return out;
                    }
                }
            }
            Event::Done {
                reason,
                eval_count,
                eval_duration,
            } => {
                held.push_str(&utf8.finish());
                if !held.is_empty() || lp_sent < out.logprobs.len() {
                    out.text.push_str(&held);
                    emit(&held, &out.logprobs[lp_sent..]);
                }
                out.eval_count = eval_count;
                out.eval_duration = eval_duration;
                out.done_reason = Some(match reason {
                    DoneReason::Stop => "stop",
                    DoneReason::Length => "length",
                });
                return out;
            }
            Event::Error(e) => {
                out.error = Some(e.to_string());
                return out;
            }
        }
    }
    out.error
        .get_or_insert_with(|| "the model runner stopped".into());
    out
}

/// Length of the longest suffix of `text` that is a proper prefix of `stop`.
fn partial_suffix(text: &str, stop: &str) -> usize {
    (1..stop.len().min(text.len() + 1))
        .rev()
        .find(|&n| {
            stop.is_char_boundary(n)
                && text.is_char_boundary(text.len() - n)
                && text.ends_with(&stop[..n])
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_stop_suffixes() {
        assert_eq!(partial_suffix("hello <end", "<end_of_turn>"), 4);
        assert_eq!(partial_suffix("hello", "<end_of_turn>"), 0);
        assert_eq!(partial_suffix("a<", "<x"), 1);
        assert_eq!(partial_suffix("é<", "<é"), 1);
    }

    #[test]
    fn unlimited_generation_is_capped_at_ten_contexts() {
        assert_eq!(predict_limit(-1, 2048), 20_480);
        assert_eq!(predict_limit(-2, 64), 640);
        assert_eq!(predict_limit(100, 64), 100);
        assert_eq!(predict_limit(100_000, 64), 640);
        assert_eq!(predict_limit(-1, u32::MAX), i32::MAX);
    }
}
