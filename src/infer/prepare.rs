//! Request preparation for generate and chat (native, and `/v1` through
//! the same wire structs): Ollama's checks in Ollama's order, the model's
//! lease from the scheduler, prompt rendering (with truncation of old
//! messages), tokenizing (with images through the projector), and the
//! [`Job`] that `stream.rs` starts on the runner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::fit;
use super::media;
use super::model::{load_key, merged_options, parse_keep_alive, resolve, ResolvedModel};
use super::request::{ChatRequest, GenerateRequest, Settings};
use super::{blocking, AppState, Error};
use crate::engine;
use crate::grammar;
use crate::model::ModelName;
use crate::options::Options;
use crate::prompt::{self, Input, Message};
use crate::scheduler::Lease;
use crate::template::Template;

fn grammar_for(format: Option<&Value>) -> Result<Option<String>, Error> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(grammar::JSON_OBJECT.to_string())),
        Some(schema @ Value::Object(_)) => grammar::from_schema(schema)
            .map(Some)
            .map_err(|e| Error::Format(e.to_string())),
        Some(other) => Err(Error::Format(format!(
            "invalid format: {other}; expected \"json\" or a valid JSON Schema object"
        ))),
    }
}

/// `think`: accepted values, and a 400 for models without the capability.
/// Validates `think` and says whether reasoning is split from the answer:
/// on by default for models whose template has thinking tags, off with
/// `think: false`.
fn check_think(think: Option<&Value>, model: &ResolvedModel, raw: &str) -> Result<bool, Error> {
    let off = matches!(think, Some(Value::Bool(false)));
    let wants = match think {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(Value::String(s)) if matches!(s.as_str(), "low" | "medium" | "high" | "max") => true,
        Some(other) => return Err(Error::Think(other.to_string())),
    };
    let capable = model.caps.contains(&"thinking");
    if wants && !capable {
        return Err(unsupported(format!("\"{raw}\""), "thinking"));
    }
    Ok(capable && !off)
}

fn check_completion(model: &ResolvedModel, raw: &str, what: &'static str) -> Result<(), Error> {
    if model.caps.contains(&"completion") {
        Ok(())
    } else {
        Err(unsupported(format!("\"{raw}\""), what))
    }
}

fn unsupported(model: String, what: &'static str) -> Error {
    Error::Unsupported { model, what }
}

fn check_top_logprobs(n: Option<i64>) -> Result<(), Error> {
    match n {
        Some(n) if !(0..=20).contains(&n) => Err(Error::TopLogprobs),
        _ => Ok(()),
    }
}

/// Which route is answering: the chunk shapes differ.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// `response` chunks; the final one carries `context` unless raw.
    Generate {
        /// The prompt's tokens, returned as `context` (none when raw).
        context: Option<Vec<i32>>,
    },
    /// `message` chunks.
    Chat,
}

