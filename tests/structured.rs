//! Structured outputs: `format` as "json" or a JSON schema constrains what
//! the model writes, through llama.cpp's grammar sampler.

use serde_json::{json, Value};

use crate::harness::{inference_lock, Server};

/// Checks a value against the subset of JSON Schema that `format` supports.
fn validate(v: &Value, schema: &Value) -> Result<(), String> {
    if let Some(options) = schema["enum"].as_array() {
        return if options.contains(v) {
            Ok(())
        } else {
            Err(format!("{v} not in {schema}"))
        };
    }
    match schema["type"].as_str() {
        Some("object") => {
            let obj = v.as_object().ok_or(format!("{v} is not an object"))?;
            for key in schema["required"].as_array().into_iter().flatten() {
                let key = key.as_str().unwrap_or_default();
                if !obj.contains_key(key) {
                    return Err(format!("missing {key} in {v}"));
                }
            }
            for (key, sub) in schema["properties"].as_object().into_iter().flatten() {
                if let Some(value) = obj.get(key) {
                    validate(value, sub)?;
                }
            }
            Ok(())
        }
        Some("array") => {
            let items = v.as_array().ok_or(format!("{v} is not an array"))?;
            if let Some(max) = schema["maxItems"].as_u64() {
                if items.len() as u64 > max {
                    return Err(format!("{v} has more than {max} items"));
                }
            }
            items.iter().try_for_each(|i| validate(i, &schema["items"]))
        }
        Some("string") => v
            .is_string()
            .then_some(())
            .ok_or(format!("{v} is not a string")),
        Some("integer") => (v.is_i64() || v.is_u64())
            .then_some(())
            .ok_or(format!("{v} is not an integer")),
        Some("number") => v
            .is_number()
            .then_some(())
            .ok_or(format!("{v} is not a number")),
        Some("boolean") => v
            .is_boolean()
            .then_some(())
            .ok_or(format!("{v} is not a boolean")),
        _ => Ok(()),
    }
}

#[test]
fn twenty_schema_requests_parse_and_validate() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let schemas = [
        json!({"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}, "required": ["name", "age"]}),
        json!({"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "number"}, "capital": {"type": "boolean"}}, "required": ["city"]}),
        json!({"type": "object", "properties": {"colors": {"type": "array", "items": {"type": "string"}, "maxItems": 3}}, "required": ["colors"]}),
        json!({"type": "object", "properties": {"animal": {"enum": ["cat", "dog", "bird"]}, "legs": {"type": "integer"}}, "required": ["animal", "legs"]}),
        json!({"type": "object", "properties": {"book": {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"}}, "required": ["title", "year"]}}, "required": ["book"]}),
    ];
    let prompts = [
        "a person",
        "a place in France",
        "a rainbow",
        "a pet",
        "a famous novel",
    ];
    for i in 0..20 {
        let schema = &schemas[i % schemas.len()];
        let prompt = format!(
            "Describe {} as JSON. Keep it short.",
            prompts[i % prompts.len()]
        );
        let route_is_chat = i % 2 == 0;
        let (status, v) = if route_is_chat {
            s.post("/api/chat", json!({"model": "gemma3:270m", "stream": false, "format": schema,
                "messages": [{"role": "user", "content": prompt}], "options": {"seed": i, "num_predict": 200}}))
        } else {
            s.post(
                "/api/generate",
                json!({"model": "gemma3:270m", "stream": false, "format": schema,
                "prompt": prompt, "options": {"seed": i, "num_predict": 200}}),
            )
        };
        assert_eq!(status, 200, "{v}");
        let text = if route_is_chat {
            v["message"]["content"].as_str()
        } else {
            v["response"].as_str()
        };
        let text = text.unwrap_or_default();
        assert_eq!(
            v["done_reason"], "stop",
            "request {i} did not finish: {text:?}"
        );
        let parsed: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("request {i}: {e}: {text:?}"));
        validate(&parsed, schema).unwrap_or_else(|e| panic!("request {i}: {e}"));
    }
    // Streaming works under a schema too, and "json" gives a JSON object.
    let (status, lines) = s.stream(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "A cat as JSON.",
        "format": "json", "options": {"temperature": 0, "num_predict": 120}}),
    );
    assert_eq!(status, 200);
    let text: String = lines
        .iter()
        .filter_map(|l| l["response"].as_str())
        .collect();
    if lines.last().is_some_and(|l| l["done_reason"] == "stop") {
        assert!(
            serde_json::from_str::<Value>(&text).is_ok_and(|v| v.is_object()),
            "{text:?}"
        );
    } else {
        assert!(text.trim_start().starts_with('{'), "{text:?}");
    }
    // What cannot be expressed is refused, never silently ignored.
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "x",
        "format": {"type": "object", "properties": {"a": {"anyOf": [{"type": "string"}]}}}}),
    );
    assert_eq!(
        (status, v),
        (
            400,
            json!({"error": "unsupported JSON schema construct \"anyOf\" in format"})
        )
    );
    let (status, _) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "x", "format": "yaml"}),
    );
    assert_eq!(status, 400);
}
