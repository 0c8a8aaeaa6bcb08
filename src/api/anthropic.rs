//! Anthropic's Messages API, `POST /v1/messages` (as Ollama ≥ 0.14 serves
//! it: its `anthropic/anthropic.go`) and `POST /v1/messages/count_tokens`
//! (beyond Ollama; llama-server has it): a thin translator over the same
//! `infer` calls as the native chat, with Anthropic's blocks, its SSE event
//! sequence and its error object.

use std::sync::Arc;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::body::{self, Body};
use super::types::{ChatRequest, Message, Settings};
use super::AppState;
use crate::error::ApiError;
use crate::infer::answer::{self, Update};
use crate::infer::prepare::{prepare_chat, Job, Prepared};
use crate::infer::shape::Piece;
use crate::scheduler::Lease;
use crate::tools;

/// Answers `/v1/messages` and `/v1/messages/count_tokens`; errors come back
/// in Anthropic's shape.
pub async fn route(
    state: &Arc<AppState>,
    method: &Method,
    path: &str,
    body: Incoming,
) -> Response<Body> {
    let result = match (method, path) {
        (&Method::POST, "/v1/messages") => messages(state, body).await,
        (&Method::POST, "/v1/messages/count_tokens") => count_tokens(state, body).await,
        _ => Err(ApiError::NotFound(format!("unknown route {path}"))),
    };
    result.unwrap_or_else(|e| error_response(&e))
}

/// Anthropic's error type for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 => "overloaded_error",
        _ => "api_error",
    }
}

fn error_body(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}

/// `{"type": "error", "error": {"type", "message"}}` with the native status.
fn error_response(e: &ApiError) -> Response<Body> {
    let status = e.status();
    if status.is_server_error() {
        log::error!("{e}");
    }
    let body = error_body(error_type(status), &e.to_string());
    body::response(status, "application/json", body)
}

/// The request's fields Ollama reads (others, such as `metadata` and
/// `tool_choice`, are accepted and ignored).
#[derive(Debug, Deserialize, Default)]
struct MessagesRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    top_k: Option<i64>,
    #[serde(default)]
    stop_sequences: Option<Vec<String>>,
    #[serde(default)]
    tools: Option<Vec<Value>>,
    #[serde(default)]
    thinking: Option<Value>,
}

fn invalid(message: &str) -> ApiError {
    ApiError::BadRequest(message.to_string())
}

/// The text of a `system` field: a string or a list of text blocks.
fn system_text(v: &Value) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(blocks) => Ok(blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n")),
        Value::Null => Ok(String::new()),
        _ => Err(invalid("system: must be a string or a list of text blocks")),
    }
}

/// Anthropic messages (content as a string or blocks) as native messages:
/// text joined, images as base64, `tool_use` blocks as tool calls,
/// `tool_result` blocks as tool messages of their own.
fn native_messages(messages: &[Value]) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::new();
    for m in messages {
        let role = match m["role"].as_str() {
            Some(r @ ("user" | "assistant")) => r.to_string(),
            _ => return Err(invalid("messages: role must be \"user\" or \"assistant\"")),
        };
        let mut msg = Message {
            role,
            ..Message::default()
        };
        let mut results = Vec::new();
        match &m["content"] {
            Value::String(s) => msg.content.clone_from(s),
            Value::Array(blocks) => {
                let mut texts = Vec::new();
                for b in blocks {
                    match b["type"].as_str() {
                        Some("text") => texts.push(b["text"].as_str().unwrap_or_default()),
                        Some("image") => {
                            match (b["source"]["type"].as_str(), b["source"]["data"].as_str()) {
                                (Some("base64"), Some(data)) => {
                                    msg.images
                                        .get_or_insert_with(Vec::new)
                                        .push(data.to_string());
                                }
                                _ => {
                                    return Err(invalid("image: only base64 sources are supported"))
                                }
                            }
                        }
                        Some("tool_use") => {
                            let call = json!({"id": b["id"], "function": {
                                "name": b["name"], "arguments": b["input"].as_object().cloned().unwrap_or_default()}});
                            msg.tool_calls.get_or_insert_with(Vec::new).push(call);
                        }
                        Some("tool_result") => {
                            let content = match &b["content"] {
                                Value::String(s) => s.clone(),
                                Value::Array(parts) => parts
                                    .iter()
                                    .filter_map(|p| p["text"].as_str())
                                    .collect::<Vec<_>>()
                                    .join("\n"),
                                _ => String::new(),
                            };
                            results.push(Message {
                                role: "tool".into(),
                                content,
                                tool_call_id: b["tool_use_id"].as_str().map(str::to_string),
                                ..Message::default()
                            });
                        }
                        Some("thinking") => {
                            msg.thinking = b["thinking"].as_str().map(str::to_string);
                        }
                        _ => return Err(invalid("messages: unknown content block type")),
                    }
                }
                msg.content = texts.join("\n");
            }
            _ => {
                return Err(invalid(
                    "messages: content must be a string or a list of blocks",
                ))
            }
        }
        // A user turn of only tool results is the results alone.
        let only_results = !results.is_empty() && msg.content.is_empty() && msg.images.is_none();
        if !only_results {
            out.push(msg);
        }
        out.extend(results);
    }
    Ok(out)
}