/// What a prepared request turns into: an immediate load/unload reply, or
/// a generation with its model leased.
pub(crate) enum Prepared {
    /// `done_reason` `load` or `unload`, no generation.
    Reply(&'static str),
    /// A generation to start (boxed: a job is much larger than a reply).
    Run(Box<Job>, Lease),
}

/// What the first checks of generate and chat found.
enum Located {
    /// An empty request with `keep_alive: 0`: the model was unloaded.
    Unloaded,
    /// The model and the request's keep-alive.
    Found(Arc<ResolvedModel>, crate::scheduler::KeepAlive),
}

/// The checks generate and chat share, in Ollama's order: `top_logprobs`,
/// the name, the manifest (404), then the unload shortcut for an empty
/// request with `keep_alive: 0`.
async fn locate(
    state: &Arc<AppState>,
    raw_name: &str,
    settings: &Settings,
    empty: bool,
) -> Result<Located, Error> {
    check_top_logprobs(settings.top_logprobs)?;
    let keep_alive = settings.keep_alive.as_ref();
    let name =
        ModelName::parse(raw_name).map_err(|_| Error::ModelNotFound(raw_name.to_string()))?;
    let st = Arc::clone(state);
    let r = raw_name.to_string();
    let model = blocking(move || resolve(&st, &name, &r)).await?;
    let keep_alive = parse_keep_alive(keep_alive, state.scheduler.default_keep_alive())?;
    if empty && keep_alive == Some(Duration::ZERO) {
        state.scheduler.unload_path(&model.path);
        return Ok(Located::Unloaded);
    }
    Ok(Located::Found(model, keep_alive))
}

/// The checks and the lease both routes need once the request is validated:
/// images, `format`, merged options, then the model itself.
async fn admit(
    state: &Arc<AppState>,
    model: &ResolvedModel,
    has_images: bool,
    format: &Option<Value>,
    options: &Option<serde_json::Map<String, Value>>,
    keep_alive: crate::scheduler::KeepAlive,
) -> Result<(Option<String>, Options, Instant, Lease), Error> {
    if has_images && model.projector.is_none() {
        return Err(unsupported(model.name.to_string(), "vision"));
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
pub(crate) async fn prepare_generate(
    state: &Arc<AppState>,
    mut req: GenerateRequest,
) -> Result<Prepared, Error> {
    let raw_name = req.model.clone();
    let (model, keep_alive) =
        match locate(state, &raw_name, &req.settings, req.prompt.is_empty()).await? {
            Located::Unloaded => return Ok(Prepared::Reply("unload")),
            Located::Found(m, k) => (m, k),
        };
    if req.raw && (req.template.is_some() || req.system.is_some() || req.context.is_some()) {
        return Err(Error::RawWithTemplate);
    }
    let think = check_think(req.settings.think.as_ref(), &model, &raw_name)?;
    check_completion(&model, &raw_name, "generate")?;
    if req.suffix.as_deref().is_some_and(|s| !s.is_empty()) && !model.caps.contains(&"insert") {
        return Err(unsupported(model.name.to_string(), "insert"));
    }
    // Bad base64 or a non-image is a 400 before anything is loaded.
    let images = media::decode(req.images.as_deref().unwrap_or_default())?;
    let has_images = !images.is_empty();
    let (grammar, opts, started, lease) = admit(
        state,
        &model,
        has_images,
        &req.settings.format,
        &req.settings.options,
        keep_alive,
    )
    .await?;
    if req.prompt.is_empty() {
        return Ok(Prepared::Reply("load"));
    }

    // The prompt is moved, never copied, until it is tokenized: a prompt
    // can be tens of MB.
    let prompt = std::mem::take(&mut req.prompt);
    // Past two contexts' worth of text only its ends can reach the model.
    let prompt = fit::cut_middle(prompt, lease.runner.info().n_ctx as usize);
    let user_text = media::tag_prompt(prompt, images.len(), req.raw);
    let mut text = if req.raw {
        user_text
    } else {
        let template = match &req.template {
            Some(t) => Template::parse(t).map_err(|e| Error::Template(e.to_string()))?,
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
            content: user_text,
            ..Message::default()
        });
        let suffix = req
            .suffix
            .as_deref()
            .filter(|s| !s.is_empty())
            .and_then(|s| messages.last().map(|user| (user.content.as_str(), s)));
        prompt::render(
            &template,
            &Input {
                messages: &messages,
                tools: None,
                suffix,
            },
        )
        .map_err(|e| Error::Template(e.to_string()))?
    };
    let runner = Arc::clone(&lease.runner);
    let mut tokens = match &req.context {
        Some(ctx) if !ctx.is_empty() => ctx.clone(),
        _ => Vec::new(),
    };
    let fresh = tokens.is_empty();
    let mut media_prompt = None;
    if images.is_empty() {
        // On a blocking thread: a prompt up to two contexts' worth of text
        // is tokenized (see `tokenize_bounded`), megabytes for a large one.
        let n_ctx = runner.info().n_ctx as usize;
        let (text_back, more) = super::blocking(move || {
            let tokens = fit::tokenize_bounded(&runner, &text, fresh, n_ctx)
                .map_err(|e| Error::Internal(e.to_string()));
            tokens.map(|t| (text, t))
        })
        .await?;
        text = text_back;
        tokens.extend(more);
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
        shift: req.settings.shift.unwrap_or(true),
        stream: req.settings.stream.unwrap_or(true),
        started,
        tools: false,
        think: think.then(|| opens_thinking(&text)),
        media: media_prompt,
        logprobs: req.settings.logprobs(),
    };
    Ok(Prepared::Run(Box::new(job), lease))
}

/// Validates a chat request, leases its model and renders the conversation.
pub(crate) async fn prepare_chat(
    state: &Arc<AppState>,
    req: ChatRequest,
) -> Result<Prepared, Error> {
    let raw_name = req.model.clone();
    if raw_name.is_empty() {
        return Err(Error::ModelRequired);
    }
    let (model, keep_alive) =
        match locate(state, &raw_name, &req.settings, req.messages.is_empty()).await? {
            Located::Unloaded => return Ok(Prepared::Reply("unload")),
            Located::Found(m, k) => (m, k),
        };
    let think = check_think(req.settings.think.as_ref(), &model, &raw_name)?;
    check_completion(&model, &raw_name, "chat")?;
    let tools = req
        .tools
        .as_ref()
        .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()));
    if tools.is_some() && !model.caps.contains(&"tools") {
        return Err(unsupported(model.name.to_string(), "tools"));
    }
    // Bad base64 or a non-image is a 400 before anything is loaded.
    let has_images = !media::tag(&req.messages)?.1.is_empty();
    let (grammar, opts, started, lease) = admit(
        state,
        &model,
        has_images,
        &req.settings.format,
        &req.settings.options,
        keep_alive,
    )
    .await?;
    if req.messages.is_empty() {
        return Ok(Prepared::Reply("load"));
    }

