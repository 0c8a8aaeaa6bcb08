//! Embeddings for every dialect (`/api/embed`, `/api/embeddings`,
//! `/v1/embeddings`): the model's lease with embedding settings (pooling
//! models embed up to 16 inputs per decode), tokenizing with truncation to
//! the context, the decode, and vectors cut to a requested size and made
//! unit length again.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use super::model::{load_key, merged_options, resolve, ResolvedModel};
use super::{blocking, AppState, Error};
use crate::model::ModelName;
use crate::scheduler::{KeepAlive, Lease};

/// Embeddings of some inputs, with Ollama's statistics.
pub(crate) struct Embedded {
    /// One vector per input, unit length.
    pub(crate) vectors: Vec<Vec<f32>>,
    /// Tokens of all inputs.
    pub(crate) prompt_tokens: usize,
    /// Time spent loading the model for this request.
    pub(crate) load: Duration,
}

/// The model of an embedding request. These routes name an unknown model
/// in their own words ([`Error::EmbedModelNotFound`]).
pub(crate) async fn find(state: &Arc<AppState>, raw: &str) -> Result<Arc<ResolvedModel>, Error> {
    let not_found = || Error::EmbedModelNotFound(raw.to_string());
    let name = ModelName::parse(raw).map_err(|_| not_found())?;
    let st = Arc::clone(state);
    let r = raw.to_string();
    blocking(move || resolve(&st, &name, &r))
        .await
        .map_err(|e| match e {
            Error::ModelNotFound(_) => not_found(),
            other => other,
        })
}

/// Leases the model with embedding settings.
pub(crate) async fn lease(
    state: &Arc<AppState>,
    model: &ResolvedModel,
    options: Option<&Map<String, Value>>,
    keep_alive: KeepAlive,
) -> Result<Lease, Error> {
    let opts = merged_options(state, model, options)?;
    let mut key = load_key(model, &opts);
    key.embeddings = true;
    // Embeddings never look at images.
    key.projector = None;
    // Encoder models with their own pooling keep no KV cache, so several
    // sequences cost nothing but let one decode embed several inputs.
    if model.caps.contains(&"embedding") {
        key.embed_seqs = 16;
    }
    // Each input is embedded in one decode, so the batch must hold a whole
    // context; beyond 2048 tokens the compute buffer outgrows small boxes.
    key.num_ctx = key.num_ctx.min(2048);
    key.num_batch = key.num_ctx;
    let short = model.name.display_short();
    Ok(state
        .scheduler
        .acquire(key, (&short, &model.digest), keep_alive)
        .await?)
}

/// Tokenizes and embeds; `truncate` cuts inputs to the context, otherwise a
/// long input is a 400.
pub(crate) async fn embed(
    lease: &Lease,
    inputs: Vec<String>,
    truncate: bool,
) -> Result<Embedded, Error> {
    let runner = Arc::clone(&lease.runner);
    let load = lease.load_duration;
    blocking(move || {
        let limit = runner.info().n_ctx as usize;
        let mut batch = Vec::with_capacity(inputs.len());
        for text in &inputs {
            let mut tokens = runner
                .tokenize(text, true, false)
                .map_err(|e| Error::Internal(e.to_string()))?;
            if tokens.len() > limit {
                if !truncate {
                    return Err(Error::TooLong(
                        "the input length exceeds the context length",
                    ));
                }
                tokens.truncate(limit);
            }
            if tokens.is_empty() {
                return Err(Error::EmptyInput);
            }
            batch.push(tokens);
        }
        let prompt_tokens = batch.iter().map(Vec::len).sum();
        let vectors = runner
            .embed(batch)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(Embedded {
            vectors,
            prompt_tokens,
            load,
        })
    })
    .await
}

/// Cuts a vector to `dims` and makes it unit length again.
pub(crate) fn shorten(mut v: Vec<f32>, dims: usize) -> Vec<f32> {
    if dims > 0 && dims < v.len() {
        v.truncate(dims);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    v
}

/// Embeds texts with a model for other routes (`/v1/embeddings`): unit
/// vectors, cut to `dims` when non-zero, and the prompt token count.
pub(crate) async fn embed_texts(
    state: &Arc<AppState>,
    model: &str,
    inputs: Vec<String>,
    dims: usize,
) -> Result<(Vec<Vec<f32>>, usize), Error> {
    let m = find(state, model).await?;
    let lease = lease(state, &m, None, state.scheduler.default_keep_alive()).await?;
    let out = embed(&lease, inputs, true).await?;
    Ok((
        out.vectors.into_iter().map(|v| shorten(v, dims)).collect(),
        out.prompt_tokens,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortening_renormalises() {
        let v = shorten(vec![0.6, 0.8, 0.0, 0.0], 1);
        assert_eq!(v, vec![1.0]);
        let same = shorten(vec![0.6, 0.8], 0);
        assert_eq!(same, vec![0.6, 0.8]);
    }
}
