//! Token counting for every dialect: text to the model's token ids and
//! back, so clients stop estimating tokens as characters / 4. The model is
//! leased as a generation would lease it (the same load), and its
//! vocabulary does the work on a blocking thread.

use std::sync::Arc;

use super::model::{load_key, merged_options, resolve};
use super::{blocking, AppState, Error};
use crate::model::ModelName;
use crate::scheduler::Lease;

/// Leases the model named `raw` with its default options.
async fn lease(state: &Arc<AppState>, raw: &str) -> Result<Lease, Error> {
    if raw.is_empty() {
        return Err(Error::ModelRequired);
    }
    let name = ModelName::parse(raw).map_err(|_| Error::ModelNotFound(raw.to_string()))?;
    let st = Arc::clone(state);
    let r = raw.to_string();
    let model = blocking(move || resolve(&st, &name, &r)).await?;
    let opts = merged_options(state, &model, None)?;
    let short = model.name.display_short();
    let keep_alive = state.keep_alive(None)?;
    Ok(state
        .scheduler
        .acquire(load_key(&model, &opts), (&short, &model.digest), keep_alive)
        .await?)
}

/// The token ids of `text`, with the model's special tokens (BOS) when
/// `add_special`, and each token's text.
pub(crate) async fn tokenize(
    state: &Arc<AppState>,
    raw: &str,
    text: String,
    add_special: bool,
) -> Result<Vec<(i32, Vec<u8>)>, Error> {
    let lease = lease(state, raw).await?;
    let runner = Arc::clone(&lease.runner);
    blocking(move || {
        let ids = runner
            .tokenize(&text, add_special, true)
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(ids
            .into_iter()
            .map(|id| (id, runner.token_bytes(id)))
            .collect())
    })
    .await
}

/// The text of `tokens`; an id outside the vocabulary is refused (llama.cpp
/// would read past its tables).
pub(crate) async fn detokenize(
    state: &Arc<AppState>,
    raw: &str,
    tokens: Vec<i64>,
) -> Result<String, Error> {
    let lease = lease(state, raw).await?;
    let n_vocab = i64::from(lease.runner.info().n_vocab);
    let ids = tokens
        .iter()
        .map(|&t| {
            if (0..n_vocab).contains(&t) {
                i32::try_from(t).map_err(|_| Error::BadToken(t))
            } else {
                Err(Error::BadToken(t))
            }
        })
        .collect::<Result<Vec<i32>, Error>>()?;
    let runner = Arc::clone(&lease.runner);
    blocking(move || Ok(runner.detokenize(&ids))).await
}
