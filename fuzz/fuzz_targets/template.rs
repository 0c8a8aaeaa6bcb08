//! Go templates (a Modelfile's TEMPLATE, a GGUF's chat template mapped to
//! one): parsing, then rendering with a conversation, tools and images.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(t) = hearth::template::Template::parse(text) else {
        return;
    };
    let data = serde_json::json!({
        "System": "You are terse.",
        "Prompt": "Hi",
        "Response": "",
        "Suffix": "",
        "Think": false,
        "Messages": [
            {"Role": "system", "Content": "You are terse."},
            {"Role": "user", "Content": "What is 2+2?", "Images": ["[img-0]"]},
            {"Role": "assistant", "Content": "4", "ToolCalls": [
                {"Function": {"Name": "add", "Arguments": {"a": 2, "b": 2}}}
            ]},
            {"Role": "tool", "Content": "4"}
        ],
        "Tools": [{"Type": "function", "Function": {"Name": "add", "Description": "adds",
                   "Parameters": {"Type": "object", "Properties": {"a": {"Type": "number"}}}}}]
    });
    let _ = t.render(&data);
});
