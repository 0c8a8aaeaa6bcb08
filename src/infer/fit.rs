//! Fitting a conversation into the context: the oldest non-system messages
//! are dropped until the rendered prompt is shorter than the context (the
//! last message always stays), the same outcome as Ollama's `chatPrompt`
//! with `truncate`.
//!
//! Ollama renders and tokenizes the whole remaining conversation once per
//! dropped message, which is quadratic: a 50,000-message chat never gets an
//! answer. Here the kept tail is found by doubling it from the end and then
//! bisecting, so the work is one render of the whole conversation plus a
//! few renders of tails no longer than what fits. It runs on a blocking
//! thread ([`super::blocking`]), never on an async worker.

use std::sync::Arc;

use serde_json::Value;

use super::media;
use super::model::ResolvedModel;
use super::Error;
use crate::engine;
use crate::prompt::{self, Input, Message};

/// A conversation rendered and tokenized.
pub(super) struct Fitted {
    /// The rendered prompt.
    pub(super) text: String,
    /// Its tokens (its text tokens when it has images).
    pub(super) tokens: Vec<i32>,
    /// The prompt with its images, when it has any.
    pub(super) media: Option<engine::MediaPrompt>,
    /// Prompt length in positions, images included.
    len: usize,
}

/// Renders `messages` (system messages first, as the caller built them) and
/// drops the oldest non-system ones while the prompt is `limit` tokens or
/// longer and `truncate` allows.
pub(super) fn fit(
    runner: &engine::Runner,
    model: &ResolvedModel,
    messages: &[Message],
    tools: Option<&Value>,
    limit: usize,
    truncate: bool,
) -> Result<Fitted, Error> {
    search(messages, limit, truncate, |from| {
        render(runner, model, &kept(messages, from), tools)
    })
}

/// The search behind [`fit`]: `measure(from)` renders the system messages
/// before `from` and every message from `from` on.
fn search(
    messages: &[Message],
    limit: usize,
    truncate: bool,
    mut measure: impl FnMut(usize) -> Result<Fitted, Error>,
) -> Result<Fitted, Error> {
    // The first message that may be dropped; the last always stays.
    let last = messages.len().saturating_sub(1);
    let first = messages
        .iter()
        .position(|m| m.role != "system")
        .filter(|&f| f < last && truncate);
    let Some(first) = first else {
        return measure(0);
    };
    // Tails start at `from` in first..=last; from `first` on nothing is
    // dropped (only system messages come before it). Double the tail from
    // the end until one does not fit or nothing is left to drop, then
    // bisect between the shortest tail that failed and the longest that
    // fit: a shorter tail never renders longer. The whole conversation is
    // rendered only when its newer half fits.
    let mut tail = 1usize;
    let mut fitted: Option<(usize, Fitted)> = None;
    let (mut fails_from, failed) = loop {
        let from = (last + 1).saturating_sub(tail).max(first);
        let candidate = measure(from)?;
        if candidate.len >= limit {
            break (from, candidate);
        }
        if from == first {
            return Ok(candidate);
        }
        fitted = Some((from, candidate));
        tail = tail.saturating_mul(2);
    };
    let Some((mut good, mut best)) = fitted else {
        // Even the last message alone is too long: it goes as it is, and
        // the runner answers that the prompt does not fit.
        return Ok(failed);
    };
    // Tails from `good` fit, tails from `fails_from` do not.
    while good - fails_from > 1 {
        let mid = fails_from + (good - fails_from) / 2;
        let candidate = measure(mid)?;
        if candidate.len < limit {
            good = mid;
            best = candidate;
        } else {
            fails_from = mid;
        }
    }
    Ok(best)
}

/// The system messages before `from`, then everything from `from` on.
fn kept(messages: &[Message], from: usize) -> Vec<Message> {
    messages[..from]
        .iter()
        .filter(|m| m.role == "system")
        .chain(&messages[from..])
        .cloned()
        .collect()
}

/// Tags images, renders and tokenizes one candidate conversation.
fn render(
    runner: &engine::Runner,
    model: &ResolvedModel,
    messages: &[Message],
    tools: Option<&Value>,
) -> Result<Fitted, Error> {
    let (tagged, images) = media::tag(messages)?;
    let text = prompt::render(
        &model.template,
        &Input {
            messages: &tagged,
            tools,
            suffix: None,
        },
    )
    .map_err(|e| Error::Template(e.to_string()))?;
    if images.is_empty() {
        let tokens = tokenize_bounded(runner, &text, true, runner.info().n_ctx as usize)
            .map_err(|e| Error::Internal(e.to_string()))?;
        return Ok(Fitted {
            len: tokens.len(),
            text,
            tokens,
            media: None,
        });
    }
    let m = runner
        .tokenize_media(&media::split(&text, &images), true)
        .map_err(super::prepare::media_error)?;
    Ok(Fitted {
        len: m.n_pos(),
        tokens: m.text_tokens(),
        media: Some(m),
        text,
    })
}

/// Bytes of text per token that no vocabulary's tokens average over a
/// context's worth of text (English averages about 4).
const MAX_BYTES_PER_TOKEN: usize = 64;

