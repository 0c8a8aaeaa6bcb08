//! Tool calls: tools reach the template, and a call the model writes comes
//! back as `message.tool_calls` (natively) or OpenAI's `tool_calls`.

use serde_json::{json, Value};

use crate::harness::{gemma, inference_lock, Server};

/// A Gemma template that shows the tools, in Ollama's template language.
const TEMPLATE: &str = r#"{{- if .Tools }}<start_of_turn>user
You can call these functions by answering with JSON {"name": ..., "arguments": {...}}:
{{ range .Tools }}{{ .Function.Name }}: {{ .Function.Description }}
{{ end }}<end_of_turn>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}<end_of_turn>
{{ else if eq .Role "tool" }}<start_of_turn>user
Result of {{ .ToolName }}: {{ .Content }}<end_of_turn>
<start_of_turn>model
{{ end }}
{{- end }}"#;

fn weather_tool() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}])
}

/// The format that makes the small model answer with a call.
fn call_schema() -> Value {
    json!({"type": "object", "properties": {"name": {"enum": ["get_weather"]},
        "arguments": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
        "required": ["name", "arguments"]})
}

#[test]
fn tool_calls_come_back_parsed() {
    let _lock = inference_lock();
    let s = Server::start();
    s.create_linked(
        "tooly",
        &gemma(),
        json!({"template": TEMPLATE, "parameters": {"stop": ["<end_of_turn>"]}}),
    );
    let (_, show) = s.post("/api/show", json!({"model": "tooly"}));
    assert!(
        show["capabilities"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("tools"))),
        "{show}"
    );
    let messages = json!([{"role": "user", "content": "What is the weather in Paris?"}]);

    let (status, v) = s.post("/api/chat", json!({"model": "tooly", "messages": messages, "tools": weather_tool(),
        "format": call_schema(), "stream": false, "options": {"temperature": 0, "num_predict": 60}}));
    assert_eq!(status, 200, "{v}");
    let call = &v["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather", "{v}");
    assert_eq!(call["function"]["index"], 0);
    assert!(
        call["function"]["arguments"]["city"].is_string(),
        "arguments are an object: {v}"
    );
    assert!(
        call["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("call_") && id.len() == 13),
        "{call}"
    );
    assert_eq!(v["message"]["content"], "");

    // Streaming: the call arrives in a chunk, not as text.
    let (status, lines) = s.stream(
        "/api/chat",
        json!({"model": "tooly", "messages": messages, "tools": weather_tool(),
        "format": call_schema(), "options": {"temperature": 0, "num_predict": 60}}),
    );
    assert_eq!(status, 200);
    let streamed_calls: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"]["tool_calls"].is_array())
        .collect();
    assert_eq!(streamed_calls.len(), 1, "{lines:?}");
    let text: String = lines
        .iter()
        .filter_map(|l| l["message"]["content"].as_str())
        .collect();
    assert!(
        !text.contains("get_weather"),
        "the call is not also sent as text: {text:?}"
    );

    // The tool's answer goes back in with role "tool".
    let history = json!([{"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_name": "get_weather", "content": "18 degrees and sunny"}]);
    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "tooly", "messages": history, "tools": weather_tool(),
        "stream": false, "options": {"temperature": 0, "num_predict": 20}}),
    );
    assert_eq!(status, 200, "{v}");

    // OpenAI's shape: arguments as a JSON string, finish_reason tool_calls.
    let (status, v) = s.post("/v1/chat/completions", json!({"model": "tooly", "messages": messages, "tools": weather_tool(),
        "response_format": {"type": "json_schema", "json_schema": {"schema": call_schema()}}, "temperature": 0, "max_tokens": 60}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
    let call = &v["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["type"], "function");
    let args: Value = serde_json::from_str(call["function"]["arguments"].as_str().unwrap_or(""))
        .expect("arguments string");
    assert!(args["city"].is_string());
}

/// A template that opens `<think>` for the model, so its answer starts as
/// reasoning; `think: false` turns the split off.
const THINKING_TEMPLATE: &str = "{{- range .Messages }}<start_of_turn>{{ if eq .Role \"assistant\" }}model{{ else }}user{{ end }}
{{ .Content }}<end_of_turn>
{{ end }}<start_of_turn>model
{{/* reasoning goes between the tags, up to </think> */}}<think>
";

#[test]
fn thinking_is_split_from_the_answer() {
    let _lock = inference_lock();
    let s = Server::start();
    s.create_linked(
        "thinker",
        &gemma(),
        json!({"template": THINKING_TEMPLATE, "parameters": {"stop": ["<end_of_turn>"]}}),
    );
    let (_, show) = s.post("/api/show", json!({"model": "thinker"}));
    assert!(
        show["capabilities"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("thinking"))),
        "{show}"
    );
    let messages = json!([{"role": "user", "content": "Is 7 prime?"}]);

    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "thinker", "messages": messages, "stream": false,
        "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v["message"]["thinking"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{v}"
    );
    assert!(!v["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .contains("<think>"));

    let (status, lines) = s.stream(
        "/api/generate",
        json!({"model": "thinker", "prompt": "Is 7 prime?",
        "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(status, 200);
    let thinking: String = lines
        .iter()
        .filter_map(|l| l["thinking"].as_str())
        .collect();
    assert!(!thinking.is_empty(), "{lines:?}");

    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "thinker", "messages": messages, "stream": false, "think": false,
        "options": {"temperature": 0, "num_predict": 12}}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["message"].get("thinking").is_none(), "{v}");
    assert!(
        v["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{v}"
    );

    // OpenAI's shape carries it in `reasoning`.
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "thinker", "messages": messages,
        "temperature": 0, "max_tokens": 12}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        v["choices"][0]["message"]["reasoning"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{v}"
    );
    let (status, text) = s.call(
        "POST",
        "/v1/chat/completions",
        Some(&json!({"model": "thinker",
        "messages": messages, "temperature": 0, "max_tokens": 12, "stream": true})),
    );
    assert_eq!(status, 200);
    assert!(text.contains("\"reasoning\""), "{text}");

    // A model without thinking tags refuses think:true.
    s.create_linked("plain", &gemma(), json!({"template": "{{ .Prompt }}"}));
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "plain", "prompt": "x", "think": true}),
    );
    assert_eq!(
        (status, v),
        (400, json!({"error": "\"plain\" does not support thinking"}))
    );
}
