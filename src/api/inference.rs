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
use serde_json::{json, Value};

use super::body::{self, Body};
use super::models::details;
use super::types::{rfc3339, ChatRequest, GenerateRequest};
use super::{blocking, AppState};
use crate::error::{error_json, ApiError};
use crate::infer::prepare::{prepare_chat, prepare_generate, Job, Kind, Prepared};
use crate::infer::shape::{split_answer, Calls, Piece, Shaper};
use crate::infer::stream::{consume, resolve_logprobs, start, Logprob, Outcome};
use crate::scheduler::Lease;
use crate::tools;

fn now() -> String {
    rfc3339(SystemTime::now())
}

fn chunk(kind: &Kind, model: &str, text: &str) -> Value {
    match kind {
        Kind::Generate { .. } => {
            json!({"model": model, "created_at": now(), "response": text, "done": false})
        }
        Kind::Chat => json!({"model": model, "created_at": now(),
            "message": {"role": "assistant", "content": text}, "done": false}),
    }
}

/// Replies that need no generation: `load` and `unload`.
fn short_reply(kind: &Kind, model: &str, reason: &str) -> Result<Response<Body>, ApiError> {
    let mut v = chunk(kind, model, "");
    v["done"] = Value::Bool(true);
    v["done_reason"] = Value::String(reason.into());
    body::json(&v)
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
pub(super) fn logprobs_json(lps: &[Logprob], top: usize) -> Value {
    let entry = |bytes: &[u8], logprob: f32| json!({"token": String::from_utf8_lossy(bytes), "logprob": logprob, "bytes": bytes});
    let list: Vec<Value> = lps
        .iter()
        .map(|lp| {
            let mut v = entry(&lp.bytes, lp.logprob);
            if top > 0 {
                let alts: Vec<Value> = lp.top.iter().map(|(b, l)| entry(b, *l)).collect();
                v["top_logprobs"] = Value::Array(alts);
            }
            v
        })
        .collect();
    Value::Array(list)
}

/// Starts the generation and answers, streaming or not.
async fn run(job: Job, lease: Lease) -> Result<Response<Body>, ApiError> {
    let erx = start(&job, &lease)?;
    if !job.stream {
        let mut outcome = consume(erx, &job.opts.stop, |_, _| true).await;
        let load = lease.load_duration;
        let logprobs = job
            .logprobs
            .map(|top| logprobs_json(&resolve_logprobs(&lease, &outcome.logprobs, top), top));
        drop(lease);
        if let Some(e) = &outcome.error {
            if outcome.text.is_empty() {
                return Err(ApiError::Internal(e.clone()));
            }
        }
        let (thinking, content, calls) = split_answer(job.think, job.tools, &outcome.text);
        outcome.text = content;
        let mut line = final_fields(&job, &outcome, load, false);
        if !calls.is_empty() {
            line["message"]["tool_calls"] = tool_calls_json(&calls);
        }
        if !thinking.is_empty() {
            set_thinking(&mut line, &job.kind, &thinking);
        }
        if let Some(logprobs) = logprobs {
            line["logprobs"] = logprobs;
        }
        return Ok(super::body::response(
            hyper::StatusCode::OK,
            "application/json; charset=utf-8",
            body::ndjson_line(&line),
        ));
    }
    let (tx, resp) = body::ndjson_stream();
    tokio::spawn(async move {
        let lease = lease;
        let piece_line = |p: &Piece| match p {
            Piece::Content(c) => chunk(&job.kind, &job.model, c),
            Piece::Thinking(t) => {
                let mut v = chunk(&job.kind, &job.model, "");
                set_thinking(&mut v, &job.kind, t);
                v
            }
        };
        let mut shaper = Shaper::new(job.think, job.tools);
        let mut outcome = consume(erx, &job.opts.stop, |text, lps| {
            let mut lines: Vec<Value> = shaper.push(text).iter().map(piece_line).collect();
            if let (Some(top), false) = (job.logprobs, lps.is_empty()) {
                // Each chunk carries the log probabilities of its tokens,
                // with empty text while the text is held back.
                if lines.is_empty() {
                    lines.push(chunk(&job.kind, &job.model, ""));
                }
                lines[0]["logprobs"] = logprobs_json(&resolve_logprobs(&lease, lps, top), top);
            }
            lines.iter().all(|v| tx.send(body::ndjson_line(v)).is_ok())
        })
        .await;
        let (rest, calls) = shaper.finish();
        for p in &rest {
            let _ = tx.send(body::ndjson_line(&piece_line(p)));
        }
        if let Some(Calls { calls, rest }) = calls {
            let mut v = chunk(&job.kind, &job.model, &rest);
            v["message"]["tool_calls"] = tool_calls_json(&calls);
            let _ = tx.send(body::ndjson_line(&v));
            outcome.text = rest;
        }
        let _ = tx.send(final_line(&job, &outcome, lease.load_duration, true));
        drop(lease);
    });
    Ok(resp)
}

/// Puts reasoning where Ollama does: `thinking` (generate) or
/// `message.thinking` (chat).
fn set_thinking(v: &mut Value, kind: &Kind, thinking: &str) {
    match kind {
        Kind::Generate { .. } => v["thinking"] = Value::String(thinking.into()),
        Kind::Chat => v["message"]["thinking"] = Value::String(thinking.into()),
    }
}

/// Tool calls as Ollama writes them: an id, and the arguments as an object.
pub(super) fn tool_calls_json(calls: &[tools::Call]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": call_id(i), "function": {"index": i, "name": c.name, "arguments": c.arguments}})
        })
        .collect();
    Value::Array(calls)
}

