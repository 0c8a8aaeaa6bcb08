//! Prompt rendering with Ollama's template semantics: chat messages (plus
//! system prompt, tools, suffix) in, prompt text out.
//!
//! Templates that use `.Messages` get the collated message list; legacy
//! templates (`.System`/`.Prompt`/`.Response`) are rendered once per turn and
//! concatenated, as Ollama does. Tokenizing is the engine's job.

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::template::{self, Template};

/// A chat message, as stored in a messages layer and sent by clients.
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct Message {
    /// `system`, `user`, `assistant` or `tool`.
    pub role: String,
    /// Text.
    #[serde(default)]
    pub content: String,
    /// Assistant reasoning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thinking: Option<String>,
    /// Base64 images.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub images: Option<Vec<String>>,
    /// Calls the assistant asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<Value>>,
    /// On tool messages: which function produced it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_name: Option<String>,
    /// On tool messages: the call it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

/// Ollama's default template for a model without one.
pub const DEFAULT_TEMPLATE: &str = "{{ .Prompt }}";

/// A chat format hearth knows: Ollama's name for it, its Go template and
/// the stop words Ollama's library ships with it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnownTemplate {
    /// Ollama's name (`chatml`, `llama3-instruct`, ...).
    pub name: &'static str,
    /// The Go template.
    pub template: &'static str,
    /// Stop words for the params layer.
    pub stop: &'static [&'static str],
    /// A default temperature the format's params carry, if any.
    pub temperature: Option<f64>,
}

