//! OpenAI-compatible routes under `/v1`: requests are translated into the
//! native chat/generate/embed requests and answers back into OpenAI's
//! shapes (SSE when streaming, OpenAI's error object on failure).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Response};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::body::{self, Body};
use super::inference::{logprobs_json, tool_calls_json};
use super::types::{ChatRequest, GenerateRequest, Message};
use super::{blocking, AppState};
use crate::error::ApiError;
use crate::infer::embed::embed_texts;
use crate::infer::prepare::{prepare_chat, prepare_generate, Job, Prepared};
use crate::infer::shape::{split_answer, Piece, Shaper};
use crate::infer::stream::{consume, resolve_logprobs, start, Outcome};
use crate::model::ModelName;
use crate::scheduler::Lease;
use crate::tools;

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
    let v = json!({"error": {"message": e.to_string(), "type": kind, "param": null, "code": null}});
    body::response(status, "application/json", v.to_string())
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

/// Fields the two completion endpoints share.
#[derive(Debug, Deserialize, Default)]
struct Sampling {
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(default)]
    max_tokens: Option<i64>,
    #[serde(default)]
    stop: Option<Value>,
    #[serde(default)]
    seed: Option<i64>,
    #[serde(default)]
    frequency_penalty: Option<f64>,
    #[serde(default)]
    presence_penalty: Option<f64>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<Value>,
}

impl Sampling {
    /// Native options. OpenAI's defaults for temperature and top_p are 1.0,
    /// and they override the model's own values, as in Ollama.
    fn options(&self) -> Result<Map<String, Value>, ApiError> {
        let mut o = Map::new();
        o.insert("temperature".into(), json!(self.temperature.unwrap_or(1.0)));
        o.insert(
            "top_p".into(),
            json!(self.top_p.filter(|p| *p > 0.0).unwrap_or(1.0)),
        );
        if let Some(n) = self.max_tokens {
            o.insert("num_predict".into(), json!(n));
        }
        match &self.stop {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                o.insert("stop".into(), json!([s]));
            }
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                o.insert("stop".into(), Value::Array(a.clone()));
            }
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "stop must be a string or a list of strings".into(),
                ))
            }
        }
        if let Some(s) = self.seed {
            o.insert("seed".into(), json!(s));
        }
        if let Some(f) = self.frequency_penalty {
            o.insert("frequency_penalty".into(), json!(f));
        }
        if let Some(p) = self.presence_penalty {
            o.insert("presence_penalty".into(), json!(p));
        }
        Ok(o)
    }

    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o["include_usage"] == true)
    }
}

#[derive(Debug, Deserialize, Default)]
struct ChatCompletionRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    messages: Vec<Value>,
    #[serde(default)]
    response_format: Option<Value>,
    #[serde(default)]
    tools: Option<Value>,
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<i64>,
    #[serde(flatten)]
    sampling: Sampling,
}

/// Converts OpenAI messages (string or content parts, tool calls with JSON
/// string arguments) into native ones.
fn native_messages(messages: &[Value]) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::new();
    for m in messages {
        let role = m["role"].as_str().unwrap_or("user").to_lowercase();
        let mut msg = Message {
            role,
            ..Message::default()
        };
        match &m["content"] {
            Value::String(s) => msg.content = s.clone(),
            Value::Array(parts) => {
                let mut texts = Vec::new();
                for part in parts {
                    match part["type"].as_str() {
                        Some("text") => {
                            texts.push(part["text"].as_str().unwrap_or_default().to_string())
                        }
                        Some("image_url") => {
                            let url = part["image_url"]["url"]
                                .as_str()
                                .or_else(|| part["image_url"].as_str())
                                .unwrap_or("");
                            let Some((_, data)) = url.split_once(";base64,") else {
                                return Err(ApiError::BadRequest(
                                    "image URLs are not currently supported, please use base64 encoded data instead".into(),
                                ));
                            };
                            msg.images
                                .get_or_insert_with(Vec::new)
                                .push(data.to_string());
                        }
                        _ => {
                            return Err(ApiError::BadRequest("invalid message content type".into()))
                        }
                    }
                }
                msg.content = texts.join("\n");
            }
            Value::Null => {}
            _ => return Err(ApiError::BadRequest("invalid message content type".into())),
        }
        if let Some(calls) = m["tool_calls"].as_array() {
            let mut native = Vec::new();
            for c in calls {
                let args = match &c["function"]["arguments"] {
                    Value::String(s) => serde_json::from_str(s)
                        .map_err(|_| ApiError::BadRequest("invalid tool call arguments".into()))?,
                    other => other.clone(),
                };
                native
                    .push(json!({"function": {"name": c["function"]["name"], "arguments": args}}));
            }
            msg.tool_calls = Some(native);
        }
        if let Some(name) = m["name"].as_str() {
            msg.tool_name = Some(name.to_string());
        }
        if let Some(id) = m["tool_call_id"].as_str() {
            msg.tool_call_id = Some(id.to_string());
        }
        out.push(msg);
    }
    Ok(out)
}

