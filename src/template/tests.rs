//! Unit tests for the template engine against real Ollama templates
//! (Gemma 3, Qwen 2.5, Llama 3.1 style, legacy), with expected output
//! traced by hand through Go's trim and scoping rules; also the shared
//! `check` helpers used by `tests_semantics`.

use serde_json::json;

use super::*;

/// Parses and renders `template` with `data`, and compares the output.
pub(super) fn check(template: &str, data: serde_json::Value, expected: &str) {
    let t = Template::parse(template).unwrap_or_else(|e| panic!("parse {template:?}: {e}"));
    let got = t
        .render(&data)
        .unwrap_or_else(|e| panic!("render {template:?}: {e}"));
    assert_eq!(got, expected, "template {template:?}");
}

/// Returns the parse error for `template`.
pub(super) fn parse_err(template: &str) -> Error {
    match Template::parse(template) {
        Ok(_) => panic!("expected a parse error for {template:?}"),
        Err(e) => e,
    }
}

/// Returns the render error for `template` with `data`.
pub(super) fn render_err(template: &str, data: serde_json::Value) -> Error {
    let t = Template::parse(template).unwrap_or_else(|e| panic!("parse {template:?}: {e}"));
    match t.render(&data) {
        Ok(out) => panic!("expected a render error for {template:?}, got {out:?}"),
        Err(e) => e,
    }
}

const GEMMA3: &str = r#"{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role "user") (eq .Role "system") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role "assistant" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}"#;

pub(super) const QWEN25: &str = r#"{{- if .Messages }}
{{- if or .System .Tools }}<|im_start|>system
{{- if .System }}
{{ .System }}
{{- end }}
{{- if .Tools }}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>
{{- range .Tools }}
{"type": "function", "function": {{ .Function }}}
{{- end }}
</tools>

For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call>
{{- end }}<|im_end|>
{{ end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
{{- if eq .Role "user" }}<|im_start|>user
{{ .Content }}<|im_end|>
{{ else if eq .Role "assistant" }}<|im_start|>assistant
{{ if .Content }}{{ .Content }}
{{- else if .ToolCalls }}<tool_call>
{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ .Function.Arguments }}}
{{ end }}</tool_call>
{{- end }}{{ if not $last }}<|im_end|>
{{ end }}
{{- else if eq .Role "tool" }}<|im_start|>user
<tool_response>
{{ .Content }}
</tool_response><|im_end|>
{{ end }}
{{- if and (ne .Role "assistant") $last }}<|im_start|>assistant
{{ end }}
{{- end }}
{{- else }}
{{- if .System }}<|im_start|>system
{{ .System }}<|im_end|>
{{ end }}{{ if .Prompt }}<|im_start|>user
{{ .Prompt }}<|im_end|>
{{ end }}<|im_start|>assistant
{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}"#;

const LLAMA31: &str = r#"{{- if or .System .Tools }}<|start_header_id|>system<|end_header_id|>
{{- if .System }}

{{ .System }}
{{- end }}
{{- if .Tools }}

You are a helpful assistant with tool calling capabilities.
{{- end }}<|eot_id|>
{{- end }}
{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if eq .Role "user" }}<|start_header_id|>user<|end_header_id|>
{{- if and $.Tools $last }}

Respond with a JSON function call.

{{ range $.Tools }}
{{- . }}
{{ end }}
{{- end }}

{{ .Content }}<|eot_id|>
{{- if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- else if eq .Role "assistant" }}<|start_header_id|>assistant<|end_header_id|>
{{- if .ToolCalls }}

{{- range .ToolCalls }}{"name": "{{ .Function.Name }}", "parameters": {{ .Function.Arguments }}}{{ end }}
{{- else }}

{{ .Content }}{{ if not $last }}<|eot_id|>{{ end }}
{{- end }}
{{- else if eq .Role "tool" }}<|start_header_id|>ipython<|end_header_id|>

{{ .Content | json }}<|eot_id|>
{{- if $last }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}
{{- end }}
{{- end }}"#;

fn weather_tool() -> serde_json::Value {
    json!({
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"]
            }
        }
    })
}

const WEATHER_FN_JSON: &str = r#"{"name":"get_weather","description":"Get the weather","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}"#;

#[test]
fn gemma3_chat() {
    // Traced by hand: every newline that follows a `}}` is either printed
    // text inside a branch or removed by the next action's `{{-`.
    let data = json!({"Messages": [
        {"Role": "system", "Content": "You are terse."},
        {"Role": "user", "Content": "Hi"},
        {"Role": "assistant", "Content": "Hello!"},
        {"Role": "user", "Content": "Bye"},
    ]});
    check(
        GEMMA3,
        data,
        "<start_of_turn>user\nYou are terse.<end_of_turn>\n<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
    );
}

#[test]
fn gemma3_last_assistant_is_left_open() {
    let data = json!({"Messages": [
        {"Role": "user", "Content": "Hi"},
        {"Role": "assistant", "Content": "Hel"},
    ]});
    check(
        GEMMA3,
        data,
        "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHel",
    );
}

