//! OpenAI-compatible routes under `/v1`: requests are translated into the
//! native chat/generate/embed requests (`request.rs`) and answers back into
//! OpenAI's shapes (`wire.rs`; SSE when streaming, OpenAI's error object on
//! failure).

mod request;
mod wire;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response};
use serde::Serialize;
use serde_json::Value;

use super::body::{self, Body};
use super::inference::logprobs_json;
use super::types::{ChatRequest, GenerateRequest, Settings};
use super::{blocking, AppState};
use crate::error::ApiError;
use crate::infer::answer::{self, Update};
use crate::infer::embed::embed_texts;
use crate::infer::prepare::{prepare_chat, prepare_generate, Job, Prepared};
use crate::infer::shape::Piece;
use crate::infer::stream::{Logprob, Outcome};
use crate::model::ModelName;
use crate::scheduler::Lease;
use request::{format_of, native_messages, ChatCompletionRequest, CompletionRequest};
use wire::{
    ChatChoice, Completion, Delta, DeltaChoice, EmbedUsage, Embedding, EmbeddingData, ErrorBody,
    List, Logprobs, TextChoice, Usage,
};

/// Answers any `/v1/...` request; errors come back in OpenAI's shape.
pub async fn route(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    body: Incoming,
) -> Response<Body> {
    let result = match (method, path) {
        (&Method::POST, "/v1/chat/completions") => chat_completions(state, body).await,
        (&Method::POST, "/v1/completions") => completions(state, body).await,
        (&Method::POST, "/v1/embeddings") => embeddings(state, body).await,
        (&Method::GET, "/v1/models") => models(state).await,
        (&Method::GET, p) if p.starts_with("/v1/models/") => {
            model(state, &p["/v1/models/".len()..]).await
        }
        _ => Err(ApiError::NotFound(format!("unknown route {path}"))),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// `{"error": {"message", "type", "param", "code"}}` with the native status.
fn error_response(e: &ApiError) -> Response<Body> {
    let status = e.status();
    let kind = match status.as_u16() {
        400 => "invalid_request_error",
        404 => "not_found_error",
        _ => "api_error",
    };
    if status.is_server_error() {
        log::error!("{e}");
    }
    let message = e.to_string();
    let v = serde_json::to_string(&ErrorBody::new(&message, kind)).unwrap_or_default();
    body::response(status, "application/json", v)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A short pseudo-random id suffix, as Ollama's `chatcmpl-<n>`.
fn id_number() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
        % 999
}

/// One SSE event.
fn sse(v: &impl Serialize) -> Bytes {
    let json = serde_json::to_string(v).unwrap_or_default();
    Bytes::from(format!("data: {json}\n\n"))
}

fn sse_response() -> (body::StreamTx, Response<Body>) {
    let (tx, mut resp) = body::ndjson_stream();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    (tx, resp)
}

/// What a finished generation reports as `finish_reason`.
fn finish_reason(o: &Outcome) -> &'static str {
    o.done_reason.unwrap_or("stop")
}

/// Which shape the answer has.
#[derive(Clone, Copy)]
enum Shape {
    Chat,
    Text,
}

/// What every completion and chunk of one answer share.
struct Head {
    id: String,
    created: u64,
    model: String,
}

impl Head {
    fn new(shape: Shape, model: String) -> Head {
        let prefix = match shape {
            Shape::Chat => "chatcmpl",
            Shape::Text => "cmpl",
        };
        Head {
            id: format!("{prefix}-{}", id_number()),
            created: unix_now(),
            model,
        }
    }

    fn with<C>(
        &self,
        object: &'static str,
        choices: Vec<C>,
        usage: Option<Usage>,
    ) -> Completion<'_, C> {
        Completion {
            id: &self.id,
            object,
            created: self.created,
            model: &self.model,
            system_fingerprint: "fp_ollama",
            choices,
            usage,
        }
    }

    /// One chunk with one choice.
    fn event<C: Serialize>(&self, object: &'static str, choice: C) -> Bytes {
        sse(&self.with(object, vec![choice], None))
    }
}

fn logprobs_of(lps: Option<&[Logprob]>, top: usize) -> Option<Logprobs<'_>> {
    lps.map(|l| Logprobs {
        content: logprobs_json(l, top),
    })
}

