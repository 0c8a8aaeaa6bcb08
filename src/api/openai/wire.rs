//! OpenAI's answer shapes, as Ollama's `/v1` writes them.

use serde::Serialize;

use super::super::inference::call_id;
use super::super::types::LogprobEntry;
use crate::tools;

/// A chat completion, a text completion, or one chunk of either.
#[derive(Debug, Serialize)]
pub(super) struct Completion<'a, C> {
    /// `chatcmpl-N` or `cmpl-N`.
    pub(super) id: &'a str,
    /// `chat.completion`, `chat.completion.chunk` or `text_completion`.
    pub(super) object: &'static str,
    /// Unix seconds.
    pub(super) created: u64,
    /// The model as the client named it.
    pub(super) model: &'a str,
    /// Always `fp_ollama`.
    pub(super) system_fingerprint: &'static str,
    /// One choice (none in the usage chunk).
    pub(super) choices: Vec<C>,
    /// Token counts (the whole answer, or the usage chunk).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) usage: Option<Usage>,
}

/// Token counts.
#[derive(Debug, Serialize, Clone, Copy)]
pub(super) struct Usage {
    /// Tokens in the prompt.
    pub(super) prompt_tokens: usize,
    /// Tokens generated.
    pub(super) completion_tokens: usize,
    /// Both.
    pub(super) total_tokens: usize,
}

impl Usage {
    pub(super) fn new(prompt_tokens: usize, completion_tokens: usize) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens.saturating_add(completion_tokens),
        }
    }
}

/// A choice of a whole chat completion.
#[derive(Debug, Serialize)]
pub(super) struct ChatChoice<'a> {
    pub(super) index: u32,
    pub(super) message: Delta<'a>,
    pub(super) finish_reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) logprobs: Option<Logprobs<'a>>,
}

/// A choice of a chat chunk.
#[derive(Debug, Serialize)]
pub(super) struct DeltaChoice<'a> {
    pub(super) index: u32,
    pub(super) delta: Delta<'a>,
    /// `null` until the last chunk.
    pub(super) finish_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) logprobs: Option<Logprobs<'a>>,
}

/// A choice of a text completion or of one of its chunks.
#[derive(Debug, Serialize)]
pub(super) struct TextChoice<'a> {
    pub(super) index: u32,
    pub(super) text: &'a str,
    /// `null` until the last chunk.
    pub(super) finish_reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) logprobs: Option<Logprobs<'a>>,
}

/// The assistant's message, or what a chunk adds to it.
#[derive(Debug, Serialize, Default)]
pub(super) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) content: Option<&'a str>,
    /// Ollama's field for reasoning (not `reasoning_content`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) tool_calls: Option<Vec<ToolCall<'a>>>,
}

/// `{"content": [...]}` of a choice.
#[derive(Debug, Serialize)]
pub(super) struct Logprobs<'a> {
    pub(super) content: Vec<LogprobEntry<'a>>,
}

/// A tool call in OpenAI's shape: arguments as a JSON string.
#[derive(Debug, Serialize)]
pub(super) struct ToolCall<'a> {
    pub(super) id: String,
    pub(super) index: usize,
    #[serde(rename = "type")]
    pub(super) kind: &'static str,
    pub(super) function: Function<'a>,
}

/// The function of a tool call.
#[derive(Debug, Serialize)]
pub(super) struct Function<'a> {
    pub(super) name: &'a str,
    pub(super) arguments: String,
}

/// Tool calls in OpenAI's shape.
pub(super) fn tool_calls(calls: &[tools::Call]) -> Vec<ToolCall<'_>> {
    calls
        .iter()
        .enumerate()
        .map(|(index, c)| ToolCall {
            id: call_id(index),
            index,
            kind: "function",
            function: Function {
                name: &c.name,
                arguments: serde_json::Value::Object(c.arguments.clone()).to_string(),
            },
        })
        .collect()
}

/// `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Serialize)]
pub(super) struct ErrorBody<'a> {
    pub(super) error: ErrorObject<'a>,
}

/// OpenAI's error object.
#[derive(Debug, Serialize)]
pub(super) struct ErrorObject<'a> {
    pub(super) message: &'a str,
    #[serde(rename = "type")]
    pub(super) kind: &'a str,
    pub(super) param: Option<&'a str>,
    pub(super) code: Option<&'a str>,
}

impl<'a> ErrorBody<'a> {
    pub(super) fn new(message: &'a str, kind: &'a str) -> ErrorBody<'a> {
        ErrorBody {
            error: ErrorObject {
                message,
                kind,
                param: None,
                code: None,
            },
        }
    }
}

/// `{"object": "list", "data": [...]}` with extra fields for embeddings.
#[derive(Debug, Serialize)]
pub(super) struct List<T> {
    pub(super) object: &'static str,
    pub(super) data: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) usage: Option<EmbedUsage>,
}

/// Token counts of an embedding request.
#[derive(Debug, Serialize)]
pub(super) struct EmbedUsage {
    pub(super) prompt_tokens: usize,
    pub(super) total_tokens: usize,
}

/// One embedding.
#[derive(Debug, Serialize)]
pub(super) struct Embedding {
    pub(super) object: &'static str,
    /// Floats, or base64 of little-endian f32s.
    pub(super) embedding: EmbeddingData,
    pub(super) index: usize,
}

/// An embedding's numbers.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub(super) enum EmbeddingData {
    Floats(Vec<f32>),
    Base64(String),
}

/// A model of `/v1/models`.
#[derive(Debug, Serialize)]
pub(super) struct ModelObject {
    pub(super) id: String,
    pub(super) object: &'static str,
    pub(super) created: u64,
    pub(super) owned_by: String,
}