#[test]
fn qwen25_tools_and_tool_calls() {
    let data = json!({
        "System": "",
        "Tools": [weather_tool()],
        "Messages": [
            {"Role": "user", "Content": "What's the weather in Paris?"},
            {"Role": "assistant", "Content": "", "ToolCalls": [
                {"Function": {"Name": "get_weather", "Arguments": {"city": "Paris"}}}
            ]},
            {"Role": "tool", "Content": "22C"},
        ],
        "Response": "",
    });
    let expected = format!(
        "<|im_start|>system\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n\
{{\"type\": \"function\", \"function\": {WEATHER_FN_JSON}}}\n</tools>\n\n\
For each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n\
<tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call><|im_end|>\n\
<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n\
<|im_start|>assistant\n<tool_call>\n{{\"name\": \"get_weather\", \"arguments\": {{\"city\":\"Paris\"}}}}\n</tool_call><|im_end|>\n\
<|im_start|>user\n<tool_response>\n22C\n</tool_response><|im_end|>\n<|im_start|>assistant\n"
    );
    check(QWEN25, data, &expected);
}

#[test]
fn qwen25_system_without_tools() {
    let data = json!({
        "System": "You are helpful.",
        "Messages": [{"Role": "user", "Content": "Hi"}],
        "Response": "",
    });
    check(
        QWEN25,
        data,
        "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    );
}

#[test]
fn qwen25_assistant_content_and_last_assistant() {
    let data = json!({"Messages": [
        {"Role": "user", "Content": "Hi"},
        {"Role": "assistant", "Content": "Hello"},
        {"Role": "user", "Content": "Again"},
        {"Role": "assistant", "Content": "Part"},
    ]});
    check(
        QWEN25,
        data,
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n<|im_start|>user\nAgain<|im_end|>\n<|im_start|>assistant\nPart",
    );
}

#[test]
fn qwen25_legacy_prompt_branch() {
    check(
        QWEN25,
        json!({"Prompt": "Hi", "Response": ""}),
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    );
    check(
        QWEN25,
        json!({"System": "S", "Prompt": "Hi", "Response": "Yo"}),
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nYo<|im_end|>",
    );
}

#[test]
fn legacy_and_default_templates() {
    let t = "{{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}";
    check(
        t,
        json!({"System": "Be brief.", "Prompt": "Hi"}),
        "Be brief. Hi",
    );
    check(t, json!({"System": "", "Prompt": "Hi"}), "Hi");
    check(t, json!({"Prompt": "Hi"}), "Hi");
    check(
        "{{ .Prompt }}",
        json!({"Prompt": "a <b> & \"c\""}),
        "a <b> & \"c\"",
    );
}

#[test]
fn llama31_tools_in_last_user_turn() {
    let tool = weather_tool();
    let data =
        json!({"Tools": [tool.clone()], "Messages": [{"Role": "user", "Content": "Weather?"}]});
    let tool_json = serde_json::to_string(&tool).expect("serializable");
    let expected = format!(
        "<|start_header_id|>system<|end_header_id|>\n\nYou are a helpful assistant with tool calling capabilities.<|eot_id|>\
<|start_header_id|>user<|end_header_id|>\n\nRespond with a JSON function call.\n\n{tool_json}\n\n\nWeather?<|eot_id|>\
<|start_header_id|>assistant<|end_header_id|>\n\n"
    );
    check(LLAMA31, data, &expected);
}

#[test]
fn llama31_tool_calls_and_json_content() {
    let data = json!({"Messages": [
        {"Role": "user", "Content": "Weather?"},
        {"Role": "assistant", "ToolCalls": [{"Function": {"Name": "w", "Arguments": {"a": 1, "b": "x<y"}}}]},
        {"Role": "tool", "Content": "a<b & \"c\""},
    ]});
    check(
        LLAMA31,
        data,
        "<|start_header_id|>user<|end_header_id|>\n\nWeather?<|eot_id|>\
<|start_header_id|>assistant<|end_header_id|>{\"name\": \"w\", \"parameters\": {\"a\":1,\"b\":\"x\\u003cy\"}}\
<|start_header_id|>ipython<|end_header_id|>\n\n\"a\\u003cb \\u0026 \\\"c\\\"\"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n",
    );
}

#[test]
fn json_function_escapes_like_go() {
    check("{{ json .S }}", json!({"S": "a<b"}), r#""a\u003cb""#);
    check(
        "{{ .S | json }}",
        json!({"S": "<>&\u{2028}\n\t\u{1}é"}),
        r#""\u003c\u003e\u0026\u2028\n\t\u0001é""#,
    );
    check(
        "{{ json . }}",
        json!({"z": 1, "a": [true, null], "f": 1.0, "g": 1e-7, "h": 1e21, "i": 0.25}),
        r#"{"z":1,"a":[true,null],"f":1,"g":1e-7,"h":1e+21,"i":0.25}"#,
    );
    check("{{ json .Missing }}", json!({}), "null");
}
