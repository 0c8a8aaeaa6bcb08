//! `POST /api/tokenize` and `/api/detokenize`: llama-server's `/tokenize`
//! and `/detokenize` shapes with Ollama's `model` field added (Ollama has
//! no such routes).

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Response;
use serde::{Deserialize, Serialize};

use super::body::{self, Body};
use super::AppState;
use crate::error::ApiError;
use crate::infer::tokens;

#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    content: String,
    /// BOS and the like, as a prompt gets them (default true).
    #[serde(default)]
    add_special: Option<bool>,
    /// Each id with its text.
    #[serde(default)]
    with_pieces: bool,
}

#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Tokens {
    Ids(Vec<i32>),
    Pieces(Vec<Piece>),
}

#[derive(Debug, Serialize)]
struct Piece {
    id: i32,
    piece: String,
}

#[derive(Debug, Serialize)]
struct TokenizeResponse {
    model: String,
    tokens: Tokens,
}

/// `POST /api/tokenize`.
pub async fn tokenize(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: TokenizeRequest = body::read_json(body).await?;
    let add_special = req.add_special.unwrap_or(true);
    let out = tokens::tokenize(state, &req.model, req.content, add_special).await?;
    let tokens = if req.with_pieces {
        Tokens::Pieces(
            out.into_iter()
                .map(|(id, bytes)| Piece {
                    id,
                    piece: String::from_utf8_lossy(&bytes).into_owned(),
                })
                .collect(),
        )
    } else {
        Tokens::Ids(out.into_iter().map(|(id, _)| id).collect())
    };
    body::json(&TokenizeResponse {
        model: req.model,
        tokens,
    })
}

#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    #[serde(default)]
    model: String,
    #[serde(default)]
    tokens: Vec<i64>,
}

#[derive(Debug, Serialize)]
struct DetokenizeResponse {
    model: String,
    content: String,
}

/// `POST /api/detokenize`.
pub async fn detokenize(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: DetokenizeRequest = body::read_json(body).await?;
    let content = tokens::detokenize(state, &req.model, req.tokens).await?;
    body::json(&DetokenizeResponse {
        model: req.model,
        content,
    })
}
