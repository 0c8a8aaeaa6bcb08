//! One loaded model: its dedicated OS thread, slots and batch scheduler.
//!
//! A llama.cpp context borrows its model and is not thread-safe, so each
//! [`Runner`] spawns a thread that owns the context; callers talk to it over a
//! `std::sync::mpsc` channel. Tokenization and detokenization only read the
//! model, so they run on the caller's thread.
//!
//! The context holds `n_parallel` sequences (slots), each with its own KV
//! stream of `n_ctx` cells (llama.cpp's non-unified KV). The thread's loop
//! is `worker.rs`'s: every iteration
//! builds one batch with one token for every generating slot plus prompt
//! chunks of newly admitted slots, decodes it once, then samples for every
//! slot whose logits are ready. Each slot remembers the tokens in its cells;
//! a new request takes the free slot sharing the longest prefix with its
//! prompt and only evaluates the rest.
//!
//! A prompt with images (`GenerateRequest::media`) is tokenized on the
//! caller's thread by mtmd (`Runner::tokenize_media`); when its slot is
//! admitted, the runner thread evaluates it in one go with mtmd's helper
//! (text decoded, images encoded by the projector and their embeddings
//! decoded), blocking the other slots for that time, and then samples as
//! usual. Its slot's cache records `-1` for image positions, so a later text
//! prompt reuses at most the text before the first image, and a later image
//! prompt reuses nothing.
//!
//! Stop strings, templates and UTF-8 assembly are the caller's business.

use std::path::Path;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::cpu::CpuBudget;
use super::sys::{
    self, Chunks, Context, ContextSettings, Footprint, LlamaModel, MediaPart, Mtmd, Sampler,
    SamplerSpec, RANDOM_SEED,
};
use super::worker::Worker;
use super::{Error, GenerateRequest, LoadParams, ModelInfo, Sink};

/// A request waiting for, or being processed by, the runner thread.
pub(super) enum Command {
    Generate(Box<Pending>),
    Embed(Vec<Vec<i32>>, mpsc::Sender<Result<Vec<Vec<f32>>, Error>>),
    Stop,
}

/// A validated generation request with its sampler already built.
pub(super) struct Pending {
    pub(super) req: GenerateRequest,
    pub(super) sampler: Sampler,
    pub(super) sink: Sink,
}

/// One piece of a prompt with images, in order.
#[derive(Debug, Clone, Copy)]
pub enum PromptPart<'a> {
    /// Text (special tokens are parsed).
    Text(&'a str),
    /// The bytes of an image file (PNG, JPEG, GIF, BMP).
    Image(&'a [u8]),
}

/// A prompt tokenized with its images by the model's projector. Cheap to
/// clone; hand it to [`GenerateRequest::media`].
#[derive(Clone)]
pub struct MediaPrompt {
    pub(super) chunks: Arc<Chunks>,
    /// Per KV position: the text token, or -1 for image positions.
    pub(super) layout: Arc<Vec<i32>>,
    n_tokens: usize,
}

impl std::fmt::Debug for MediaPrompt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaPrompt")
            .field("n_tokens", &self.n_tokens)
            .field("n_pos", &self.layout.len())
            .finish()
    }
}

impl MediaPrompt {
    /// Tokens evaluated for this prompt, image embeddings included.
    pub fn n_tokens(&self) -> usize {
        self.n_tokens
    }

    /// KV positions the prompt occupies.
    pub fn n_pos(&self) -> usize {
        self.layout.len()
    }

    /// The text tokens, in order, without the images.
    pub fn text_tokens(&self) -> Vec<i32> {
        self.layout.iter().copied().filter(|&t| t >= 0).collect()
    }
}

/// A loaded model with its runner thread. `Send + Sync`; share it via `Arc`.
pub struct Runner {
    tx: mpsc::Sender<Command>,
    model: Arc<LlamaModel>,
    /// The projector, when the model was loaded with one.
    mtmd: Option<Arc<Mtmd>>,
    info: ModelInfo,
    embeddings: bool,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner").field("info", &self.info).finish()
    }
}

