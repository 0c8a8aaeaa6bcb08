//! The small text parsers of untrusted input: model names, blob digests, a
//! registry's WWW-Authenticate challenge, manifests, Modelfiles, tool calls
//! and thinking tags in a model's output.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = serde_json::from_slice::<hearth::store::Manifest>(data) {
        let _ = m.total_size();
        let _ = m.digests().count();
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = hearth::model::ModelName::parse(text);
    let _ = hearth::store::Digest::parse(text);
    let _ = hearth::store::Digest::parse_lowercase(text);
    let _ = hearth::registry::auth::Challenge::parse(text);
    let _ = hearth::cli::modelfile::parse(text);
    let _ = hearth::tools::may_be_call(text);
    let _ = hearth::tools::parse(text);
    let mut thinking = hearth::think::Splitter::new(false);
    for piece in text.split_inclusive('>') {
        let _ = thinking.push(piece);
    }
    let _ = thinking.finish();
});
