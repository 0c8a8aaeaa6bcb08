//! The tokenizer files of an uploaded Safetensors directory, read by each of
//! the three readers a conversion picks from (WordPiece, byte-level BPE,
//! SentencePiece). The first byte picks which file the rest becomes.
#![no_main]

use std::collections::HashMap;

use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 5] = [
    "tokenizer.json",
    "tokenizer.model",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let base = std::path::Path::new("/dev/shm");
    let dir = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };
    let path = dir.join(format!("hearth-fuzz-{}-{name}", std::process::id()));
    if std::fs::write(&path, rest).is_err() {
        return;
    }
    let files: HashMap<String, std::path::PathBuf> = HashMap::from([(name.to_string(), path)]);
    let _ = hearth::convert::read_tokenizers(&files);
});