    let mut messages: Vec<Message> = model.messages.clone();
    let n_ctx = lease.runner.info().n_ctx as usize;
    let mut incoming: Vec<Message> = req.messages;
    for m in &mut incoming {
        m.role = m.role.to_lowercase();
        // Past two contexts' worth of text only a message's ends can
        // reach the model (and one that long never fits beside others).
        m.content = fit::cut_middle(std::mem::take(&mut m.content), n_ctx);
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
    let limit = n_ctx;
    // Images count with all their tokens (the projector's tokenizer knows
    // how many), and the `[img-N]` tags are renumbered for the messages
    // that remain.
    let fitted = fit::fit_blocking(
        runner,
        Arc::clone(&model),
        messages,
        tools.cloned(),
        limit,
        req.settings.truncate.unwrap_or(true),
    )
    .await?;
    let (rendered, tokens, media_prompt) = (fitted.text, fitted.tokens, fitted.media);
    let job = Job {
        kind: Kind::Chat,
        model: raw_name,
        tokens,
        opts,
        grammar,
        shift: req.settings.shift.unwrap_or(true),
        stream: req.settings.stream.unwrap_or(true),
        started,
        tools: tools.is_some(),
        think: think.then(|| opens_thinking(&rendered)),
        media: media_prompt,
        logprobs: req.settings.logprobs(),
    };
    Ok(Prepared::Run(Box::new(job), lease))
}

/// One generation, ready to run.
pub(crate) struct Job {
    /// Which route asked (the chunk shapes differ).
    pub(crate) kind: Kind,
    /// The model name as the client wrote it.
    pub(crate) model: String,
    /// The prompt's tokens (its text tokens when it has images).
    pub(super) tokens: Vec<i32>,
    /// Merged options (stop strings are applied by [`consume`]).
    pub(crate) opts: Options,
    /// GBNF from `format`.
    pub(super) grammar: Option<String>,
    /// Whether the context may shift when it fills.
    pub(super) shift: bool,
    /// Whether the client asked for a stream.
    pub(crate) stream: bool,
    /// When the request arrived.
    pub(crate) started: Instant,
    /// The request offered tools: the answer may be a tool call.
    pub(crate) tools: bool,
    /// Log probabilities with this many alternatives, when asked for.
    pub(crate) logprobs: Option<usize>,
    /// Reasoning is split from the answer; `Some(true)` when the prompt
    /// already opened the thinking tag.
    pub(crate) think: Option<bool>,
    /// The prompt with its images, when it has any (`tokens` then holds
    /// only its text tokens).
    pub(super) media: Option<engine::MediaPrompt>,
}

/// Tokenizes a rendered prompt with its images on a blocking thread:
/// decoding and resizing a large photo takes long enough to stall an async
/// worker.
async fn tokenize_media(
    runner: &Arc<engine::Runner>,
    text: String,
    images: Vec<Vec<u8>>,
    add_special: bool,
) -> Result<engine::MediaPrompt, Error> {
    let runner = Arc::clone(runner);
    blocking(move || {
        runner
            .tokenize_media(&media::split(&text, &images), add_special)
            .map_err(media_error)
    })
    .await
}

/// Engine errors from tokenizing a prompt with images: a bad image is the
/// client's, anything else ours.
pub(super) fn media_error(e: engine::Error) -> Error {
    match e {
        engine::Error::BadImage { .. } | engine::Error::MediaTokenize(_) => {
            Error::Image(e.to_string())
        }
        other => Error::Internal(other.to_string()),
    }
}

/// Whether a rendered prompt ends inside an opened `<think>` tag.
fn opens_thinking(prompt: &str) -> bool {
    prompt.trim_end().ends_with("<think>")
}

impl Job {
    /// Prompt length in tokens (image tokens included).
    pub(crate) fn tokens_len(&self) -> usize {
        self.media
            .as_ref()
            .map_or(self.tokens.len(), engine::MediaPrompt::n_tokens)
    }
}