impl Runner {
    /// Loads the model and creates its context on a new thread. Blocks until
    /// both are ready or one failed.
    pub fn load(path: &Path, params: LoadParams, cpu: Arc<CpuBudget>) -> Result<Runner, Error> {
        let n_ctx_total = total_context(&params)?;
        let (tx, rx) = mpsc::channel::<Command>();
        type Ready = (Arc<LlamaModel>, Option<Arc<Mtmd>>, ModelInfo);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<Ready, Error>>();
        let path_buf = path.to_path_buf();
        let thread_params = params.clone();
        let name = format!(
            "runner-{}",
            path.file_name()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let model = match LlamaModel::load(&path_buf, thread_params.use_mmap) {
                    Ok(m) => Arc::new(m),
                    Err(reason) => {
                        let _ = ready_tx.send(Err(Error::LoadFailed {
                            path: path_buf,
                            reason,
                        }));
                        return;
                    }
                };
                let settings = context_settings(&thread_params, n_ctx_total);
                let ctx = match Context::new(Arc::clone(&model), &settings) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = ready_tx.send(Err(Error::ContextFailed(e)));
                        return;
                    }
                };
                // A projector that does not load (a type this llama.cpp does
                // not know, a width that does not match) costs the images,
                // not the model: text requests still work.
                let mtmd = thread_params.projector.as_ref().and_then(|p| {
                    let threads = i32::try_from(thread_params.n_threads.max(1)).unwrap_or(1);
                    match Mtmd::load(p, Arc::clone(&model), threads) {
                        Ok(m) => Some(Arc::new(m)),
                        Err(reason) => {
                            log::warn!(
                                "vision projector {} not loaded, images will be refused: {reason}",
                                p.display()
                            );
                            None
                        }
                    }
                });
                let mut info = model_info(&model, &ctx, thread_params.n_parallel);
                info.vision = mtmd.is_some();
                let ready = (Arc::clone(&model), mtmd.clone(), info);
                if ready_tx.send(Ok(ready)).is_err() {
                    return;
                }
                let mut worker = Worker::new(ctx, mtmd, &thread_params, &cpu);
                worker.run(&rx);
                // The worker (and its context) drops here, before `model`.
            })
            .map_err(|e| Error::Spawn(e.to_string()))?;
        match ready_rx.recv() {
            Ok(Ok((model, mtmd, info))) => Ok(Runner {
                tx,
                model,
                mtmd,
                info,
                embeddings: params.embeddings,
                thread: Mutex::new(Some(handle)),
            }),
            Ok(Err(e)) => {
                let _ = handle.join();
                Err(e)
            }
            Err(_) => {
                let _ = handle.join();
                Err(Error::RunnerGone)
            }
        }
    }

    /// What loading `path` with `params` would take, planned by llama.cpp
    /// without allocating (a fraction of a load's time: no weights are
    /// read). The projector counts with its file size.
    pub fn footprint(path: &Path, params: &LoadParams) -> Result<Footprint, Error> {
        let n_ctx_total = total_context(params)?;
        let mut f =
            sys::footprint(path, &context_settings(params, n_ctx_total)).map_err(|reason| {
                Error::LoadFailed {
                    path: path.to_path_buf(),
                    reason,
                }
            })?;
        if let Some(p) = &params.projector {
            f.weights = f
                .weights
                .saturating_add(std::fs::metadata(p).map_or(0, |m| m.len()));
        }
        Ok(f)
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// Tokenizes on the caller's thread (the model is read-only).
    pub fn tokenize(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<i32>, Error> {
        self.model
            .tokenize(text, add_special, parse_special)
            .ok_or(Error::Tokenize)
    }

    /// Tokenizes a prompt with images with the model's projector, on the
    /// caller's thread (mtmd documents this as thread-safe). Images are
    /// decoded and preprocessed here; they are encoded when the request
    /// runs. `add_special` adds BOS as [`Runner::tokenize`] does.
    pub fn tokenize_media(
        &self,
        parts: &[PromptPart<'_>],
        add_special: bool,
    ) -> Result<MediaPrompt, Error> {
        let mtmd = self.mtmd.as_ref().ok_or(Error::NoVision)?;
        let mut bitmaps = Vec::new();
        for p in parts {
            if let PromptPart::Image(bytes) = p {
                let index = bitmaps.len();
                bitmaps.push(mtmd.bitmap(bytes).ok_or(Error::BadImage { index })?);
            }
        }
        let mut images = bitmaps.iter();
        let mut sys_parts = Vec::with_capacity(parts.len());
        for p in parts {
            match p {
                PromptPart::Text("") => {}
                PromptPart::Text(t) => sys_parts.push(MediaPart::Text(t)),
                PromptPart::Image(_) => {
                    if let Some(b) = images.next() {
                        sys_parts.push(MediaPart::Image(b));
                    }
                }
            }
        }
        let chunks = mtmd
            .tokenize(&sys_parts, add_special)
            .map_err(Error::MediaTokenize)?;
        let layout = chunks.layout();
        Ok(MediaPrompt {
            n_tokens: chunks.n_tokens(),
            chunks: Arc::new(chunks),
            layout: Arc::new(layout),
        })
    }

    /// Raw bytes of one token's piece, special tokens rendered as text.
    /// Unknown ids give an empty vector.
    pub fn token_bytes(&self, token: i32) -> Vec<u8> {
        self.model.token_piece(token)
    }

    /// Whether `token` ends a generation (EOS, EOT, ...).
    pub fn is_eog(&self, token: i32) -> bool {
        self.model.is_eog(token)
    }

    /// Tokens back to text (lossy for invalid UTF-8; unknown ids skipped).
    pub fn detokenize(&self, tokens: &[i32]) -> String {
        String::from_utf8_lossy(&self.model.detokenize(tokens)).into_owned()
    }

    /// Validates and enqueues a generation; returns at once. Events arrive
    /// through `sink` on the runner thread.
    pub fn generate(&self, req: GenerateRequest, sink: Sink) -> Result<(), Error> {
        if self.embeddings {
            return Err(Error::NotGenerative);
        }
        if req.prompt.is_empty() && req.media.is_none() {
            return Err(Error::EmptyPrompt);
        }
        if let Some(&bad) = req.prompt.iter().find(|t| !self.model.valid_token(**t)) {
            return Err(Error::InvalidToken(bad));
        }
        let n_ctx = self.info.n_ctx as usize;
        if let Some(media) = &req.media {
            if self.mtmd.is_none() {
                return Err(Error::NoVision);
            }
            // Images cannot be cut in half: a prompt with images must fit,
            // with room for at least one generated token.
            if media.n_pos() >= n_ctx {
                return Err(Error::PromptTooLong {
                    tokens: media.n_pos(),
                    n_ctx,
                });
            }
        }
        if req.prompt.len() > n_ctx && !req.shift {
            return Err(Error::PromptTooLong {
                tokens: req.prompt.len(),
                n_ctx,
            });
        }
        let s = &req.sampling;
        let spec = SamplerSpec {
            grammar: s.grammar.as_deref(),
            penalty_last_n: if s.repeat_last_n < 0 {
                i32::try_from(n_ctx).unwrap_or(i32::MAX)
            } else {
                s.repeat_last_n
            },
            repeat: s.repeat_penalty,
            frequency: s.frequency_penalty,
            presence: s.presence_penalty,
            top_k: s.top_k,
            typical_p: s.typical_p,
            top_p: s.top_p,
            min_p: s.min_p,
            temperature: s.temperature,
            seed: s.seed.unwrap_or(RANDOM_SEED),
        };
        let sampler = Sampler::new(&self.model, &spec).map_err(|e| {
            if s.grammar.is_some() {
                Error::Grammar(e)
            } else {
                Error::Sampler(e)
            }
        })?;
        self.tx
            .send(Command::Generate(Box::new(Pending { req, sampler, sink })))
            .map_err(|_| Error::RunnerGone)
    }

    /// Embeds each input (token ids); blocks until done. Vectors are pooled
    /// with the model's pooling type (mean over tokens when it has none) and
    /// L2-normalised.
    pub fn embed(&self, inputs: Vec<Vec<i32>>) -> Result<Vec<Vec<f32>>, Error> {
        for input in &inputs {
            if input.is_empty() {
                return Err(Error::EmptyPrompt);
            }
            if let Some(&bad) = input.iter().find(|t| !self.model.valid_token(**t)) {
                return Err(Error::InvalidToken(bad));
            }
        }
        let (tx, rx) = mpsc::channel();
        self.tx
            .send(Command::Embed(inputs, tx))
            .map_err(|_| Error::RunnerGone)?;
        rx.recv().map_err(|_| Error::RunnerGone)?
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.tx.send(Command::Stop);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn model_info(model: &LlamaModel, ctx: &Context, n_parallel: u32) -> ModelInfo {
    let arch = model.meta("general.architecture");
    let n_ctx_seq = ctx.n_ctx_seq();
    ModelInfo {
        n_ctx_train: model.n_ctx_train(),
        n_ctx: n_ctx_seq,
        n_parallel,
        n_embd: model.n_embd(),
        n_vocab: u32::try_from(model.n_vocab()).unwrap_or(0),
        chat_template: model.chat_template(),
        add_bos: model.add_bos(),
        architecture: arch,
        vision: false,
    }
}

/// Cells in the whole context: `n_ctx` for each parallel sequence.
fn total_context(params: &LoadParams) -> Result<u32, Error> {
    if params.n_ctx == 0 || params.n_batch == 0 || params.n_parallel == 0 {
        return Err(Error::InvalidParams(
            "n_ctx, n_batch and n_parallel must be positive".into(),
        ));
    }
    params
        .n_ctx
        .checked_mul(params.n_parallel)
        .ok_or_else(|| Error::InvalidParams("n_ctx * n_parallel overflows".into()))
}

/// The context a load creates for `params`.
fn context_settings(params: &LoadParams, n_ctx_total: u32) -> ContextSettings {
    ContextSettings {
        n_ctx_total,
        n_batch: params.n_batch,
        n_seq_max: params.n_parallel,
        n_threads: i32::try_from(params.n_threads.max(1)).unwrap_or(1),
        embeddings: params.embeddings,
        kv_type: params.kv_type,
        flash_attention: params.flash_attention,
        full_swa_cache: false,
    }
}
