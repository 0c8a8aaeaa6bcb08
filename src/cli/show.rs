//! `hearth show`: one field of `/api/show`, or the summary Ollama prints
//! (model facts, capabilities, parameters, system prompt and license, with
//! the model metadata too under `-v`). The REPL's `/show` uses it as well.

use serde_json::{json, Value};

use super::client::Client;
use super::format::{human_number, table};

/// One field `show` can print on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// `--license`.
    License,
    /// `--modelfile`.
    Modelfile,
    /// `--parameters`.
    Parameters,
    /// `--system`.
    System,
    /// `--template`.
    Template,
}

impl Field {
    /// The `/api/show` key.
    pub fn key(self) -> &'static str {
        match self {
            Field::License => "license",
            Field::Modelfile => "modelfile",
            Field::Parameters => "parameters",
            Field::System => "system",
            Field::Template => "template",
        }
    }
}

/// Asks the server about a model.
pub fn fetch(client: &Client, model: &str, verbose: bool) -> anyhow::Result<Value> {
    client.post("/api/show", &json!({"model": model, "verbose": verbose}))
}

/// Runs `hearth show MODEL [--FIELD] [-v]`.
pub fn show(
    client: &Client,
    model: &str,
    field: Option<Field>,
    verbose: bool,
) -> anyhow::Result<()> {
    let resp = fetch(client, model, verbose)?;
    match field {
        Some(f) => super::out(&format!("{}\n", resp[f.key()].as_str().unwrap_or_default())),
        None => super::out(&summary(&resp, verbose)),
    }
}

/// The summary `ollama show` prints: titled sections, each a table with
/// its rows indented under the title.
pub fn summary(resp: &Value, verbose: bool) -> String {
    let mut out = String::new();
    let mut section = |title: &str, rows: Vec<Vec<String>>| {
        out.push_str(&format!("  {title}\n"));
        for line in table(&rows).lines() {
            out.push_str(&format!("    {line}\n"));
        }
        out.push('\n');
    };
    let info = resp["model_info"].as_object();
    let details = &resp["details"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let mut model = Vec::new();
    match info
        .and_then(|i| i.get("general.architecture"))
        .and_then(Value::as_str)
    {
        Some(arch) => {
            let info = info.expect("an architecture was read from model_info");
            model.push(vec!["architecture".into(), arch.to_string()]);
            let params = match details["parameter_size"].as_str() {
                Some(p) if !p.is_empty() => p.to_string(),
                _ => info
                    .get("general.parameter_count")
                    .and_then(Value::as_u64)
                    .map(human_number)
                    .unwrap_or_default(),
            };
            model.push(vec!["parameters".into(), params]);
            for (key, label) in [
                ("context_length", "context length"),
                ("embedding_length", "embedding length"),
            ] {
                if let Some(v) = info.get(&format!("{arch}.{key}")) {
                    model.push(vec![label.into(), v.to_string()]);
                }
            }
        }
        None => {
            model.push(vec!["architecture".into(), text(&details["family"])]);
            model.push(vec!["parameters".into(), text(&details["parameter_size"])]);
        }
    }
    model.push(vec![
        "quantization".into(),
        text(&details["quantization_level"]),
    ]);
    section("Model", model);
    if let Some(caps) = resp["capabilities"].as_array().filter(|c| !c.is_empty()) {
        section("Capabilities", caps.iter().map(|c| vec![text(c)]).collect());
    }
    let params = text(&resp["parameters"]);
    if !params.is_empty() {
        section(
            "Parameters",
            params
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| l.split_whitespace().map(str::to_string).collect())
                .collect(),
        );
    }
    if verbose {
        if let Some(info) = info.filter(|i| !i.is_empty()) {
            let mut rows: Vec<Vec<String>> = info
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    vec![k.clone(), v]
                })
                .collect();
            rows.sort();
            section("Metadata", rows);
        }
    }
    for (key, title) in [("system", "System"), ("license", "License")] {
        let value = text(&resp[key]);
        if !value.trim().is_empty() {
            section(title, head(&value, 2));
        }
    }
    out
}

/// The first `n` non-empty lines of a long text, and `...` if there are more.
fn head(s: &str, n: usize) -> Vec<Vec<String>> {
    let lines: Vec<&str> = s.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut rows: Vec<Vec<String>> = lines.iter().take(n).map(|l| vec![l.to_string()]).collect();
    if lines.len() > n {
        rows.push(vec!["...".into()]);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_sections() {
        let resp = json!({
            "details": {"family": "gemma3", "parameter_size": "268.10M", "quantization_level": "Q4_K_M"},
            "model_info": {"general.architecture": "gemma3", "gemma3.context_length": 32768, "gemma3.embedding_length": 640},
            "capabilities": ["completion"],
            "parameters": "stop                           \"<end_of_turn>\"",
            "system": "Be brief.\nVery.\nReally.",
        });
        let expected = "  Model
    architecture        gemma3
    parameters          268.10M
    context length      32768
    embedding length    640
    quantization        Q4_K_M

  Capabilities
    completion

  Parameters
    stop    \"<end_of_turn>\"

  System
    Be brief.
    Very.
    ...

";
        assert_eq!(summary(&resp, false), expected);
    }
}
