//! OpenAI's request shapes, translated into the native ones.

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::super::types::{Message, Settings};
use crate::error::ApiError;

/// Fields the two completion endpoints share.
#[derive(Debug, Deserialize, Default)]
pub(super) struct Sampling {
    #[serde(default)]
    pub(super) temperature: Option<f64>,
    #[serde(default)]
    pub(super) top_p: Option<f64>,
    #[serde(default)]
    pub(super) max_tokens: Option<i64>,
    #[serde(default)]
    pub(super) stop: Option<Value>,
    #[serde(default)]
    pub(super) seed: Option<i64>,
    #[serde(default)]
    pub(super) frequency_penalty: Option<f64>,
    #[serde(default)]
    pub(super) presence_penalty: Option<f64>,
    #[serde(default)]
    pub(super) stream: Option<bool>,
    #[serde(default)]
    pub(super) stream_options: Option<Value>,
}

impl Sampling {
    /// Native options. OpenAI's defaults for temperature and top_p are 1.0,
    /// and they override the model's own values, as in Ollama.
    pub(super) fn options(&self) -> Result<Map<String, Value>, ApiError> {
        let mut o = Map::new();
        o.insert("temperature".into(), json!(self.temperature.unwrap_or(1.0)));
        o.insert(
            "top_p".into(),
            json!(self.top_p.filter(|p| *p > 0.0).unwrap_or(1.0)),
        );
        if let Some(n) = self.max_tokens {
            o.insert("num_predict".into(), json!(n));
        }
        match &self.stop {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                o.insert("stop".into(), json!([s]));
            }
            Some(Value::Array(a)) if a.iter().all(Value::is_string) => {
                o.insert("stop".into(), Value::Array(a.clone()));
            }
            Some(_) => {
                return Err(ApiError::BadRequest(
                    "stop must be a string or a list of strings".into(),
                ))
            }
        }
        if let Some(s) = self.seed {
            o.insert("seed".into(), json!(s));
        }
        if let Some(f) = self.frequency_penalty {
            o.insert("frequency_penalty".into(), json!(f));
        }
        if let Some(p) = self.presence_penalty {
            o.insert("presence_penalty".into(), json!(p));
        }
        Ok(o)
    }

    /// The native settings both endpoints send: not streamed unless asked,
    /// and the options above.
    pub(super) fn settings(&self) -> Result<Settings, ApiError> {
        Ok(Settings {
            stream: Some(self.stream.unwrap_or(false)),
            options: Some(self.options()?),
            ..Settings::default()
        })
    }

    pub(super) fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o["include_usage"] == true)
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct ChatCompletionRequest {
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) messages: Vec<Value>,
    #[serde(default)]
    pub(super) response_format: Option<Value>,
    #[serde(default)]
    pub(super) tools: Option<Value>,
    #[serde(default)]
    pub(super) logprobs: Option<bool>,
    #[serde(default)]
    pub(super) top_logprobs: Option<i64>,
    /// `none`, `low`, `medium` or `high`: native `think` (off, or a level).
    #[serde(default)]
    pub(super) reasoning_effort: Option<String>,
    #[serde(flatten)]
    pub(super) sampling: Sampling,
}

/// Converts OpenAI messages (string or content parts, tool calls with JSON
/// string arguments) into native ones.
pub(super) fn native_messages(messages: &[Value]) -> Result<Vec<Message>, ApiError> {
    let mut out = Vec::new();
    for m in messages {
        let role = m["role"].as_str().unwrap_or("user").to_lowercase();
        let mut msg = Message {
            role,
            ..Message::default()
        };
        match &m["content"] {
            Value::String(s) => msg.content = s.clone(),
            Value::Array(parts) => {
                let mut texts = Vec::new();
                for part in parts {
                    match part["type"].as_str() {
                        Some("text") => {
                            texts.push(part["text"].as_str().unwrap_or_default().to_string())
                        }
                        Some("image_url") => {
                            let url = part["image_url"]["url"]
                                .as_str()
                                .or_else(|| part["image_url"].as_str())
                                .unwrap_or("");
                            let Some((_, data)) = url.split_once(";base64,") else {
                                return Err(ApiError::BadRequest(
                                    "image URLs are not currently supported, please use base64 encoded data instead".into(),
                                ));
                            };
                            msg.images
                                .get_or_insert_with(Vec::new)
                                .push(data.to_string());
                        }
                        _ => {
                            return Err(ApiError::BadRequest("invalid message content type".into()))
                        }
                    }
                }
                msg.content = texts.join("\n");
            }
            Value::Null => {}
            _ => return Err(ApiError::BadRequest("invalid message content type".into())),
        }
        if let Some(calls) = m["tool_calls"].as_array() {
            let mut native = Vec::new();
            for c in calls {
                let args = match &c["function"]["arguments"] {
                    Value::String(s) => serde_json::from_str(s)
                        .map_err(|_| ApiError::BadRequest("invalid tool call arguments".into()))?,
                    other => other.clone(),
                };
                native
                    .push(json!({"function": {"name": c["function"]["name"], "arguments": args}}));
            }
            msg.tool_calls = Some(native);
        }
        if let Some(name) = m["name"].as_str() {
            msg.tool_name = Some(name.to_string());
        }
        if let Some(id) = m["tool_call_id"].as_str() {
            msg.tool_call_id = Some(id.to_string());
        }
        out.push(msg);
    }
    Ok(out)
}

pub(super) fn format_of(response_format: Option<&Value>) -> Option<Value> {
    match response_format.and_then(|r| r["type"].as_str()) {
        Some("json_object") => Some(json!("json")),
        Some("json_schema") => response_format.map(|r| r["json_schema"]["schema"].clone()),
        _ => None,
    }
}

#[derive(Debug, Deserialize, Default)]
pub(super) struct CompletionRequest {
    #[serde(default)]
    pub(super) model: String,
    #[serde(default)]
    pub(super) prompt: Value,
    #[serde(default)]
    pub(super) suffix: Option<String>,
    /// The legacy completions API's form: a number of alternatives; any
    /// number above 0 turns log probabilities on (as Ollama reads it).
    #[serde(default)]
    pub(super) logprobs: Option<i64>,
    #[serde(flatten)]
    pub(super) sampling: Sampling,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_from_parts() {
        let m = native_messages(&[
            json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
        ]);
        assert_eq!(m.ok().map(|m| m[0].content.clone()), Some("a\nb".into()));
        let bad = native_messages(&[
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}),
        ]);
        assert!(bad.is_err());
        let calls = native_messages(&[json!({"role": "assistant", "content": null,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}}]})]);
        assert_eq!(
            calls.ok().and_then(|m| m[0].tool_calls.clone()),
            Some(vec![
                json!({"function": {"name": "f", "arguments": {"x": 1}}})
            ])
        );
    }
}