fn format_of(response_format: Option<&Value>) -> Option<Value> {
    match response_format.and_then(|r| r["type"].as_str()) {
        Some("json_object") => Some(json!("json")),
        Some("json_schema") => response_format.map(|r| r["json_schema"]["schema"].clone()),
        _ => None,
    }
}

/// One SSE event.
fn sse(v: &Value) -> Bytes {
    Bytes::from(format!("data: {v}\n\n"))
}

fn sse_response() -> (tokio::sync::mpsc::UnboundedSender<Bytes>, Response<Body>) {
    let (tx, mut resp) = body::ndjson_stream();
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    (tx, resp)
}

fn usage(o: &Outcome, prompt_tokens: usize) -> Value {
    json!({"prompt_tokens": prompt_tokens, "completion_tokens": o.eval_count, "total_tokens": prompt_tokens + o.eval_count})
}

/// Tool calls in OpenAI's shape: arguments as a JSON string.
fn openai_calls(calls: &[tools::Call]) -> Value {
    let native = tool_calls_json(calls);
    let list: Vec<Value> = native
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, c)| {
            json!({"id": c["id"], "index": i, "type": "function", "function": {
                "name": c["function"]["name"],
                "arguments": c["function"]["arguments"].to_string()}})
        })
        .collect();
    Value::Array(list)
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

