//! The OpenAI-compatible `/v1` routes, as OpenAI SDKs call them.

use serde_json::{json, Value};

use crate::harness::{inference_lock, Server};

fn sse_events(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn chat_and_text_completions() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "gemma3:270m", "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 6, "seed": 1}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "chat.completion");
    assert!(v["id"].as_str().is_some_and(|i| i.starts_with("chatcmpl-")));
    assert_eq!(v["system_fingerprint"], "fp_ollama");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert!(
        v["choices"][0]["message"]["content"]
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{v}"
    );
    assert!(matches!(
        v["choices"][0]["finish_reason"].as_str(),
        Some("stop" | "length")
    ));
    let u = &v["usage"];
    assert_eq!(
        u["total_tokens"].as_u64(),
        Some(
            u["prompt_tokens"].as_u64().unwrap_or(0) + u["completion_tokens"].as_u64().unwrap_or(0)
        )
    );

    // Streaming: SSE chunks, role first, a final chunk with the reason, usage, [DONE].
    let (status, text) = s.call(
        "POST",
        "/v1/chat/completions",
        Some(&json!({"model": "gemma3:270m", "messages": [{"role": "user", "content": "Count to three."}],
            "max_tokens": 6, "stream": true, "stream_options": {"include_usage": true}})),
    );
    assert_eq!(status, 200);
    let events = sse_events(&text);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{text}");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("json chunk"))
        .collect();
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let ids: std::collections::HashSet<&str> =
        chunks.iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.len(), 1, "one id for the whole stream");
    let usage = chunks.last().expect("usage chunk");
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
    let fin = &chunks[chunks.len() - 2];
    assert_eq!(fin["choices"][0]["finish_reason"], "length");
    assert_eq!(fin["choices"][0]["delta"], json!({}));

    let (status, v) = s.post("/v1/completions", json!({"model": "gemma3:270m", "prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}));
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["object"], "text_completion");
    assert!(v["choices"][0]["text"].is_string());
    assert_eq!(v["usage"]["completion_tokens"], 4);

    // JSON mode constrains the output to JSON.
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "gemma3:270m", "messages": [{"role": "user", "content": "Give a JSON object with a name."}],
            "response_format": {"type": "json_object"}, "max_tokens": 40, "temperature": 0}),
    );
    assert_eq!(status, 200, "{v}");
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    if v["choices"][0]["finish_reason"] == "stop" {
        assert!(
            serde_json::from_str::<Value>(content).is_ok(),
            "not JSON: {content:?}"
        );
    } else {
        assert!(content.trim_start().starts_with('{'), "{content:?}");
    }
}

#[test]
fn models_and_errors() {
    let s = Server::with_gemma(&[]);
    let (status, v) = s.get("/v1/models");
    assert_eq!(status, 200);
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["id"], "gemma3:270m");
    assert_eq!(v["data"][0]["object"], "model");
    assert_eq!(v["data"][0]["owned_by"], "library");
    let (status, v) = s.get("/v1/models/gemma3:270m");
    assert_eq!((status, v["id"].clone()), (200, json!("gemma3:270m")));
    let (status, v) = s.get("/v1/models/ghost");
    assert_eq!(status, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| m.contains("ghost")));
    // reasoning_effort is the native `think`: a level on a model that
    // cannot think is refused as natively, a bad level is a 400 too.
    let chat = |effort: &str| {
        s.post(
            "/v1/chat/completions",
            json!({"model": "gemma3:270m", "reasoning_effort": effort,
                   "messages": [{"role": "user", "content": "hi"}]}),
        )
    };
    let (status, v) = chat("high");
    assert_eq!(status, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("does not support thinking")),
        "{v}"
    );
    let (status, v) = chat("extreme");
    assert_eq!(status, 400, "{v}");
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "gemma3:270m", "messages": []}),
    );
    assert_eq!(status, 400);
    assert_eq!(
        v["error"],
        json!({"message": "[] is too short - 'messages'", "type": "invalid_request_error", "param": null, "code": null})
    );
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "ghost", "messages": [{"role": "user", "content": "x"}]}),
    );
    assert_eq!(
        (status, v["error"]["type"].clone()),
        (404, json!("not_found_error"))
    );
    let (status, v) = s.post("/v1/chat/completions", json!({"model": "gemma3:270m",
        "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}));
    assert_eq!(status, 400);
    assert_eq!(
        v["error"]["message"],
        "image URLs are not currently supported, please use base64 encoded data instead"
    );
}