/// The native chat request of a Messages request.
fn native(req: &MessagesRequest) -> Result<ChatRequest, ApiError> {
    if req.model.is_empty() {
        return Err(invalid("model: field required"));
    }
    let mut messages = Vec::new();
    if let Some(s) = &req.system {
        let text = system_text(s)?;
        if !text.is_empty() {
            messages.push(Message {
                role: "system".into(),
                content: text,
                ..Message::default()
            });
        }
    }
    messages.extend(native_messages(&req.messages)?);
    let mut options = Map::new();
    if let Some(n) = req.max_tokens {
        options.insert("num_predict".into(), json!(n));
    }
    if let Some(t) = req.temperature {
        options.insert("temperature".into(), json!(t));
    }
    if let Some(p) = req.top_p {
        options.insert("top_p".into(), json!(p));
    }
    if let Some(k) = req.top_k {
        options.insert("top_k".into(), json!(k));
    }
    if let Some(stop) = &req.stop_sequences {
        options.insert("stop".into(), json!(stop));
    }
    let tools = req.tools.as_ref().map(|list| {
        Value::Array(
            list.iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t["name"], "description": t["description"], "parameters": t["input_schema"]}})
                })
                .collect(),
        )
    });
    let think = match req.thinking.as_ref().and_then(|t| t["type"].as_str()) {
        Some("enabled") => Some(Value::Bool(true)),
        Some("disabled") => Some(Value::Bool(false)),
        _ => None,
    };
    Ok(ChatRequest {
        model: req.model.clone(),
        messages,
        tools,
        settings: Settings {
            stream: Some(req.stream),
            options: Some(options),
            think,
            ..Settings::default()
        },
    })
}

/// `msg_` and 24 hex characters, different per request.
fn message_id() -> String {
    let call = super::inference::call_id(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let digest = crate::store::Digest::of(format!("{call}{nanos}").as_bytes());
    format!("msg_{}", &digest.hex()[..24])
}

/// Anthropic's stop reason for a finished answer.
fn stop_reason(done_reason: Option<&str>, called: bool) -> &'static str {
    match (called, done_reason) {
        (true, _) => "tool_use",
        (false, Some("length")) => "max_tokens",
        _ => "end_turn",
    }
}

#[derive(Debug, Serialize)]
struct Usage {
    input_tokens: usize,
    output_tokens: usize,
}

/// One content block of an answer.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Thinking {
        thinking: &'a str,
        signature: &'a str,
    },
    Text {
        text: &'a str,
    },
    ToolUse {
        id: String,
        name: &'a str,
        input: &'a Map<String, Value>,
    },
}

fn tool_blocks(calls: &[tools::Call]) -> Vec<Block<'_>> {
    calls
        .iter()
        .enumerate()
        .map(|(i, c)| Block::ToolUse {
            id: format!("toolu_{}", &super::inference::call_id(i)["call_".len()..]),
            name: &c.name,
            input: &c.arguments,
        })
        .collect()
}

/// The whole answer.
#[derive(Debug, Serialize)]
struct MessageAnswer<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<Block<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: Usage,
}

async fn messages(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: MessagesRequest = body::read_json(body).await?;
    if req.max_tokens.is_none_or(|n| n <= 0) {
        return Err(invalid("max_tokens: field required, and greater than 0"));
    }
    if req.messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    let native = native(&req)?;
    match prepare_chat(state, native).await? {
        Prepared::Run(job, lease) => answer(req.model, *job, lease).await,
        Prepared::Reply(_) => Err(invalid("messages: at least one message is required")),
    }
}

/// One SSE event with its type.
fn event(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// Which block a stream has open.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Open {
    None,
    Thinking,
    Text,
}

/// The event sequence of a streamed answer: blocks opened, filled and
/// closed in order, one index per block.
struct Events {
    open: Open,
    index: usize,
    started: bool,
}

