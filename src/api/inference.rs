//! Inference routes: `/api/generate`, `/api/chat` and `/api/ps`.
//!
//! The async side resolves the model, merges options, renders the prompt,
//! tokenizes, and turns engine events into NDJSON chunks (stop strings and
//! UTF-8 assembly happen here). Decoding runs on the model's runner thread.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use hyper::body::Incoming;
use hyper::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::body::{self, Body};
use super::models::details;
use super::types::{rfc3339, ChatRequest, GenerateRequest, Message};
use super::{blocking, AppState};
use crate::engine::{self, DoneReason, Event, Utf8Assembler};
use crate::error::{error_json, ApiError};
use crate::grammar;
use crate::infer::media;
use crate::infer::model::{load_key, merged_options, parse_keep_alive, resolve, Model};
use crate::infer::shape::{split_answer, Calls, Piece, Shaper};
use crate::model::ModelName;
use crate::options::Options;
use crate::prompt::{self, Input};
use crate::scheduler::Lease;
use crate::template::Template;
use crate::tools;

fn grammar_for(format: Option<&Value>) -> Result<Option<String>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(grammar::JSON_OBJECT.to_string())),
        Some(schema @ Value::Object(_)) => grammar::from_schema(schema)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(e.to_string())),
        Some(other) => Err(ApiError::BadRequest(format!(
            "invalid format: {other}; expected \"json\" or a valid JSON Schema object"
        ))),
    }
}

/// `think`: accepted values, and a 400 for models without the capability.
/// Validates `think` and says whether reasoning is split from the answer:
/// on by default for models whose template has thinking tags, off with
/// `think: false`.
fn check_think(think: Option<&Value>, model: &Model, raw: &str) -> Result<bool, ApiError> {
    let off = matches!(think, Some(Value::Bool(false)));
    let wants = match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(Value::String(s)) if matches!(s.as_str(), "low" | "medium" | "high" | "max") => true,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "invalid think value: {other}"
            )))
        }
    };
    let capable = model.caps.contains(&"thinking");
    if wants && !capable {
        return Err(ApiError::BadRequest(format!(
            "\"{raw}\" does not support thinking"
        )));
    }
    Ok(capable && !off)
}

fn check_completion(model: &Model, raw: &str, what: &str) -> Result<(), ApiError> {
    if model.caps.contains(&"completion") {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!(
            "\"{raw}\" does not support {what}"
        )))
    }
}

fn check_top_logprobs(n: Option<i64>) -> Result<(), ApiError> {
    match n {
        Some(n) if !(0..=20).contains(&n) => Err(ApiError::BadRequest(
            "top_logprobs must be between 0 and 20".into(),
        )),
        _ => Ok(()),
    }
}

/// Which route is answering: the chunk shapes differ.
#[derive(Debug, Clone)]
enum Kind {
    /// `response` chunks; the final one carries `context` unless raw.
    Generate { context: Option<Vec<i32>> },
    /// `message` chunks.
    Chat,
}

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

