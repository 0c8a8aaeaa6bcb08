//! The inference layer between the HTTP dialects and the scheduler: the one
//! place native Ollama routes and the compatible ones (`/v1`) call to turn a
//! model name into something that can run (`model.rs`: resolution, cached
//! per manifest, `keep_alive` and option merging), to bring images into a
//! prompt (`media.rs`), and to shape an answer into what a client sees
//! (`shape.rs`: reasoning split from content, tool calls held back).
//!
//! It knows nothing of HTTP: its failures are [`Error`]s, which only
//! `error.rs` turns into statuses. The shared state every handler reaches
//! ([`AppState`]) lives here because resolution needs it; `api` re-exports it.
//!
//! `prepare.rs` turns a generate or chat request (`request.rs`) into a
//! [`prepare::Job`] and the model's lease; `stream.rs` starts it on the
//! runner and turns the engine's events into text and statistics;
//! `answer.rs` drives a job to a whole answer or a stream of updates;
//! `embed.rs` embeds inputs for every dialect.

pub mod answer;
pub mod embed;
mod fit;
pub mod media;
pub mod model;
pub mod prepare;
pub mod request;
pub mod shape;
pub mod stream;
pub mod tokens;

use std::sync::Arc;

use crate::access::KeyStore;
use crate::config::Config;
use crate::engine::CpuBudget;
use crate::scheduler::{self, Scheduler, Settings};
use crate::store::{self, Store};

/// What every handler can reach.
#[derive(Debug)]
pub struct AppState {
    /// Parsed configuration.
    pub config: Config,
    /// The model store.
    pub store: Arc<Store>,
    /// Loaded models.
    pub scheduler: Arc<Scheduler>,
    /// Models resolved from manifests, by manifest digest.
    pub model_cache: model::ModelCache,
    /// The API keys in force (none: the API is open).
    pub keys: KeyStore,
}

/// Builds the shared state for a config (opens the store).
/// Must run inside the tokio runtime (the scheduler starts its expiry task).
pub fn app(config: Config, keys: KeyStore) -> Result<Arc<AppState>, store::Error> {
    let store = Arc::new(Store::open(&config.models_dir, config.max_disk_bytes)?);
    if !config.noprune {
        // As Ollama: blobs unused for an hour are removed at start.
        match store.prune(std::time::Duration::from_secs(3600)) {
            Ok(0) => {}
            Ok(n) => log::info!("pruned {n} unused blobs"),
            Err(e) => log::warn!("not pruning blobs: {e}"),
        }
    }
    let settings = Settings {
        max_loaded: config.max_loaded_models,
        max_queue: config.max_queue,
        num_parallel: config.num_parallel,
        keep_alive: config.keep_alive,
        kv_type: config.kv_cache_type,
        flash_attention: config.flash_attention,
        max_memory: config.max_memory_bytes,
    };
    let scheduler = Scheduler::new(settings, Arc::new(CpuBudget::new(config.threads)));
    Ok(Arc::new(AppState {
        config,
        store,
        scheduler,
        model_cache: model::ModelCache::default(),
        keys,
    }))
}

/// What can go wrong in the inference layer. Each message is what the
/// client reads; `error.rs` picks the status.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No model by that name (the message names it as the client wrote it).
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    /// No model by that name, in the embedding routes' wording.
    #[error("model \"{0}\" not found, try pulling it first")]
    EmbedModelNotFound(String),
    /// The model's manifest has no weights layer.
    #[error("{0} has no model weights to run")]
    NoWeights(String),
    /// A `keep_alive` that is neither seconds nor a Go duration.
    #[error("{0}")]
    KeepAlive(String),
    /// A request or model option of the wrong type.
    #[error("{0}")]
    Options(String),
    /// An image that is not base64 of a PNG, JPEG, GIF or BMP file.
    #[error("{0}")]
    Image(String),
    /// A stored model that cannot be read as written (bad digest, template).
    #[error("{0}")]
    BrokenModel(String),
    /// The model lacks what the request asks for (thinking, tools,
    /// vision, insert, generate, chat).
    #[error("{model} does not support {what}")]
    Unsupported {
        /// The model, as the message names it.
        model: String,
        /// The capability.
        what: &'static str,
    },
    /// A `format` that is neither `"json"` nor a schema hearth can honour.
    #[error("{0}")]
    Format(String),
    /// A `think` value that is not a boolean or a level.
    #[error("invalid think value: {0}")]
    Think(String),
    /// `top_logprobs` out of range.
    #[error("top_logprobs must be between 0 and 20")]
    TopLogprobs,
    /// `raw` together with a template, system prompt or context.
    #[error("raw mode does not support template, system, or context")]
    RawWithTemplate,
    /// A request without a model name.
    #[error("model is required")]
    ModelRequired,
    /// A template (the request's or the model's) that does not parse or run.
    #[error("template error: {0}")]
    Template(String),
    /// The prompt does not fit the context, and may not be shifted or cut.
    #[error("{0}")]
    TooLong(&'static str),
    /// A token id outside the model's vocabulary.
    #[error("token {0} is not in the model's vocabulary")]
    BadToken(i64),
    /// An embedding input with no tokens left.
    #[error("input is empty after tokenization")]
    EmptyInput,
    /// Something on our side failed (tokenizing, the runner); logged.
    #[error("{0}")]
    Internal(String),
    /// From the store.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// From the scheduler (queue full, load failure).
    #[error(transparent)]
    Schedule(#[from] scheduler::Error),
}

impl AppState {
    /// The request's `keep_alive`, or the server's default.
    pub fn keep_alive(&self, v: Option<&serde_json::Value>) -> Result<scheduler::KeepAlive, Error> {
        model::parse_keep_alive(v, self.scheduler.default_keep_alive())
    }

    /// The loaded models with their store entries (for `/api/ps`); a model
    /// deleted while loaded is left out.
    pub async fn loaded(
        self: &Arc<Self>,
    ) -> Result<Vec<(scheduler::Running, store::Entry)>, Error> {
        let running = self.scheduler.running();
        let store = Arc::clone(&self.store);
        blocking(move || {
            let entries = store.list()?;
            Ok(running
                .into_iter()
                .filter_map(|r| {
                    let e = entries.iter().find(|e| e.digest == r.digest)?.clone();
                    Some((r, e))
                })
                .collect())
        })
        .await
    }

    /// Unloads every model (at shutdown).
    pub fn unload_all(&self) {
        self.scheduler.unload_all();
    }
}

/// Runs blocking work (store reads and writes, image decoding) off the
/// async workers; any error type that can carry an [`Error`] (this layer's,
/// or `api`'s) comes back as it was.
pub async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| E::from(Error::Internal(format!("blocking task failed: {e}"))))?
}
