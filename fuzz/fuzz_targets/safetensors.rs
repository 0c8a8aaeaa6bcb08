//! A Safetensors file's header, as `/api/create` reads each weight file of
//! an uploaded directory (the header is checked against the file's length).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = hearth_fuzz_file("model.safetensors");
    if std::fs::write(&path, data).is_ok() {
        let _ = hearth::convert::read_safetensors_header(&path);
    }
});

/// A per-process scratch file (in memory where /dev/shm exists).
fn hearth_fuzz_file(name: &str) -> std::path::PathBuf {
    let base = std::path::Path::new("/dev/shm");
    let dir = if base.is_dir() { base.to_path_buf() } else { std::env::temp_dir() };
    dir.join(format!("hearth-fuzz-{}-{name}", std::process::id()))
}
