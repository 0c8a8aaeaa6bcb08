//! Tool calls: finding the calls a model wrote in its answer.
//!
//! Formats of the common chat templates: Qwen 2.5/3 and Hermes
//! (`<tool_call>{json}</tool_call>`), Mistral (`[TOOL_CALLS] [json, ...]`),
//! Llama 3.x (`<|python_tag|>` or a bare JSON object with `name` and
//! `parameters`), and a bare JSON object or list with `name` and `arguments`
//! (Gemma and small models told to answer in JSON). Rendering tools into the
//! prompt is the template's job; this module only reads the output.

use serde_json::{Map, Value};

/// One call the model asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    /// Function name.
    pub name: String,
    /// Arguments as a JSON object.
    pub arguments: Map<String, Value>,
}

/// Markers after which a model's output is a tool call, not text.
const PREFIXES: &[&str] = &["<tool_call>", "[TOOL_CALLS]", "<|python_tag|>", "{", "["];

/// Whether `text` (the answer so far) may still turn out to be a tool call,
/// so a streaming answer should hold it back instead of sending it as text.
pub fn may_be_call(text: &str) -> bool {
    let t = text.trim_start();
    t.is_empty()
        || PREFIXES
            .iter()
            .any(|p| t.starts_with(p) || p.starts_with(t))
}

/// Splits an answer into its tool calls and the remaining text. Returns no
/// calls when the answer holds none (the text is then unchanged).
pub fn parse(text: &str) -> (Vec<Call>, String) {
    let t = text.trim();
    if t.contains("<tool_call>") {
        let mut calls = Vec::new();
        let mut rest = String::new();
        let mut s = t;
        while let Some(start) = s.find("<tool_call>") {
            rest.push_str(&s[..start]);
            let after = &s[start + "<tool_call>".len()..];
            let (body, tail) = match after.find("</tool_call>") {
                Some(end) => (&after[..end], &after[end + "</tool_call>".len()..]),
                None => (after, ""),
            };
            calls.extend(calls_in(body.trim()));
            s = tail;
        }
        rest.push_str(s);
        if !calls.is_empty() {
            return (calls, rest.trim().to_string());
        }
    }
    for marker in ["[TOOL_CALLS]", "<|python_tag|>"] {
        if let Some(at) = t.find(marker) {
            let calls = calls_in(t[at + marker.len()..].trim());
            if !calls.is_empty() {
                return (calls, t[..at].trim().to_string());
            }
        }
    }
    let calls = leading_calls(strip_fence(t));
    if calls.is_empty() {
        (Vec::new(), text.to_string())
    } else {
        // Whatever follows the calls is dropped, as Ollama's parser drops
        // it (`tools/tools.go`, v0.33): small models often add a sentence
        // after a call, and it must not leak into the content.
        (calls, String::new())
    }
}

/// Removes the opening of a Markdown code fence around JSON, which small
/// models often add (the closing fence, and what follows, is text after
/// the calls).
fn strip_fence(t: &str) -> &str {
    let Some(inner) = t.strip_prefix("```") else {
        return t;
    };
    inner.strip_prefix("json").unwrap_or(inner).trim_start()
}

/// The calls at the start of an answer: one JSON value after another (an
/// object, or a list of them), each a call, up to the first thing that is
/// not one; text after them does not stop the calls before it counting.
fn leading_calls(body: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    for value in serde_json::Deserializer::from_str(body).into_iter::<Value>() {
        let Ok(value) = value else { break };
        let items = match value {
            Value::Array(a) => a,
            other => vec![other],
        };
        let found: Vec<Call> = items.iter().filter_map(call_of).collect();
        if found.is_empty() || found.len() != items.len() {
            break;
        }
        calls.extend(found);
    }
    calls
}