/// What a prepared request turns into: an immediate load/unload reply, or
/// a generation with its model leased.
pub(super) enum Prepared {
    /// `done_reason` `load` or `unload`, no generation.
    Reply(&'static str),
    /// A generation to start (boxed: a job is much larger than a reply).
    Run(Box<Job>, Lease),
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

/// What the first checks of generate and chat found.
enum Located {
    /// An empty request with `keep_alive: 0`: the model was unloaded.
    Unloaded,
    /// The model and the request's keep-alive.
    Model(Arc<Model>, crate::scheduler::KeepAlive),
}

/// The checks generate and chat share, in Ollama's order: `top_logprobs`,
/// the name, the manifest (404), then the unload shortcut for an empty
/// request with `keep_alive: 0`.
async fn locate(
    state: &Arc<AppState>,
    raw_name: &str,
    top_logprobs: Option<i64>,
    keep_alive: Option<&Value>,
    empty: bool,
) -> Result<Located, ApiError> {
    check_top_logprobs(top_logprobs)?;
    let name = ModelName::parse(raw_name)
        .map_err(|_| ApiError::NotFound(format!("model '{raw_name}' not found")))?;
    let st = Arc::clone(state);
    let r = raw_name.to_string();
    let model = blocking(move || Ok(resolve(&st, &name, &r)?)).await?;
    let keep_alive = parse_keep_alive(keep_alive, state.scheduler.default_keep_alive())?;
    if empty && keep_alive == Some(Duration::ZERO) {
        state.scheduler.unload_path(&model.path);
        return Ok(Located::Unloaded);
    }
    Ok(Located::Model(model, keep_alive))
}

/// The checks and the lease both routes need once the request is validated:
/// images, `format`, merged options, then the model itself.
async fn admit(
    state: &Arc<AppState>,
    model: &Model,
    has_images: bool,
    format: &Option<Value>,
    options: &Option<serde_json::Map<String, Value>>,
    keep_alive: crate::scheduler::KeepAlive,
) -> Result<(Option<String>, Options, Instant, Lease), ApiError> {
    if has_images && model.projector.is_none() {
        return Err(ApiError::BadRequest(format!(
            "{} does not support vision",
            model.name
        )));
    }
    let grammar = grammar_for(format.as_ref())?;
    let opts = merged_options(state, model, options.as_ref())?;
    let started = Instant::now();
    let short = model.name.display_short();
    let lease = state
        .scheduler
        .acquire(load_key(model, &opts), (&short, &model.digest), keep_alive)
        .await?;
    Ok((grammar, opts, started, lease))
}

/// Validates a generate request, leases its model and builds the prompt.
pub(super) async fn prepare_generate(
    state: &Arc<AppState>,
    req: GenerateRequest,
) -> Result<Prepared, ApiError> {
    let raw_name = req.model.clone();
    let (model, keep_alive) = match locate(
        state,
        &raw_name,
        req.top_logprobs,
        req.keep_alive.as_ref(),
        req.prompt.is_empty(),
    )
    .await?
    {
        Located::Unloaded => return Ok(Prepared::Reply("unload")),
        Located::Model(m, k) => (m, k),
    };
    if req.raw && (req.template.is_some() || req.system.is_some() || req.context.is_some()) {
        return Err(ApiError::BadRequest(
            "raw mode does not support template, system, or context".into(),
        ));
    }
    let think = check_think(req.think.as_ref(), &model, &raw_name)?;
    check_completion(&model, &raw_name, "generate")?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) && !model.caps.contains(&"insert") {
        return Err(ApiError::BadRequest(format!(
            "{} does not support insert",
            model.name
        )));
    }
    // Bad base64 or a non-image is a 400 before anything is loaded.
    let images = media::decode(req.images.as_deref().unwrap_or_default())?;
    let has_images = !images.is_empty();
    let (grammar, opts, started, lease) = admit(
        state,
        &model,
        has_images,
        &req.format,
        &req.options,
        keep_alive,
    )
    .await?;
    if req.prompt.is_empty() {
        return Ok(Prepared::Reply("load"));
    }

    let user_text = media::tag_prompt(&req.prompt, images.len(), req.raw);
    let text = if req.raw {
        user_text.clone()
    } else {
        let template = match &req.template {
            Some(t) => Template::parse(t)
                .map_err(|e| ApiError::BadRequest(format!("template error: {e}")))?,
            None => model.template.clone(),
        };
        let mut messages = Vec::new();
        if let Some(s) = req.system.clone().or_else(|| model.system.clone()) {
            messages.push(Message {
                role: "system".into(),
                content: s,
                ..Message::default()
            });
        }
        if req.context.is_none() {
            messages.extend(model.messages.iter().cloned());
        }
        messages.push(Message {
            role: "user".into(),
            content: user_text.clone(),
            ..Message::default()
        });
        let suffix = req
            .suffix
            .as_deref()
            .filter(|s| !s.is_empty())
            .map(|s| (user_text.as_str(), s));
        prompt::render(
            &template,
            &Input {
                messages: &messages,
                tools: None,
                suffix,
            },
        )
        .map_err(|e| ApiError::BadRequest(format!("template error: {e}")))?
    };
    let runner = Arc::clone(&lease.runner);
    let mut tokens = match &req.context {
        Some(ctx) if !ctx.is_empty() => ctx.clone(),
        _ => Vec::new(),
    };
    let fresh = tokens.is_empty();
    let mut media_prompt = None;
    if images.is_empty() {
        tokens.extend(
            runner
                .tokenize(&text, fresh, true)
                .map_err(|e| ApiError::Internal(e.to_string()))?,
        );
    } else {
        // With images the whole prompt goes through the projector's
        // tokenizer; earlier `context` tokens are prepended as text.
        let full = if fresh {
            text.clone()
        } else {
            runner.detokenize(&tokens) + &text
        };
        let m = tokenize_media(&runner, full, images, fresh).await?;
        tokens = m.text_tokens();
        media_prompt = Some(m);
    }
    let kind = Kind::Generate {
        context: (!req.raw).then(|| tokens.clone()),
    };
    let job = Job {
        kind,
        model: raw_name,
        tokens,
        opts,
        grammar,
        shift: req.shift.unwrap_or(true),
        stream: req.stream.unwrap_or(true),
        started,
        tools: false,
        think: think.then(|| opens_thinking(&text)),
        media: media_prompt,
        logprobs: req
            .logprobs
            .unwrap_or(false)
            .then(|| req.top_logprobs.unwrap_or(0).clamp(0, 20) as usize),
    };
    Ok(Prepared::Run(Box::new(job), lease))
}

/// Validates a chat request, leases its model and renders the conversation.
pub(super) async fn prepare_chat(
    state: &Arc<AppState>,
    req: ChatRequest,
) -> Result<Prepared, ApiError> {
    let raw_name = req.model.clone();
    if raw_name.is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    let (model, keep_alive) = match locate(
        state,
        &raw_name,
        req.top_logprobs,
        req.keep_alive.as_ref(),
        req.messages.is_empty(),
    )
    .await?
    {
        Located::Unloaded => return Ok(Prepared::Reply("unload")),
        Located::Model(m, k) => (m, k),
    };
    let think = check_think(req.think.as_ref(), &model, &raw_name)?;
    check_completion(&model, &raw_name, "chat")?;
    let tools = req
        .tools
        .as_ref()
        .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    if tools.is_some() && !model.caps.contains(&"tools") {
        return Err(ApiError::BadRequest(format!(
            "{} does not support tools",
            model.name
        )));
    }
    // Bad base64 or a non-image is a 400 before anything is loaded.
    let has_images = !media::tag(&req.messages)?.1.is_empty();
    let (grammar, opts, started, lease) = admit(
        state,
        &model,
        has_images,
        &req.format,
        &req.options,
        keep_alive,
    )
    .await?;
    if req.messages.is_empty() {
        return Ok(Prepared::Reply("load"));
    }

    let mut messages: Vec<Message> = model.messages.clone();
    let mut incoming: Vec<Message> = req.messages.clone();
    for m in &mut incoming {
        m.role = m.role.to_lowercase();
    }
    if incoming.first().is_none_or(|m| m.role != "system") {
        if let Some(s) = &model.system {
            messages.insert(
                0,
                Message {
                    role: "system".into(),
                    content: s.clone(),
                    ..Message::default()
                },
            );
        }
    }
    messages.extend(incoming);
    let runner = Arc::clone(&lease.runner);
    let limit = runner.info().n_ctx as usize;
    // Drop the oldest non-system messages until the prompt fits (the last
    // message always stays), as Ollama does with `truncate`.
    // Images count with all their tokens (the projector's tokenizer knows
    // how many), and the `[img-N]` tags are renumbered for the messages
    // that remain.
    let mut rendered;
    let (tokens, media_prompt) = loop {
        let (tagged, images) = media::tag(&messages)?;
        let text = prompt::render(
            &model.template,
            &Input {
                messages: &tagged,
                tools,
                suffix: None,
            },
        )
        .map_err(|e| ApiError::BadRequest(format!("template error: {e}")))?;
        let (tokens, media_prompt, len) = if images.is_empty() {
            let tokens = runner
                .tokenize(&text, true, true)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            let len = tokens.len();
            (tokens, None, len)
        } else {
            let m = tokenize_media(&runner, text.clone(), images, true).await?;
            let len = m.n_pos();
            (m.text_tokens(), Some(m), len)
        };
        rendered = text;
        let droppable = messages
            .iter()
            .position(|m| m.role != "system")
            .filter(|&i| i + 1 < messages.len());
        match droppable {
            Some(i) if len >= limit && req.truncate.unwrap_or(true) => {
                messages.remove(i);
            }
            _ => break (tokens, media_prompt),
        }
    };
    let job = Job {
        kind: Kind::Chat,
        model: raw_name,
        tokens,
        opts,
        grammar,
        shift: req.shift.unwrap_or(true),
        stream: req.stream.unwrap_or(true),
        started,
        tools: tools.is_some(),
        think: think.then(|| opens_thinking(&rendered)),
        media: media_prompt,
        logprobs: req
            .logprobs
            .unwrap_or(false)
            .then(|| req.top_logprobs.unwrap_or(0).clamp(0, 20) as usize),
    };
    Ok(Prepared::Run(Box::new(job), lease))
}

/// One generation, ready to run.
pub(super) struct Job {
    kind: Kind,
    model: String,
    tokens: Vec<i32>,
    /// Merged options (stop strings are applied by [`consume`]).
    pub(super) opts: Options,
    grammar: Option<String>,
    shift: bool,
    /// Whether the client asked for a stream.
    pub(super) stream: bool,
    /// When the request arrived.
    pub(super) started: Instant,
    /// The request offered tools: the answer may be a tool call.
    pub(super) tools: bool,
    /// Log probabilities with this many alternatives, when asked for.
    pub(super) logprobs: Option<usize>,
    /// Reasoning is split from the answer; `Some(true)` when the prompt
    /// already opened the thinking tag.
    pub(super) think: Option<bool>,
    /// The prompt with its images, when it has any (`tokens` then holds
    /// only its text tokens).
    media: Option<engine::MediaPrompt>,
}

/// Tokenizes a rendered prompt with its images on a blocking thread:
/// decoding and resizing a large photo takes long enough to stall an async
/// worker.
async fn tokenize_media(
    runner: &Arc<engine::Runner>,
    text: String,
    images: Vec<Vec<u8>>,
    add_special: bool,
) -> Result<engine::MediaPrompt, ApiError> {
    let runner = Arc::clone(runner);
    blocking(move || {
        runner
            .tokenize_media(&media::split(&text, &images), add_special)
            .map_err(media_error)
    })
    .await
}

/// Engine errors from tokenizing a prompt with images, as HTTP errors.
fn media_error(e: engine::Error) -> ApiError {
    match e {
        engine::Error::BadImage { .. } | engine::Error::MediaTokenize(_) => {
            ApiError::BadRequest(e.to_string())
        }
        other => ApiError::Internal(other.to_string()),
    }
}

/// Whether a rendered prompt ends inside an opened `<think>` tag.
fn opens_thinking(prompt: &str) -> bool {
    prompt.trim_end().ends_with("<think>")
}

/// Accumulated statistics and text of one generation.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// Everything generated, stop strings cut.
    pub(super) text: String,
    out_tokens: Vec<i32>,
    /// Prompt tokens evaluated (not counting cache hits).
    pub(super) prompt_eval_count: usize,
    prompt_eval_duration: Duration,
    /// Tokens generated.
    pub(super) eval_count: usize,
    eval_duration: Duration,
    /// `stop` or `length`.
    pub(super) done_reason: Option<&'static str>,
    /// An error that ended the generation.
    pub(super) error: Option<String>,
    /// Per-token log probabilities, when asked for.
    pub(super) logprobs: Vec<TokenLp>,
}