/// `call_` and 8 characters of [a-z0-9], different per call and request.
fn call_id(i: usize) -> String {
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

/// The last line: stats and `done_reason`, or an in-stream error.
fn final_line(job: &Job, o: &Outcome, load: Duration, streamed: bool) -> Bytes {
    if let Some(e) = &o.error {
        if streamed || o.text.is_empty() {
            let mut line = error_json(e).into_bytes();
            line.push(b'\n');
            return Bytes::from(line);
        }
    }
    body::ndjson_line(&final_fields(job, o, load, streamed))
}

/// The final chunk: text (when not streamed), `done_reason` and statistics.
fn final_fields(job: &Job, o: &Outcome, load: Duration, streamed: bool) -> Value {
    let text = if streamed { "" } else { o.text.as_str() };
    let mut v = chunk(&job.kind, &job.model, text);
    v["done"] = Value::Bool(true);
    v["done_reason"] = Value::String(o.done_reason.unwrap_or("stop").into());
    if let Kind::Generate { context: Some(ctx) } = &job.kind {
        let mut all = ctx.clone();
        all.extend(&o.out_tokens);
        v["context"] = json!(all);
    }
    let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    let metrics = [
        ("total_duration", nanos(job.started.elapsed())),
        ("load_duration", nanos(load)),
        ("prompt_eval_count", o.prompt_eval_count as u64),
        ("prompt_eval_duration", nanos(o.prompt_eval_duration)),
        ("eval_count", o.eval_count as u64),
        ("eval_duration", nanos(o.eval_duration)),
    ];
    for (k, n) in metrics {
        if n > 0 {
            v[k] = json!(n);
        }
    }
    v
}

/// `GET /api/ps`.
pub async fn ps(state: &Arc<AppState>) -> Result<Response<Body>, ApiError> {
    let running = state.scheduler.running();
    let store = Arc::clone(&state.store);
    let models = blocking(move || {
        let entries = store.list()?;
        let mut out = Vec::new();
        for r in running {
            let Some(e) = entries.iter().find(|e| e.digest == r.digest) else {
                continue;
            };
            let mut d = details(&store, &e.manifest);
            d.parent_model = String::new();
            // Forever shows as a far-future time, as Ollama does.
            let expires = r
                .expires_at
                .unwrap_or_else(|| SystemTime::UNIX_EPOCH + Duration::from_secs(10_960_000_000));
            out.push(json!({
                "name": r.name,
                "model": r.name,
                "size": r.size_bytes,
                "digest": r.digest,
                "details": d,
                "expires_at": rfc3339(expires),
                "size_vram": 0,
                "context_length": r.context_length,
            }));
        }
        Ok(out)
    })
    .await?;
    body::json(&json!({ "models": models }))
}
