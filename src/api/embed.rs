//! Embedding routes: `/api/embed` (current) and `/api/embeddings` (legacy).
//! Both return unit-length vectors, as Ollama does.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::Response;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::body::{self, Body};
use super::{blocking, AppState};
use crate::error::ApiError;
use crate::infer::{
    self,
    model::{load_key, merged_options, parse_keep_alive, resolve, Model},
};
use crate::model::ModelName;
use crate::scheduler::{KeepAlive, Lease};

/// `POST /api/embed`.
#[derive(Debug, Deserialize, Default)]
struct EmbedRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    input: Value,
    #[serde(default)]
    truncate: Option<bool>,
    #[serde(default)]
    dimensions: Option<usize>,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

/// `POST /api/embeddings`.
#[derive(Debug, Deserialize, Default)]
struct LegacyRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    prompt: String,
    #[serde(default)]
    keep_alive: Option<Value>,
    #[serde(default)]
    options: Option<Map<String, Value>>,
}

/// Embeddings of some inputs, with Ollama's statistics.
struct Embedded {
    vectors: Vec<Vec<f32>>,
    prompt_tokens: usize,
    load: Duration,
}

async fn find(state: &Arc<AppState>, raw: &str) -> Result<Arc<Model>, ApiError> {
    let not_found =
        || ApiError::NotFound(format!("model \"{raw}\" not found, try pulling it first"));
    let name = ModelName::parse(raw).map_err(|_| not_found())?;
    let st = Arc::clone(state);
    let r = raw.to_string();
    blocking(move || Ok(resolve(&st, &name, &r)?))
        .await
        .map_err(|e| match e {
            ApiError::Infer(infer::Error::ModelNotFound(_)) => not_found(),
            other => other,
        })
}

async fn lease(
    state: &Arc<AppState>,
    model: &Model,
    options: Option<&Map<String, Value>>,
    keep_alive: KeepAlive,
) -> Result<Lease, ApiError> {
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
async fn embed(lease: &Lease, inputs: Vec<String>, truncate: bool) -> Result<Embedded, ApiError> {
    let runner = Arc::clone(&lease.runner);
    let load = lease.load_duration;
    blocking(move || {
        let limit = runner.info().n_ctx as usize;
        let mut batch = Vec::with_capacity(inputs.len());
        for text in &inputs {
            let mut tokens = runner
                .tokenize(text, true, false)
                .map_err(|e| ApiError::Internal(e.to_string()))?;
            if tokens.len() > limit {
                if !truncate {
                    return Err(ApiError::BadRequest(
                        "the input length exceeds the context length".into(),
                    ));
                }
                tokens.truncate(limit);
            }
            if tokens.is_empty() {
                return Err(ApiError::BadRequest(
                    "input is empty after tokenization".into(),
                ));
            }
            batch.push(tokens);
        }
        let prompt_tokens = batch.iter().map(Vec::len).sum();
        let vectors = runner
            .embed(batch)
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(Embedded {
            vectors,
            prompt_tokens,
            load,
        })
    })
    .await
}

/// Cuts a vector to `dims` and makes it unit length again.
fn shorten(mut v: Vec<f32>, dims: usize) -> Vec<f32> {
    if dims > 0 && dims < v.len() {
        v.truncate(dims);
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    v
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Embeds texts with a model for other routes (`/v1/embeddings`): unit
/// vectors, cut to `dims` when non-zero, and the prompt token count.
pub(super) async fn embed_texts(
    state: &Arc<AppState>,
    model: &str,
    inputs: Vec<String>,
    dims: usize,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let m = find(state, model).await?;
    let lease = lease(state, &m, None, state.scheduler.default_keep_alive()).await?;
    let out = embed(&lease, inputs, true).await?;
    Ok((
        out.vectors.into_iter().map(|v| shorten(v, dims)).collect(),
        out.prompt_tokens,
    ))
}

/// `POST /api/embed`.
pub async fn embed_route(
    state: &Arc<AppState>,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let started = Instant::now();
    let req: EmbedRequest = body::read_json(body).await?;
    let inputs: Vec<String> = match &req.input {
        Value::Null => Vec::new(),
        Value::String(s) if s.is_empty() => Vec::new(),
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::BadRequest("invalid input type".into()))?,
        _ => return Err(ApiError::BadRequest("invalid input type".into())),
    };
    let model = find(state, &req.model).await?;
    let keep_alive = parse_keep_alive(
        req.keep_alive.as_ref(),
        state.scheduler.default_keep_alive(),
    )?;
    let lease = lease(state, &model, req.options.as_ref(), keep_alive).await?;
    if inputs.is_empty() {
        return body::json(&json!({"model": req.model, "embeddings": []}));
    }
    let out = embed(&lease, inputs, req.truncate.unwrap_or(true)).await?;
    drop(lease);
    let dims = req.dimensions.unwrap_or(0);
    let embeddings: Vec<Vec<f32>> = out.vectors.into_iter().map(|v| shorten(v, dims)).collect();
    body::json(&json!({
        "model": req.model,
        "embeddings": embeddings,
        "total_duration": nanos(started.elapsed()),
        "load_duration": nanos(out.load),
        "prompt_eval_count": out.prompt_tokens,
    }))
}

/// `POST /api/embeddings`: one prompt, one vector; errors are 500s upstream,
/// except the ones every route shares (bad JSON, unknown model).
pub async fn embeddings_route(
    state: &Arc<AppState>,
    body: Incoming,
) -> Result<Response<Body>, ApiError> {
    let req: LegacyRequest = body::read_json(body).await?;
    if req.model.is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    let model = find(state, &req.model).await?;
    let keep_alive = parse_keep_alive(
        req.keep_alive.as_ref(),
        state.scheduler.default_keep_alive(),
    )?;
    let lease = lease(state, &model, req.options.as_ref(), keep_alive).await?;
    if req.prompt.is_empty() {
        return body::json(&json!({"embedding": []}));
    }
    let out = embed(&lease, vec![req.prompt], true)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let vector = out.vectors.into_iter().next().unwrap_or_default();
    // Upstream sends float64s; the values are the same numbers.
    let vector: Vec<f64> = vector.into_iter().map(f64::from).collect();
    body::json(&json!({ "embedding": vector }))
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
