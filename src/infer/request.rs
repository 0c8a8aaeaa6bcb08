//! The generate and chat requests as clients send them (Ollama's field
//! names). They are wire shapes, but `infer` prepares them for every
//! dialect (`/v1` translates into them), so they live here and `api`
//! re-exports them.

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::prompt::Message;

/// `POST /api/generate`.
#[derive(Debug, Deserialize, Default)]
pub struct GenerateRequest {
    /// The model, as the client names it.
    #[serde(default)]
    pub model: String,
    /// Prompt text; empty loads the model.
    #[serde(default)]
    pub prompt: String,
    /// Text after the insertion point.
    #[serde(default)]
    pub suffix: Option<String>,
    /// Overrides the model's system prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// Overrides the model's template.
    #[serde(default)]
    pub template: Option<String>,
    /// Tokens from a previous answer.
    #[serde(default)]
    pub context: Option<Vec<i32>>,
    /// No template at all.
    #[serde(default)]
    pub raw: bool,
    /// Base64 images.
    #[serde(default)]
    pub images: Option<Vec<String>>,
    /// What every generate and chat request shares.
    #[serde(flatten)]
    pub settings: Settings,
}

/// `POST /api/chat`.
#[derive(Debug, Deserialize, Default)]
pub struct ChatRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// The conversation.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// Tool definitions.
    #[serde(default)]
    pub tools: Option<Value>,
    /// What every generate and chat request shares.
    #[serde(flatten)]
    pub settings: Settings,
}

/// The settings generate and chat requests share.
#[derive(Debug, Deserialize, Default)]
pub struct Settings {
    /// `"json"` or a JSON schema.
    #[serde(default)]
    pub format: Option<Value>,
    /// Reasoning control.
    #[serde(default)]
    pub think: Option<Value>,
    /// Defaults to true.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Number (seconds) or duration string.
    #[serde(default)]
    pub keep_alive: Option<Value>,
    /// Model options.
    #[serde(default)]
    pub options: Option<Map<String, Value>>,
    /// Allow a context shift when the prompt is too long.
    #[serde(default)]
    pub shift: Option<bool>,
    /// Trim old history to fit.
    #[serde(default)]
    pub truncate: Option<bool>,
    /// Per-token log probabilities.
    #[serde(default)]
    pub logprobs: Option<bool>,
    /// Alternatives per token.
    #[serde(default)]
    pub top_logprobs: Option<i64>,
}

impl Settings {
    /// Log probabilities with this many alternatives (0 to 20), when asked for.
    pub(crate) fn logprobs(&self) -> Option<usize> {
        self.logprobs
            .unwrap_or(false)
            .then(|| self.top_logprobs.unwrap_or(0).clamp(0, 20) as usize)
    }
}
