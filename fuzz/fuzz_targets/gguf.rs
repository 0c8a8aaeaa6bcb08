//! GGUF files (`/api/create` from an uploaded blob, a pulled model, a store
//! on disk): parsing, then everything `/api/show` reads from the metadata.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hearth::gguf::is_gguf(data);
    for keep_arrays in [false, true] {
        if let Ok(g) = hearth::gguf::Gguf::parse(data, keep_arrays) {
            let _ = g.architecture();
            let _ = g.parameter_count();
            let _ = g.context_length();
            let _ = g.embedding_length();
            let _ = g.chat_template();
            let _ = g.general_type();
            let _ = g.file_type().map(hearth::gguf::file_type_name);
            let _ = g.model_info(keep_arrays);
        }
    }
});