/// Runs a prepared generation and answers in OpenAI's shape.
async fn answer(
    shape: Shape,
    model: String,
    job: Job,
    lease: Lease,
    include_usage: bool,
) -> Result<Response<Body>, ApiError> {
    let head = Head::new(shape, model);
    let prompt_tokens = job.tokens_len();
    let top = job.logprobs.unwrap_or(0);
    if !job.stream {
        let a = answer::complete(&job, lease).await?;
        if let Some(e) = &a.outcome.error {
            return Err(ApiError::Internal(e.clone()));
        }
        let usage = Some(Usage::new(prompt_tokens, a.outcome.eval_count));
        let logprobs = logprobs_of(a.logprobs.as_deref(), top);
        return match shape {
            Shape::Chat => {
                let calls = wire::tool_calls(&a.calls);
                let finish_reason = if calls.is_empty() {
                    finish_reason(&a.outcome)
                } else {
                    "tool_calls"
                };
                let choice = ChatChoice {
                    index: 0,
                    message: Delta {
                        role: Some("assistant"),
                        content: Some(&a.content),
                        reasoning: (!a.thinking.is_empty()).then_some(a.thinking.as_str()),
                        tool_calls: (!calls.is_empty()).then_some(calls),
                    },
                    finish_reason,
                    logprobs,
                };
                body::json(&head.with("chat.completion", vec![choice], usage))
            }
            Shape::Text => {
                let choice = TextChoice {
                    index: 0,
                    text: &a.content,
                    finish_reason: Some(finish_reason(&a.outcome)),
                    logprobs,
                };
                body::json(&head.with("text_completion", vec![choice], usage))
            }
        };
    }
    let started = answer::begin(&job, &lease)?;
    let (tx, resp) = sse_response();
    tokio::spawn(async move {
        let object = match shape {
            Shape::Chat => "chat.completion.chunk",
            Shape::Text => "text_completion",
        };
        let mut first = true;
        // One event for a piece of text (or reasoning), with the log
        // probabilities of its tokens.
        let mut event = |p: &Piece, lps: Option<&[Logprob]>| -> Bytes {
            let logprobs = logprobs_of(lps, top);
            match (shape, p) {
                (Shape::Chat, _) => {
                    let mut delta = Delta::default();
                    match p {
                        Piece::Thinking(t) => delta.reasoning = Some(t),
                        Piece::Content(c) => {
                            delta.content = Some(c);
                            if first {
                                delta.role = Some("assistant");
                            }
                            first = false;
                        }
                    }
                    let finish_reason = None;
                    head.event(
                        object,
                        DeltaChoice {
                            index: 0,
                            delta,
                            finish_reason,
                            logprobs,
                        },
                    )
                }
                (Shape::Text, Piece::Thinking(text) | Piece::Content(text)) => {
                    let finish_reason = None;
                    head.event(
                        object,
                        TextChoice {
                            index: 0,
                            text,
                            finish_reason,
                            logprobs,
                        },
                    )
                }
            }
        };
        let mut called = false;
        let end = answer::stream(&job, lease, started, |update| match update {
            Update::Text(pieces, lps) => {
                let mut lps = lps.as_deref();
                // Log probabilities go with the first event (an empty one
                // while the text is held back).
                let mut events: Vec<Bytes> = pieces.iter().map(|p| event(p, lps.take())).collect();
                if lps.is_some() {
                    events.push(event(&Piece::Content(String::new()), lps));
                }
                events.into_iter().all(|e| tx.send(e).is_ok())
            }
            Update::Calls(c) => {
                let e = match shape {
                    Shape::Chat => {
                        called = true;
                        let delta = Delta {
                            content: Some(&c.rest),
                            tool_calls: Some(wire::tool_calls(&c.calls)),
                            ..Delta::default()
                        };
                        let (finish_reason, logprobs) = (None, None);
                        head.event(
                            object,
                            DeltaChoice {
                                index: 0,
                                delta,
                                finish_reason,
                                logprobs,
                            },
                        )
                    }
                    Shape::Text => event(&Piece::Content(c.rest), None),
                };
                tx.send(e).is_ok()
            }
        })
        .await;
        let o = &end.outcome;
        if let Some(e) = &o.error {
            let _ = tx.send(sse(&ErrorBody::new(e, "api_error")));
        } else {
            let finish_reason = Some(if called {
                "tool_calls"
            } else {
                finish_reason(o)
            });
            let last = match shape {
                Shape::Chat => {
                    let delta = Delta::default();
                    head.event(
                        object,
                        DeltaChoice {
                            index: 0,
                            delta,
                            finish_reason,
                            logprobs: None,
                        },
                    )
                }
                Shape::Text => head.event(
                    object,
                    TextChoice {
                        index: 0,
                        text: "",
                        finish_reason,
                        logprobs: None,
                    },
                ),
            };
            let _ = tx.send(last);
            if include_usage {
                let usage = Some(Usage::new(prompt_tokens, o.eval_count));
                let _ = tx.send(sse(&head.with::<TextChoice>(object, Vec::new(), usage)));
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n"));
    });
    Ok(resp)
}

async fn chat_completions(
    state: &Arc<AppState>,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let req: ChatCompletionRequest = body::read_json(body).await?;
    if req.messages.is_empty() {
        return Err(ApiError::BadRequest("[] is too short - 'messages'".into()));
    }
    let native = ChatRequest {
        model: req.model.clone(),
        messages: native_messages(&req.messages)?,
        tools: req.tools.clone(),
        settings: Settings {
            logprobs: req.logprobs,
            top_logprobs: req.top_logprobs,
            think: req.reasoning_effort.as_deref().map(|e| match e {
                "none" => Value::Bool(false),
                level => Value::String(level.to_string()),
            }),
            format: format_of(req.response_format.as_ref()),
            ..req.sampling.settings()?
        },
    };
    match prepare_chat(state, native).await? {
        Prepared::Run(job, lease) => {
            answer(
                Shape::Chat,
                req.model,
                *job,
                lease,
                req.sampling.include_usage(),
            )
            .await
        }
        Prepared::Reply(_) => Err(ApiError::BadRequest("[] is too short - 'messages'".into())),
    }
}

async fn completions(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: CompletionRequest = body::read_json(body).await?;
    let Value::String(prompt) = &req.prompt else {
        return Err(ApiError::BadRequest("prompt must be a string".into()));
    };
    let native = GenerateRequest {
        model: req.model.clone(),
        prompt: prompt.clone(),
        suffix: req.suffix.clone(),
        settings: Settings {
            logprobs: req.logprobs.map(|n| n > 0),
            top_logprobs: req.logprobs.filter(|&n| n > 0),
            ..req.sampling.settings()?
        },
        ..GenerateRequest::default()
    };
    match prepare_generate(state, native).await? {
        Prepared::Run(job, lease) => {
            answer(
                Shape::Text,
                req.model,
                *job,
                lease,
                req.sampling.include_usage(),
            )
            .await
        }
        Prepared::Reply(_) => {
            let head = Head::new(Shape::Text, req.model);
            let choice = TextChoice {
                index: 0,
                text: "",
                finish_reason: Some("stop"),
                logprobs: None,
            };
            body::json(&head.with("text_completion", vec![choice], Some(Usage::new(0, 0))))
        }
    }
}

async fn embeddings(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: Value = body::read_json(body).await?;
    let model = req["model"].as_str().unwrap_or_default().to_string();
    let inputs: Vec<String> = match &req["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) if !a.is_empty() && a.iter().all(Value::is_string) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => return Err(ApiError::BadRequest("invalid input".into())),
    };
    let base64 = match req["encoding_format"].as_str() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
            "Invalid value for 'encoding_format' = {other}. Supported values: ['float', 'base64']."
        )))
        }
    };
    let dims = req["dimensions"].as_u64().unwrap_or(0) as usize;
    let (vectors, tokens) = embed_texts(state, &model, inputs, dims).await?;
    let data: Vec<Embedding> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, v)| Embedding {
            object: "embedding",
            embedding: if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                EmbeddingData::Base64(base64_encode(&bytes))
            } else {
                EmbeddingData::Floats(v)
            },
            index,
        })
        .collect();
    body::json(&List {
        object: "list",
        data,
        model: Some(model),
        usage: Some(EmbedUsage {
            prompt_tokens: tokens,
            total_tokens: tokens,
        }),
    })
}

/// Standard base64 with padding.
fn base64_encode(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(TABLE[((n >> shift) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn model_object(name: &ModelName, modified: SystemTime) -> wire::ModelObject {
    let created = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    wire::ModelObject {
        id: name.display_short(),
        object: "model",
        created,
        owned_by: name.namespace.clone(),
    }
}

async fn models(state: &Arc<AppState>) -> Result<Response<Body>, ApiError> {
    let store = Arc::clone(&state.store);
    let data = blocking(move || {
        Ok(store
            .list()?
            .iter()
            .map(|e| model_object(&e.name, e.modified))
            .collect::<Vec<_>>())
    })
    .await?;
    body::json(&List {
        object: "list",
        data,
        model: None,
        usage: None,
    })
}

async fn model(state: &Arc<AppState>, raw: &str) -> Result<Response<Body>, ApiError> {
    let message = format!("model '{raw}' not found");
    let name = ModelName::parse(raw).map_err(|_| ApiError::NotFound(message.clone()))?;
    let store = Arc::clone(&state.store);
    let entry =
        blocking(move || store.entry(&name).map_err(|_| ApiError::NotFound(message))).await?;
    body::json(&model_object(&entry.name, entry.modified))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_like_the_standard() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    }
}