/// Known chat formats, recognised in a GGUF's Jinja chat template by a
/// marker only that format uses (the first that matches wins).
const KNOWN: &[(&str, KnownTemplate)] = &[
    (
        "<|im_start|>",
        KnownTemplate {
            name: "chatml",
            template: CHATML,
            stop: &["<|im_start|>", "<|im_end|>"],
            temperature: None,
        },
    ),
    // Gemma 3's template names its system-prompt handling; Gemma 1 and 2's
    // do not. Both render the same turns.
    (
        "first_user_prefix",
        KnownTemplate {
            name: "gemma3-instruct",
            template: GEMMA,
            stop: &["<end_of_turn>"],
            temperature: Some(0.1),
        },
    ),
    (
        "<start_of_turn>",
        KnownTemplate {
            name: "gemma-instruct",
            template: GEMMA,
            stop: &["<start_of_turn>", "<end_of_turn>"],
            temperature: None,
        },
    ),
    (
        "<|start_header_id|>",
        KnownTemplate {
            name: "llama3-instruct",
            template: LLAMA3,
            stop: &["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
            temperature: None,
        },
    ),
    (
        "<|assistant|>",
        KnownTemplate {
            name: "phi-3",
            template: PHI3,
            stop: &["<|end|>", "<|system|>", "<|user|>", "<|assistant|>"],
            temperature: None,
        },
    ),
];

const CHATML: &str =
    "{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ .Content }}{{ if not $last }}<|im_end|>
{{ end }}{{ if and $last (ne .Role \"assistant\") }}<|im_end|>
<|im_start|>assistant
{{ end }}{{ end }}";

const GEMMA: &str = "{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 }}
{{- if or (eq .Role \"user\") (eq .Role \"system\") }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ if $last }}<start_of_turn>model
{{ end }}
{{- else if eq .Role \"assistant\" }}<start_of_turn>model
{{ .Content }}{{ if not $last }}<end_of_turn>
{{ end }}
{{- end }}
{{- end }}";

const LLAMA3: &str =
    "{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|start_header_id|>{{ .Role }}<|end_header_id|>

{{ .Content }}{{ if or (not $last) (ne .Role \"assistant\") }}<|eot_id|>{{ end }}
{{- if and $last (ne .Role \"assistant\") }}<|start_header_id|>assistant<|end_header_id|>

{{ end }}{{ end }}";

const PHI3: &str =
    "{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|{{ .Role }}|>
{{ .Content }}<|end|>
{{ if and $last (ne .Role \"assistant\") }}<|assistant|>
{{ end }}{{ end }}";

/// Recognises a GGUF chat template as one of the formats hearth knows.
pub fn autodetect(jinja: &str) -> Option<KnownTemplate> {
    KNOWN
        .iter()
        .find(|(marker, k)| {
            jinja.contains(marker)
                && (k.name != "gemma3-instruct" || jinja.contains("<start_of_turn>"))
        })
        .map(|(_, k)| *k)
}

/// The system prompt a GGUF's chat template inserts when a conversation
/// has none (SmolLM2's "You are a helpful AI assistant named SmolLM, ..."):
/// a literal ChatML system turn in a branch taken when the first message is
/// not a system one. A model imported with such a template keeps it as its
/// system layer, so it answers as its authors meant it to.
pub fn default_system(jinja: &str) -> Option<String> {
    const OPEN: &str = "<|im_start|>system\n";
    const CLOSE: &str = "<|im_end|>";
    if !(jinja.contains("!= 'system'") || jinja.contains("!= \"system\"")) {
        return None;
    }
    let start = jinja.find(OPEN)? + OPEN.len();
    let len = jinja[start..].find(CLOSE)?;
    let text = jinja[start..start + len].trim();
    // Only literal text: a template expression here is the message itself.
    let literal =
        !text.is_empty() && text.len() <= 4096 && !text.contains(['{', '}', '\'', '"', '+']);
    literal.then(|| text.to_string())
}

/// What a prompt is built from.
#[derive(Debug, Default)]
pub struct Input<'a> {
    /// The conversation, system messages included.
    pub messages: &'a [Message],
    /// Tool definitions, as the client sent them.
    pub tools: Option<&'a Value>,
    /// Fill-in-the-middle: prompt and suffix.
    pub suffix: Option<(&'a str, &'a str)>,
}

/// Merges consecutive messages of the same role (tool results excepted) and
/// collects the system messages' text, as Ollama's `collate` does.
fn collate(messages: &[Message]) -> (String, Vec<Message>) {
    let mut system = Vec::new();
    let mut out: Vec<Message> = Vec::new();
    for m in messages {
        if m.role == "system" {
            system.push(m.content.clone());
        }
        match out.last_mut() {
            Some(prev) if prev.role == m.role && m.role != "tool" => {
                prev.content = format!("{}\n\n{}", prev.content, m.content);
            }
            _ => out.push(m.clone()),
        }
    }
    (system.join("\n\n"), out)
}

/// A message as templates see it: Go field names (`.Role`, `.Content` ...).
fn message_value(m: &Message) -> Value {
    let mut v = Map::new();
    v.insert("Role".into(), Value::String(m.role.clone()));
    v.insert("Content".into(), Value::String(m.content.clone()));
    if let Some(t) = &m.thinking {
        v.insert("Thinking".into(), Value::String(t.clone()));
    }
    if let Some(calls) = &m.tool_calls {
        v.insert("ToolCalls".into(), Value::Array(calls.clone()));
    }
    if let Some(n) = &m.tool_name {
        v.insert("ToolName".into(), Value::String(n.clone()));
    }
    Value::Object(v)
}

/// Renders the prompt for a conversation.
pub fn render(tmpl: &Template, input: &Input<'_>) -> Result<String, template::Error> {
    let tools = input.tools.cloned().unwrap_or(Value::Null);
    if let Some((prompt, suffix)) = input.suffix {
        return tmpl.render(&json!({"Prompt": prompt, "Suffix": suffix, "Response": ""}));
    }
    let (system, messages) = collate(input.messages);
    if tmpl.uses_field("Messages") {
        let msgs: Vec<Value> = messages.iter().map(message_value).collect();
        return tmpl
            .render(&json!({"System": system, "Messages": msgs, "Tools": tools, "Response": ""}));
    }
    // Legacy templates: one render per user turn with its system prompt and
    // the assistant's reply, concatenated; the last turn has no response.
    let mut out = String::new();
    let (mut sys, mut prompt, mut response) = (String::new(), String::new(), String::new());
    let flush = |sys: &mut String, prompt: &mut String, response: &mut String, out: &mut String| {
        let r = tmpl.render(
            &json!({"System": sys, "Prompt": prompt, "Response": response, "Tools": tools}),
        );
        sys.clear();
        prompt.clear();
        response.clear();
        r.map(|s| out.push_str(&s))
    };
    for m in &messages {
        match m.role.as_str() {
            "system" => {
                if !prompt.is_empty() || !response.is_empty() {
                    flush(&mut sys, &mut prompt, &mut response, &mut out)?;
                }
                sys = m.content.clone();
            }
            "user" => {
                if !response.is_empty() {
                    flush(&mut sys, &mut prompt, &mut response, &mut out)?;
                }
                prompt = m.content.clone();
            }
            "assistant" => response = m.content.clone(),
            _ => {}
        }
    }
    // Ollama cuts the template at `.Response` for the turn being generated;
    // rendering with an empty response gives the same text for templates
    // that guard what follows `.Response` with `{{ if .Response }}`.
    flush(&mut sys, &mut prompt, &mut response, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(role: &str, content: &str) -> Message {
        Message {
            role: role.into(),
            content: content.into(),
            ..Message::default()
        }
    }

    fn check(tmpl: &str, messages: &[Message], expected: &str) {
        let t = Template::parse(tmpl).expect("template");
        let got = render(
            &t,
            &Input {
                messages,
                ..Input::default()
            },
        )
        .expect("render");
        assert_eq!(got, expected);
    }

    /// Gemma 3's library template, a system prompt and a two-turn history,
    /// written out by hand from Go's template semantics.
    #[test]
    fn gemma3_system_and_history() {
        check(
            GEMMA,
            &[msg("system", "You are terse."), msg("user", "Hi"), msg("assistant", "Hello!"), msg("user", "Bye")],
            "<start_of_turn>user\nYou are terse.<end_of_turn>\n<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n",
        );
    }

    #[test]
    fn chatml_autodetected() {
        let known = autodetect("{% for m in messages %}<|im_start|>{{ m.role }}").expect("chatml");
        assert_eq!(known.name, "chatml");
        assert_eq!(
            autodetect("{{ bos_token }}{%- set first_user_prefix = '' -%}<start_of_turn>")
                .map(|k| k.name),
            Some("gemma3-instruct")
        );
        assert_eq!(
            autodetect("{{ bos_token }}<start_of_turn>user").map(|k| k.name),
            Some("gemma-instruct")
        );
        assert_eq!(autodetect("{{ messages }}"), None);
        check(
            known.template,
            &[msg("system", "S"), msg("user", "Q")],
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nQ<|im_end|>\n<|im_start|>assistant\n",
        );
    }

    #[test]
    fn legacy_templates() {
        let t = "{{ if .System }}[S]{{ .System }}{{ end }}[U]{{ .Prompt }}[A]{{ if .Response }}{{ .Response }}[E]{{ end }}";
        check(t, &[msg("system", "s"), msg("user", "a")], "[S]s[U]a[A]");
        check(
            t,
            &[msg("user", "a"), msg("assistant", "b"), msg("user", "c")],
            "[U]a[A]b[E][U]c[A]",
        );
        check(DEFAULT_TEMPLATE, &[msg("user", "just this")], "just this");
    }

    #[test]
    fn collates_same_roles() {
        let (system, out) = collate(&[
            msg("system", "a"),
            msg("system", "b"),
            msg("user", "x"),
            msg("user", "y"),
        ]);
        assert_eq!(system, "a\n\nb");
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].content, "x\n\ny");
    }

    #[test]
    fn default_system_prompts_come_from_literal_chatml_turns() {
        let smol = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}";
        assert_eq!(
            default_system(smol).as_deref(),
            Some("You are a helpful AI assistant named SmolLM, trained by Hugging Face")
        );
        // A system turn that is the message itself is no default.
        let plain = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'}}{% endfor %}";
        assert_eq!(default_system(plain), None);
        let expr = "{% if messages[0]['role'] != 'system' %}<|im_start|>system\n{{ default }}<|im_end|>{% endif %}";
        assert_eq!(default_system(expr), None);
    }
}