impl Events {
    fn close(&mut self, out: &mut Vec<Bytes>) {
        if self.open != Open::None {
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            ));
            self.index += 1;
            self.open = Open::None;
        }
    }

    fn piece(&mut self, p: &Piece, out: &mut Vec<Bytes>) {
        let (want, delta) = match p {
            Piece::Thinking(t) if !t.is_empty() => (
                Open::Thinking,
                json!({"type": "thinking_delta", "thinking": t}),
            ),
            Piece::Content(c) if !c.is_empty() => {
                (Open::Text, json!({"type": "text_delta", "text": c}))
            }
            _ => return,
        };
        if self.open != want {
            self.close(out);
            let block = match want {
                Open::Thinking => json!({"type": "thinking", "thinking": ""}),
                _ => json!({"type": "text", "text": ""}),
            };
            out.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": self.index, "content_block": block}),
            ));
            self.open = want;
        }
        self.started = true;
        out.push(event(
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.index, "delta": delta}),
        ));
    }

    fn calls(&mut self, calls: &[tools::Call], out: &mut Vec<Bytes>) {
        self.close(out);
        for block in tool_blocks(calls) {
            let Block::ToolUse { id, name, input } = block else {
                continue;
            };
            out.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": self.index,
                "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            ));
            let partial = Value::Object(input.clone()).to_string();
            out.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": self.index,
                "delta": {"type": "input_json_delta", "partial_json": partial}}),
            ));
            out.push(event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.index}),
            ));
            self.index += 1;
        }
    }
}

/// Runs the prepared chat and answers in Anthropic's shape.
async fn answer(model: String, job: Job, lease: Lease) -> Result<Response<Body>, ApiError> {
    let id = message_id();
    let input_tokens = job.tokens_len();
    if !job.stream {
        let a = answer::complete(&job, lease).await?;
        if let Some(e) = &a.outcome.error {
            return Err(ApiError::Internal(e.clone()));
        }
        let mut content = Vec::new();
        if !a.thinking.is_empty() {
            content.push(Block::Thinking {
                thinking: &a.thinking,
                signature: "",
            });
        }
        if !a.content.is_empty() || a.calls.is_empty() {
            content.push(Block::Text { text: &a.content });
        }
        content.extend(tool_blocks(&a.calls));
        return body::json(&MessageAnswer {
            id,
            kind: "message",
            role: "assistant",
            model: &model,
            content,
            stop_reason: stop_reason(a.outcome.done_reason, !a.calls.is_empty()),
            stop_sequence: None,
            usage: Usage {
                input_tokens,
                output_tokens: a.outcome.eval_count,
            },
        });
    }
    let started = answer::begin(&job, &lease)?;
    let (tx, mut resp) = body::ndjson_stream();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    tokio::spawn(async move {
        let start = json!({"type": "message_start", "message": {"id": id, "type": "message",
            "role": "assistant", "model": model, "content": [], "stop_reason": null,
            "stop_sequence": null, "usage": {"input_tokens": input_tokens, "output_tokens": 0}}});
        if tx.send(event("message_start", &start)).is_err() {
            return;
        }
        let mut events = Events {
            open: Open::None,
            index: 0,
            started: false,
        };
        let mut called = false;
        let end = answer::stream(&job, lease, started, |update| {
            let mut out = Vec::new();
            match update {
                Update::Text(pieces, _) => {
                    for p in &pieces {
                        events.piece(p, &mut out);
                    }
                }
                Update::Calls(c) => {
                    events.piece(&Piece::Content(c.rest), &mut out);
                    called = !c.calls.is_empty();
                    events.calls(&c.calls, &mut out);
                }
            }
            out.into_iter().all(|e| tx.send(e).is_ok())
        })
        .await;
        let o = &end.outcome;
        if let Some(e) = &o.error {
            let body = error_body("api_error", e);
            let _ = tx.send(Bytes::from(format!("event: error\ndata: {body}\n\n")));
            return;
        }
        let mut out = Vec::new();
        if !events.started && !called {
            // An empty answer is one empty text block.
            out.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}}),
            ));
            events.open = Open::Text;
        }
        events.close(&mut out);
        out.push(event(
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(o.done_reason, called), "stop_sequence": null},
            "usage": {"input_tokens": input_tokens, "output_tokens": o.eval_count}}),
        ));
        out.push(event("message_stop", &json!({"type": "message_stop"})));
        for e in out {
            let _ = tx.send(e);
        }
    });
    Ok(resp)
}

/// `POST /v1/messages/count_tokens`: the prompt's tokens as the model's
/// template renders the request (system, messages and tools).
async fn count_tokens(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let mut req: MessagesRequest = body::read_json(body).await?;
    if req.messages.is_empty() {
        return Err(invalid("messages: at least one message is required"));
    }
    req.stream = false;
    let native = native(&req)?;
    match prepare_chat(state, native).await? {
        Prepared::Run(job, lease) => {
            drop(lease);
            body::json(&json!({ "input_tokens": job.tokens_len() }))
        }
        Prepared::Reply(_) => Err(invalid("messages: at least one message is required")),
    }
}
