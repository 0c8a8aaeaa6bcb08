//! What the benches share.

use std::path::PathBuf;

/// The test models: `HEARTH_TEST_MODELS`, else where `scripts/test.sh`
/// puts them (`~/.cache/hearth/models`).
pub fn models_dir() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/hearth/models")
        })
}