/// A generated token's id, bytes and log probabilities.
pub(super) type TokenLp = (i32, Vec<u8>, engine::TokenLogprob);

/// Ollama's `logprobs` array: token text, log probability, bytes and (when
/// asked) the most likely alternatives.
pub(super) fn logprobs_json(runner: &engine::Runner, lps: &[TokenLp], top: usize) -> Value {
    let entry = |bytes: &[u8], logprob: f32| json!({"token": String::from_utf8_lossy(bytes), "logprob": logprob, "bytes": bytes});
    let list: Vec<Value> = lps
        .iter()
        .map(|(_, bytes, lp)| {
            let mut v = entry(bytes, lp.logprob);
            if top > 0 {
                let alts: Vec<Value> = lp
                    .top
                    .iter()
                    .map(|(id, l)| entry(&runner.token_bytes(*id), *l))
                    .collect();
                v["top_logprobs"] = Value::Array(alts);
            }
            v
        })
        .collect();
    Value::Array(list)
}

impl Job {
    /// Prompt length in tokens (image tokens included).
    pub(super) fn tokens_len(&self) -> usize {
        self.media
            .as_ref()
            .map_or(self.tokens.len(), engine::MediaPrompt::n_tokens)
    }
}

/// Starts the generation on the runner; events arrive on the receiver.
pub(super) fn start(job: &Job, lease: &Lease) -> Result<mpsc::UnboundedReceiver<Event>, ApiError> {
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
        num_predict: if o.num_predict < 0 { -1 } else { o.num_predict },
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
            engine::Error::PromptTooLong { .. } => ApiError::BadRequest(
                "the prompt is longer than the context length currently available to the model; shorten the prompt, adjust the context length in settings, or use a model with a longer context length".into(),
            ),
            engine::Error::Grammar(g) => ApiError::BadRequest(format!("invalid format grammar: {g}")),
            other => ApiError::Internal(other.to_string()),
        })?;
    Ok(erx)
}

/// Starts the generation and answers, streaming or not.
async fn run(job: Job, lease: Lease) -> Result<Response<Body>, ApiError> {
    let erx = start(&job, &lease)?;
    if !job.stream {
        let mut outcome = consume(erx, &job.opts.stop, |_, _| true).await;
        let load = lease.load_duration;
        let runner = Arc::clone(&lease.runner);
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
        if let Some(top) = job.logprobs {
            line["logprobs"] = logprobs_json(&runner, &outcome.logprobs, top);
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
                lines[0]["logprobs"] = logprobs_json(&lease.runner, lps, top);
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

/// Reads engine events, applies stop strings and UTF-8 assembly, and hands
/// text pieces to `emit` (which returns false when the client is gone).
pub(super) async fn consume(
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
                cached_tokens: _,
                duration,
            } => {
                // Like Ollama, count only what was evaluated: tokens reused
                // from the KV cache of an earlier turn cost nothing.
                out.prompt_eval_count = prompt_tokens;
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
}
