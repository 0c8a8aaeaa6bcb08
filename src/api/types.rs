//! Wire types: the JSON shapes of requests and responses, with Ollama's
//! field names. The ones that modules below `api` also need live with them
//! and are re-exported here: `Message` (`prompt`), `Progress` (`progress`),
//! `CreateRequest` (`create`) and the generate and chat requests (`infer`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::create::CreateRequest;
pub use crate::infer::request::{ChatRequest, GenerateRequest, Settings};
pub use crate::progress::Progress;
pub use crate::prompt::Message;

/// `POST /api/show`.
#[derive(Debug, Deserialize, Default)]
pub struct ShowRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Deprecated alias.
    #[serde(default)]
    pub name: String,
    /// Full arrays in `model_info`.
    #[serde(default)]
    pub verbose: bool,
    /// Overrides the system prompt shown.
    #[serde(default)]
    pub system: Option<String>,
}

/// `POST /api/copy`.
#[derive(Debug, Deserialize, Default)]
pub struct CopyRequest {
    /// Existing model.
    #[serde(default)]
    pub source: String,
    /// New name.
    #[serde(default)]
    pub destination: String,
}

/// `DELETE /api/delete`.
#[derive(Debug, Deserialize, Default)]
pub struct DeleteRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Deprecated alias.
    #[serde(default)]
    pub name: String,
}

/// `details` of tags, show and ps.
#[derive(Debug, Serialize, Clone, Default)]
pub struct Details {
    /// Model this one was created from.
    pub parent_model: String,
    /// `gguf`.
    pub format: String,
    /// Architecture.
    pub family: String,
    /// Architectures.
    pub families: Option<Vec<String>>,
    /// e.g. `268.10M`.
    pub parameter_size: String,
    /// e.g. `Q4_K_M`.
    pub quantization_level: String,
}

/// One model of `GET /api/tags`.
#[derive(Debug, Serialize)]
pub struct TagsModel {
    /// Short name.
    pub name: String,
    /// Short name again.
    pub model: String,
    /// Manifest mtime.
    pub modified_at: String,
    /// Bytes of all layers.
    pub size: u64,
    /// sha256 of the manifest bytes.
    pub digest: String,
    /// From the config blob.
    pub details: Details,
}

/// One chunk of `/api/generate` or `/api/chat`, or the whole answer.
#[derive(Debug, Serialize)]
pub struct Chunk<'a> {
    /// The model as the client named it.
    pub model: &'a str,
    /// When the chunk was written.
    pub created_at: String,
    /// `response` (generate) or `message` (chat).
    #[serde(flatten)]
    pub body: ChunkBody<'a>,
    /// Whether this is the last chunk.
    pub done: bool,
    /// `stop`, `length`, `load` or `unload` on the last chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_reason: Option<&'a str>,
    /// Generate's prompt and answer tokens, for the next request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Vec<i32>>,
    /// Statistics of the last chunk.
    #[serde(flatten)]
    pub metrics: Metrics,
    /// Log probabilities of this chunk's tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logprobs: Option<Vec<LogprobEntry<'a>>>,
}

/// What differs between a generate and a chat chunk.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ChunkBody<'a> {
    /// `/api/generate`.
    Generate {
        /// Answer text.
        response: &'a str,
        /// Reasoning.
        #[serde(skip_serializing_if = "Option::is_none")]
        thinking: Option<&'a str>,
    },
    /// `/api/chat`.
    Chat {
        /// The assistant's message (so far).
        message: AssistantMessage<'a>,
    },
}

/// The assistant's message of a chat chunk.
#[derive(Debug, Serialize)]
pub struct AssistantMessage<'a> {
    /// Always `assistant`.
    pub role: &'static str,
    /// Answer text.
    pub content: &'a str,
    /// Reasoning.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub thinking: Option<&'a str>,
    /// Tool calls.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall<'a>>>,
}

/// A tool call as Ollama writes it.
#[derive(Debug, Serialize)]
pub struct ToolCall<'a> {
    /// `call_` and 8 characters.
    pub id: String,
    /// The call.
    pub function: ToolFunction<'a>,
}

/// The function of a tool call.
#[derive(Debug, Serialize)]
pub struct ToolFunction<'a> {
    /// Position in the answer.
    pub index: usize,
    /// Function name.
    pub name: &'a str,
    /// Arguments as an object.
    pub arguments: &'a serde_json::Map<String, serde_json::Value>,
}

