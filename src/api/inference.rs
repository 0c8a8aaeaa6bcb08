//! Inference routes: `/api/generate`, `/api/chat` and `/api/ps`.
//!
//! Parsing the request and writing Ollama's JSON (NDJSON chunks, or one
//! object) happen here; preparing the request and reading the engine's
//! events are `infer`'s. Decoding runs on the model's runner thread.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Response;

use super::body::{self, Body};
use super::models::details;
use super::types::{
    nanos, rfc3339, AssistantMessage, ChatRequest, Chunk, ChunkBody, GenerateRequest, LogprobEntry,
    Metrics, ModelList, RunningModel, ToolCall, ToolFunction,
};
use super::{blocking, AppState};
use crate::error::{error_json, ApiError};
use crate::infer::answer::{self, Update};
use crate::infer::prepare::{prepare_chat, prepare_generate, Job, Kind, Prepared};
use crate::infer::shape::Piece;
use crate::infer::stream::{Logprob, Outcome};
use crate::tools;

/// A chunk with text (and reasoning) and nothing else.
fn chunk<'a>(kind: &Kind, model: &'a str, text: &'a str, thinking: Option<&'a str>) -> Chunk<'a> {
    let body = match kind {
        Kind::Generate { .. } => ChunkBody::Generate {
            response: text,
            thinking,
        },
        Kind::Chat => ChunkBody::Chat {
            message: AssistantMessage {
                role: "assistant",
                content: text,
                thinking,
                tool_calls: None,
            },
        },
    };
    Chunk {
        model,
        created_at: rfc3339(SystemTime::now()),
        body,
        done: false,
        done_reason: None,
        context: None,
        metrics: Metrics::default(),
        logprobs: None,
    }
}

/// Replies that need no generation: `load` and `unload`.
fn short_reply(kind: &Kind, model: &str, reason: &str) -> Result<Response<Body>, ApiError> {
    let mut c = chunk(kind, model, "", None);
    c.done = true;
    c.done_reason = Some(reason);
    body::json(&c)
}

/// `POST /api/generate`.
pub async fn generate(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: GenerateRequest = body::read_json(body).await?;
    let model = req.model.clone();
    match prepare_generate(state, req).await? {
        Prepared::Reply(reason) => short_reply(&Kind::Generate { context: None }, &model, reason),
        Prepared::Run(job, lease) => run(*job, lease).await,
    }
}

/// `POST /api/chat`.
pub async fn chat(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: ChatRequest = body::read_json(body).await?;
    let model = req.model.clone();
    match prepare_chat(state, req).await? {
        Prepared::Reply(reason) => short_reply(&Kind::Chat, &model, reason),
        Prepared::Run(job, lease) => run(*job, lease).await,
    }
}

/// Ollama's `logprobs` array: token text, log probability, bytes and (when
/// asked) the most likely alternatives.
pub(super) fn logprobs_json(lps: &[Logprob], top: usize) -> Vec<LogprobEntry<'_>> {
    fn entry(bytes: &[u8], logprob: f32) -> LogprobEntry<'_> {
        LogprobEntry {
            token: String::from_utf8_lossy(bytes).into_owned(),
            logprob,
            bytes,
            top_logprobs: None,
        }
    }
    lps.iter()
        .map(|lp| LogprobEntry {
            top_logprobs: (top > 0).then(|| lp.top.iter().map(|(b, l)| entry(b, *l)).collect()),
            ..entry(&lp.bytes, lp.logprob)
        })
        .collect()
}