/// Calls in a JSON value: one object, or a list of them.
fn calls_in(body: &str) -> Vec<Call> {
    let Ok(v) = serde_json::from_str::<Value>(body) else {
        return Vec::new();
    };
    let items = match v {
        Value::Array(a) => a,
        other => vec![other],
    };
    let calls: Vec<Call> = items.iter().filter_map(call_of).collect();
    if calls.len() == items.len() {
        calls
    } else {
        Vec::new()
    }
}

fn call_of(v: &Value) -> Option<Call> {
    let obj = v.as_object()?;
    let f = obj
        .get("function")
        .and_then(Value::as_object)
        .unwrap_or(obj);
    let name = f.get("name")?.as_str()?.to_string();
    let args = f.get("arguments").or_else(|| f.get("parameters"));
    let arguments = match args {
        None => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        // Some models write the arguments as a JSON string, as OpenAI does.
        Some(Value::String(s)) => serde_json::from_str(s).ok()?,
        Some(_) => return None,
    };
    Some(Call { name, arguments })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(text: &str, expected: &[(&str, Value)], rest: &str) {
        let (calls, r) = parse(text);
        let got: Vec<(String, Value)> = calls
            .into_iter()
            .map(|c| (c.name, Value::Object(c.arguments)))
            .collect();
        let want: Vec<(String, Value)> = expected
            .iter()
            .map(|(n, a)| (n.to_string(), a.clone()))
            .collect();
        assert_eq!(got, want, "{text:?}");
        assert_eq!(r, rest, "{text:?}");
    }

    #[test]
    fn qwen_and_hermes() {
        check(
            "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
            &[("get_weather", json!({"city": "Paris"}))],
            "",
        );
        check(
            "Let me check.\n<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": {\"x\": 1}}</tool_call>",
            &[("a", json!({})), ("b", json!({"x": 1}))],
            "Let me check.",
        );
    }

    #[test]
    fn mistral_llama_and_bare_json() {
        check(
            "[TOOL_CALLS] [{\"name\": \"f\", \"arguments\": {\"q\": \"x\"}}]",
            &[("f", json!({"q": "x"}))],
            "",
        );
        check(
            "<|python_tag|>{\"name\": \"f\", \"parameters\": {\"n\": 2}}",
            &[("f", json!({"n": 2}))],
            "",
        );
        check(
            "{\"name\": \"f\", \"parameters\": {\"n\": 2}}",
            &[("f", json!({"n": 2}))],
            "",
        );
        check(
            "```json\n{\"name\": \"f\", \"arguments\": \"{\\\"a\\\": true}\"}\n```",
            &[("f", json!({"a": true}))],
            "",
        );
        check(
            "{\"type\": \"function\", \"function\": {\"name\": \"g\", \"arguments\": {}}}",
            &[("g", json!({}))],
            "",
        );
    }

    #[test]
    fn plain_answers_are_left_alone() {
        check("The weather is nice.", &[], "The weather is nice.");
        check("{\"city\": \"Paris\"}", &[], "{\"city\": \"Paris\"}");
        check(
            "<tool_call>not json</tool_call>",
            &[],
            "<tool_call>not json</tool_call>",
        );
    }

    #[test]
    fn leading_calls_followed_by_text() {
        let args = json!({"city": "Paris"});
        check(
            "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}} I will check the weather.",
            &[("get_weather", args.clone())],
            "",
        );
        check(
            "```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```\nDone.",
            &[("get_weather", args.clone())],
            "",
        );
        check(
            "{\"name\": \"a\", \"arguments\": {}}\n{\"name\": \"b\", \"arguments\": {}} and more",
            &[("a", json!({})), ("b", json!({}))],
            "",
        );
        // A JSON object that is not a call, then text: plain content.
        let t = "{\"city\": \"Paris\"} is what you asked";
        check(t, &[], t);
    }

    #[test]
    fn streaming_holds_back_possible_calls() {
        assert!(may_be_call(""));
        assert!(may_be_call("  <tool"));
        assert!(may_be_call("{\"na"));
        assert!(!may_be_call("Hello"));
    }
}