/// Runs a prepared generation and answers in OpenAI's shape.
async fn answer(
    shape: Shape,
    model: String,
    job: Job,
    lease: Lease,
    include_usage: bool,
) -> Result<Response<Body>, ApiError> {
    let rx = start(&job, &lease)?;
    let created = unix_now();
    let (id, object, chunk_object) = match shape {
        Shape::Chat => (
            format!("chatcmpl-{}", id_number()),
            "chat.completion",
            "chat.completion.chunk",
        ),
        Shape::Text => (
            format!("cmpl-{}", id_number()),
            "text_completion",
            "text_completion",
        ),
    };
    let prompt_tokens = job.tokens_len();
    if !job.stream {
        let o = consume(rx, &job.opts.stop, |_, _| true).await;
        let logprobs = job
            .logprobs
            .map(|top| logprobs_json(&resolve_logprobs(&lease, &o.logprobs, top), top));
        drop(lease);
        if let Some(e) = &o.error {
            return Err(ApiError::Internal(e.clone()));
        }
        let (reasoning, text, calls) = split_answer(job.think, job.tools, &o.text);
        let mut choice = match shape {
            Shape::Chat if !calls.is_empty() => json!({"index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": openai_calls(&calls)},
                "finish_reason": "tool_calls"}),
            Shape::Chat => {
                json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason(&o)})
            }
            Shape::Text => json!({"index": 0, "text": text, "finish_reason": finish_reason(&o)}),
        };
        if let Some(lp) = logprobs {
            choice["logprobs"] = json!({ "content": lp });
        }
        if !reasoning.is_empty() {
            // Ollama puts reasoning in `reasoning`, not `reasoning_content`.
            choice["message"]["reasoning"] = Value::String(reasoning);
        }
        return body::json(
            &json!({"id": id, "object": object, "created": created, "model": model,
            "system_fingerprint": "fp_ollama", "choices": [choice], "usage": usage(&o, prompt_tokens)}),
        );
    }
    let (tx, resp) = sse_response();
    tokio::spawn(async move {
        let lease = lease;
        let base = json!({"id": id, "object": chunk_object, "created": created, "model": model, "system_fingerprint": "fp_ollama"});
        let mut first = true;
        let mut event = |p: &Piece| -> Value {
            let mut v = base.clone();
            v["choices"] = match (shape, p) {
                (_, Piece::Thinking(t)) => {
                    json!([{"index": 0, "delta": {"reasoning": t}, "finish_reason": null}])
                }
                (Shape::Chat, Piece::Content(c)) if first => {
                    json!([{"index": 0, "delta": {"role": "assistant", "content": c}, "finish_reason": null}])
                }
                (Shape::Chat, Piece::Content(c)) => {
                    json!([{"index": 0, "delta": {"content": c}, "finish_reason": null}])
                }
                (Shape::Text, Piece::Content(c)) => {
                    json!([{"index": 0, "text": c, "finish_reason": null}])
                }
            };
            if matches!(p, Piece::Content(_)) {
                first = false;
            }
            v
        };
        let mut shaper = Shaper::new(job.think, job.tools);
        let o = consume(rx, &job.opts.stop, |text, lps| {
            let mut events: Vec<Value> = shaper.push(text).iter().map(&mut event).collect();
            if let (Some(top), false) = (job.logprobs, lps.is_empty()) {
                // Each chunk carries the log probabilities of its tokens.
                if events.is_empty() {
                    events.push(event(&Piece::Content(String::new())));
                }
                events[0]["choices"][0]["logprobs"] =
                    json!({ "content": logprobs_json(&resolve_logprobs(&lease, lps, top), top) });
            }
            events.iter().all(|v| tx.send(sse(v)).is_ok())
        })
        .await;
        drop(lease);
        let (rest, calls) = shaper.finish();
        for p in &rest {
            let _ = tx.send(sse(&event(p)));
        }
        let mut reason = finish_reason(&o);
        if let Some(c) = calls {
            let mut v = event(&Piece::Content(c.rest));
            if let Shape::Chat = shape {
                v["choices"][0]["delta"]["tool_calls"] = openai_calls(&c.calls);
                reason = "tool_calls";
            }
            let _ = tx.send(sse(&v));
        }
        if let Some(e) = &o.error {
            let v =
                json!({"error": {"message": e, "type": "api_error", "param": null, "code": null}});
            let _ = tx.send(sse(&v));
        } else {
            let mut last = base.clone();
            last["choices"] = match shape {
                Shape::Chat => {
                    json!([{"index": 0, "delta": {}, "finish_reason": reason}])
                }
                Shape::Text => {
                    json!([{"index": 0, "text": "", "finish_reason": finish_reason(&o)}])
                }
            };
            let _ = tx.send(sse(&last));
            if include_usage {
                let mut u = base.clone();
                u["choices"] = json!([]);
                u["usage"] = usage(&o, prompt_tokens);
                let _ = tx.send(sse(&u));
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
        logprobs: req.logprobs,
        top_logprobs: req.top_logprobs,
        format: format_of(req.response_format.as_ref()),
        stream: Some(req.sampling.stream.unwrap_or(false)),
        options: Some(req.sampling.options()?),
        ..ChatRequest::default()
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

#[derive(Debug, Deserialize, Default)]
struct CompletionRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt: Value,
    #[serde(default)]
    suffix: Option<String>,
    /// The legacy completions API's form: a number of alternatives; any
    /// number above 0 turns log probabilities on (as Ollama reads it).
    #[serde(default)]
    logprobs: Option<i64>,
    #[serde(flatten)]
    sampling: Sampling,
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
        logprobs: req.logprobs.map(|n| n > 0),
        top_logprobs: req.logprobs.filter(|&n| n > 0),
        stream: Some(req.sampling.stream.unwrap_or(false)),
        options: Some(req.sampling.options()?),
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
            let v = json!({"id": format!("cmpl-{}", id_number()), "object": "text_completion", "created": unix_now(),
                "model": req.model, "system_fingerprint": "fp_ollama",
                "choices": [{"index": 0, "text": "", "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}});
            body::json(&v)
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
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|f| f.to_le_bytes()).collect();
                Value::String(base64_encode(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "embedding": embedding, "index": i})
        })
        .collect();
    body::json(&json!({"object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}))
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

fn model_object(name: &ModelName, modified: SystemTime) -> Value {
    let created = modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    json!({"id": name.display_short(), "object": "model", "created": created, "owned_by": name.namespace})
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
    body::json(&json!({"object": "list", "data": data}))
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

    #[test]
    fn messages_from_parts() {
        let m = native_messages(&[
            json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
        ]);
        assert_eq!(m.ok().map(|m| m[0].content.clone()), Some("a\nb".into()));
        let bad = native_messages(&[
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}),
        ]);
        assert!(bad.is_err());
        let calls = native_messages(&[json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]})]);
        assert_eq!(
            calls.ok().and_then(|m| m[0].tool_calls.clone()),
            Some(vec![
                json!({"function": {"name": "f", "arguments": {"x": 1}}})
            ])
        );
    }
}