/// Starts the generation and answers, streaming or not.
async fn run(job: Job, lease: crate::scheduler::Lease) -> Result<Response<Body>, ApiError> {
    if !job.stream {
        let a = answer::complete(&job, lease).await?;
        let top = job.logprobs.unwrap_or(0);
        let calls = tool_calls(&a.calls);
        let mut c = final_chunk(&job, &a.outcome, a.load, false);
        c.logprobs = a.logprobs.as_deref().map(|l| logprobs_json(l, top));
        let thinking = (!a.thinking.is_empty()).then_some(a.thinking.as_str());
        match &mut c.body {
            ChunkBody::Generate { thinking: t, .. } => *t = thinking,
            ChunkBody::Chat { message } => {
                message.thinking = thinking;
                message.tool_calls = (!calls.is_empty()).then_some(calls);
            }
        }
        return Ok(body::response(
            hyper::StatusCode::OK,
            "application/json; charset=utf-8",
            body::ndjson_line(&c),
        ));
    }
    let started = answer::begin(&job, &lease)?;
    let (tx, resp) = body::ndjson_stream();
    tokio::spawn(async move {
        let top = job.logprobs.unwrap_or(0);
        fn line<'a>(job: &'a Job, p: &'a Piece) -> Chunk<'a> {
            match p {
                Piece::Content(c) => chunk(&job.kind, &job.model, c, None),
                Piece::Thinking(t) => chunk(&job.kind, &job.model, "", Some(t)),
            }
        }
        let end = answer::stream(&job, lease, started, |update| match update {
            Update::Text(pieces, lps) => {
                let mut lines: Vec<Chunk> = pieces.iter().map(|p| line(&job, p)).collect();
                if let Some(lps) = &lps {
                    // Each chunk carries the log probabilities of its
                    // tokens, with empty text while the text is held back.
                    if lines.is_empty() {
                        lines.push(chunk(&job.kind, &job.model, "", None));
                    }
                    lines[0].logprobs = Some(logprobs_json(lps, top));
                }
                lines.iter().all(|c| tx.send(body::ndjson_line(c)).is_ok())
            }
            Update::Calls(calls) => {
                let mut c = chunk(&job.kind, &job.model, &calls.rest, None);
                if let ChunkBody::Chat { message } = &mut c.body {
                    message.tool_calls = Some(tool_calls(&calls.calls));
                }
                tx.send(body::ndjson_line(&c)).is_ok()
            }
        })
        .await;
        let _ = tx.send(final_line(&job, &end.outcome, end.load));
    });
    Ok(resp)
}

/// Tool calls as Ollama writes them: an id, and the arguments as an object.
pub(super) fn tool_calls(calls: &[tools::Call]) -> Vec<ToolCall<'_>> {
    calls
        .iter()
        .enumerate()
        .map(|(index, c)| ToolCall {
            id: call_id(index),
            function: ToolFunction {
                index,
                name: &c.name,
                arguments: &c.arguments,
            },
        })
        .collect()
}

/// `call_` and 8 characters of [a-z0-9], different per call and request.
pub(super) fn call_id(i: usize) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let seed = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ ((i as u64 + 1) * 0x9e37_79b9_7f4a_7c15);
    let mut x = seed;
    let id: String = (0..8)
        .map(|_| {
            // xorshift: plenty for ids that only need to differ.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            CHARS[(x % CHARS.len() as u64) as usize] as char
        })
        .collect();
    format!("call_{id}")
}

/// The last line of a stream: stats and `done_reason`, or an in-stream error.
fn final_line(job: &Job, o: &Outcome, load: Duration) -> Bytes {
    if let Some(e) = &o.error {
        let mut line = error_json(e).into_bytes();
        line.push(b'\n');
        return Bytes::from(line);
    }
    body::ndjson_line(&final_chunk(job, o, load, true))
}

/// The final chunk: text (when not streamed), `done_reason` and statistics.
fn final_chunk<'a>(job: &'a Job, o: &'a Outcome, load: Duration, streamed: bool) -> Chunk<'a> {
    let text = if streamed { "" } else { o.text.as_str() };
    let mut c = chunk(&job.kind, &job.model, text, None);
    c.done = true;
    c.done_reason = Some(o.done_reason.unwrap_or("stop"));
    if let Kind::Generate { context: Some(ctx) } = &job.kind {
        let mut all = ctx.clone();
        all.extend(&o.out_tokens);
        c.context = Some(all);
    }
    c.metrics = Metrics {
        total_duration: nanos(job.started.elapsed()),
        load_duration: nanos(load),
        prompt_eval_count: o.prompt_eval_count as u64,
        prompt_eval_duration: nanos(o.prompt_eval_duration),
        eval_count: o.eval_count as u64,
        eval_duration: nanos(o.eval_duration),
    };
    c
}

/// `GET /api/ps`.
pub async fn ps(state: &Arc<AppState>) -> Result<Response<Body>, ApiError> {
    let loaded = state.loaded().await?;
    let store = Arc::clone(&state.store);
    let models = blocking(move || {
        let mut out = Vec::new();
        for (r, e) in loaded {
            let mut d = details(&store, &e.manifest);
            d.parent_model = String::new();
            // Forever shows as a far-future time, as Ollama does.
            let expires = r
                .expires_at
                .unwrap_or_else(|| SystemTime::UNIX_EPOCH + Duration::from_secs(10_960_000_000));
            out.push(RunningModel {
                name: r.name.clone(),
                model: r.name,
                size: r.size_bytes,
                digest: r.digest,
                details: d,
                expires_at: rfc3339(expires),
                size_vram: 0,
                context_length: r.context_length,
            });
        }
        Ok(out)
    })
    .await?;
    body::json(&ModelList { models })
}
