//! Embedding routes: `/api/embed` (current) and `/api/embeddings` (legacy):
//! their requests and answers. Finding the model, its lease and the
//! embedding itself are `infer::embed`'s.

use std::sync::Arc;
use std::time::Instant;

use hyper::body::Incoming;
use hyper::Response;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::body::{self, Body};
use super::types::{nanos, EmbedResponse, LegacyEmbedResponse, Metrics};
use super::AppState;
use crate::error::ApiError;
use crate::infer::embed::{embed, find, lease, shorten};

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
    let keep_alive = state.keep_alive(req.keep_alive.as_ref())?;
    let lease = lease(state, &model, req.options.as_ref(), keep_alive).await?;
    if inputs.is_empty() {
        return body::json(&EmbedResponse {
            model: &req.model,
            embeddings: Vec::new(),
            metrics: Metrics::default(),
        });
    }
    let out = embed(&lease, inputs, req.truncate.unwrap_or(true)).await?;
    drop(lease);
    let dims = req.dimensions.unwrap_or(0);
    let embeddings: Vec<Vec<f32>> = out.vectors.into_iter().map(|v| shorten(v, dims)).collect();
    body::json(&EmbedResponse {
        model: &req.model,
        embeddings,
        metrics: Metrics {
            total_duration: nanos(started.elapsed()),
            load_duration: nanos(out.load),
            prompt_eval_count: out.prompt_tokens as u64,
            ..Metrics::default()
        },
    })
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
    let keep_alive = state.keep_alive(req.keep_alive.as_ref())?;
    let lease = lease(state, &model, req.options.as_ref(), keep_alive).await?;
    if req.prompt.is_empty() {
        return body::json(&LegacyEmbedResponse {
            embedding: Vec::new(),
        });
    }
    let out = embed(&lease, vec![req.prompt], true)
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    let vector = out.vectors.into_iter().next().unwrap_or_default();
    // Upstream sends float64s; the values are the same numbers.
    let vector: Vec<f64> = vector.into_iter().map(f64::from).collect();
    body::json(&LegacyEmbedResponse { embedding: vector })
}
