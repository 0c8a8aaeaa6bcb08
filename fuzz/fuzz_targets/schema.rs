//! A request's `format` JSON schema, turned into a sampling grammar.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(schema) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = hearth::grammar::from_schema(&schema);
    }
});