/// Tokenizes a prompt. One longer than `n_ctx` × 64 bytes cannot fit the
/// context, and the runner keeps only its first `num_keep` tokens and its
/// newest ones (`num_keep` < `n_ctx`): so only its start and its end are
/// tokenized, each stretch grown from `n_ctx` × 8 bytes until it gives more
/// than `n_ctx` tokens (at most `n_ctx` × 64 bytes), and the token at each
/// cut is dropped. llama.cpp's tokenizer takes about 25 bytes of memory per
/// byte of text and about a second per MB: a 50 MB prompt cost 1.3 GB and
/// 50 s whole (measured), and costs what two contexts of text cost here.
pub(super) fn tokenize_bounded(
    runner: &engine::Runner,
    text: &str,
    add_special: bool,
    n_ctx: usize,
) -> Result<Vec<i32>, engine::Error> {
    let most = n_ctx.max(1).saturating_mul(MAX_BYTES_PER_TOKEN);
    if text.len() <= most {
        return runner.tokenize(text, add_special, true);
    }
    let grow = |tokenize: &dyn Fn(usize) -> Result<Vec<i32>, engine::Error>| {
        let mut window = n_ctx.max(1).saturating_mul(8);
        loop {
            let tokens = tokenize(window)?;
            if tokens.len() > n_ctx || window >= most {
                return Ok::<_, engine::Error>(tokens);
            }
            window = window.saturating_mul(2).min(most);
        }
    };
    let mut tokens = grow(&|window| {
        let end = floor_char_boundary(text, window);
        runner.tokenize(&text[..end], add_special, true)
    })?;
    tokens.truncate(n_ctx.saturating_sub(1));
    let tail = grow(&|window| {
        let start = ceil_char_boundary(text, text.len().saturating_sub(window));
        runner.tokenize(&text[start..], false, true)
    })?;
    tokens.extend(tail.iter().skip(1));
    Ok(tokens)
}

/// A text longer than the two stretches [`tokenize_bounded`] reads, cut to
/// those: its first and last `n_ctx` × 64 bytes. Each holds more tokens
/// than the context, so what the runner keeps of the prompt (its first
/// `num_keep` tokens and its newest) is the same, and the copies that
/// rendering and tokenizing make stay small: a 50 MB prompt is 0.5 MB at
/// `num_ctx` 4096 from here on.
pub(super) fn cut_middle(text: String, n_ctx: usize) -> String {
    let most = n_ctx.max(1).saturating_mul(MAX_BYTES_PER_TOKEN);
    let head = floor_char_boundary(&text, most);
    let tail = ceil_char_boundary(&text, text.len().saturating_sub(most));
    if tail <= head {
        return text;
    }
    let mut cut = String::with_capacity(head.saturating_add(text.len() - tail));
    cut.push_str(&text[..head]);
    cut.push_str(&text[tail..]);
    cut
}

/// The largest char boundary at or before `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The smallest char boundary at or after `at`.
fn ceil_char_boundary(text: &str, at: usize) -> usize {
    let mut at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// Fits on a blocking thread: rendering and tokenizing a long conversation
/// (or decoding its images) would stall an async worker.
pub(super) async fn fit_blocking(
    runner: Arc<engine::Runner>,
    model: Arc<ResolvedModel>,
    messages: Vec<Message>,
    tools: Option<Value>,
    limit: usize,
    truncate: bool,
) -> Result<Fitted, Error> {
    super::blocking(move || fit(&runner, &model, &messages, tools.as_ref(), limit, truncate)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(role: &str, len: usize) -> Message {
        Message {
            role: role.into(),
            content: "x".repeat(len),
            ..Message::default()
        }
    }

    /// Counts characters as tokens, one more per message for its framing.
    fn length(messages: &[Message]) -> Fitted {
        Fitted {
            text: String::new(),
            tokens: Vec::new(),
            media: None,
            len: messages.iter().map(|m| m.content.len() + 1).sum(),
        }
    }

    /// Ollama's way, one dropped message at a time, for comparison.
    fn one_at_a_time(mut messages: Vec<Message>, limit: usize) -> usize {
        loop {
            let len = length(&messages).len;
            let droppable = messages
                .iter()
                .position(|m| m.role != "system")
                .filter(|&i| i + 1 < messages.len());
            match droppable {
                Some(i) if len >= limit => {
                    messages.remove(i);
                }
                _ => return len,
            }
        }
    }

    #[test]
    fn keeps_what_dropping_one_at_a_time_keeps() {
        let mut seed = 7u64;
        for case in 0..300 {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let n = 1 + (seed >> 33) as usize % 40;
            let messages: Vec<Message> = (0..n)
                .map(|i| {
                    let r = (seed >> (i % 50)) as usize;
                    let role = if r.is_multiple_of(7) {
                        "system"
                    } else {
                        "user"
                    };
                    message(role, 1 + (r >> 3) % 30)
                })
                .collect();
            let limit = 1 + (seed >> 20) as usize % 400;
            let mut renders = 0;
            let got = search(&messages, limit, true, |from| {
                renders += 1;
                Ok(length(&kept(&messages, from)))
            })
            .expect("search");
            assert_eq!(
                got.len,
                one_at_a_time(messages.clone(), limit),
                "case {case}"
            );
            assert!(
                renders <= 1 + 2 * (usize::BITS - n.leading_zeros()) as usize,
                "{renders} renders of {n}"
            );
        }
    }

    #[test]
    fn without_truncate_the_whole_conversation_goes() {
        let messages = vec![message("user", 50), message("user", 50)];
        let got = search(&messages, 10, false, |from| {
            Ok(length(&kept(&messages, from)))
        })
        .expect("search");
        assert_eq!(got.len, 102);
    }
}