/// Statistics of a last chunk; zeros are left out.
#[derive(Debug, Serialize, Default)]
pub struct Metrics {
    /// Nanoseconds from request to answer.
    #[serde(skip_serializing_if = "is_zero")]
    pub total_duration: u64,
    /// Nanoseconds spent loading the model.
    #[serde(skip_serializing_if = "is_zero")]
    pub load_duration: u64,
    /// Tokens in the prompt.
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_count: u64,
    /// Nanoseconds spent evaluating the prompt.
    #[serde(skip_serializing_if = "is_zero")]
    pub prompt_eval_duration: u64,
    /// Tokens generated.
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_count: u64,
    /// Nanoseconds spent generating.
    #[serde(skip_serializing_if = "is_zero")]
    pub eval_duration: u64,
}

/// A duration in nanoseconds, as Ollama's statistics count.
pub fn nanos(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if takes a reference
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One token's log probability: text, value, bytes and (when asked) the
/// most likely alternatives.
#[derive(Debug, Serialize)]
pub struct LogprobEntry<'a> {
    /// The token's text (lossy UTF-8).
    pub token: String,
    /// Its log probability.
    pub logprob: f32,
    /// Its bytes.
    pub bytes: &'a [u8],
    /// The alternatives.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_logprobs: Option<Vec<LogprobEntry<'a>>>,
}

/// One model of `GET /api/ps`.
#[derive(Debug, Serialize)]
pub struct RunningModel {
    /// Short name.
    pub name: String,
    /// Short name again.
    pub model: String,
    /// Bytes in memory.
    pub size: u64,
    /// sha256 of the manifest.
    pub digest: String,
    /// From the config blob.
    pub details: Details,
    /// When it will be unloaded.
    pub expires_at: String,
    /// Always 0: no GPU.
    pub size_vram: u64,
    /// The loaded context length.
    pub context_length: u32,
}

/// `{"models": [...]}` of tags and ps.
#[derive(Debug, Serialize)]
pub struct ModelList<T> {
    /// The models.
    pub models: Vec<T>,
}

/// The answer of `POST /api/show`.
#[derive(Debug, Serialize)]
pub struct ShowResponse {
    /// License texts, joined.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub license: Option<String>,
    /// The Modelfile that would recreate the model.
    pub modelfile: String,
    /// Parameters, one per line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parameters: Option<String>,
    /// The prompt template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The system prompt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// From the config blob.
    pub details: Details,
    /// Messages of the model's conversation layer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<Vec<Message>>,
    /// The weights' GGUF metadata.
    pub model_info: serde_json::Map<String, serde_json::Value>,
    /// The projector's GGUF metadata.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub projector_info: Option<serde_json::Map<String, serde_json::Value>>,
    /// Tensors, when verbose.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tensors: Option<Vec<TensorInfo>>,
    /// What the model can do.
    pub capabilities: Vec<&'static str>,
    /// Manifest mtime.
    pub modified_at: String,
}

/// One tensor of a verbose show.
#[derive(Debug, Serialize)]
pub struct TensorInfo {
    /// Tensor name.
    pub name: String,
    /// ggml type name.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Dimensions.
    pub shape: Vec<u64>,
}

/// The answer of `POST /api/embed`.
#[derive(Debug, Serialize)]
pub struct EmbedResponse<'a> {
    /// The model as the client named it.
    pub model: &'a str,
    /// One vector per input.
    pub embeddings: Vec<Vec<f32>>,
    /// Statistics (none for an empty input).
    #[serde(flatten)]
    pub metrics: Metrics,
}

/// The answer of `POST /api/embeddings`.
#[derive(Debug, Serialize)]
pub struct LegacyEmbedResponse {
    /// The vector (float64s upstream; the same numbers).
    pub embedding: Vec<f64>,
}

/// Formats a time as RFC 3339 in UTC with nanoseconds, like Go's `time.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm), valid for any year >= 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::new(1_787_000_000, 5);
        assert_eq!(rfc3339(t), "2026-08-17T20:53:20.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        // Far-future expiry for keep_alive forever must not overflow.
        let far = UNIX_EPOCH + Duration::from_secs(10_960_000_000);
        assert!(rfc3339(far).starts_with("2317-"));
    }
}
