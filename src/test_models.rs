//! Where unit tests find the real test models: `HEARTH_TEST_MODELS`, else
//! the cache `scripts/test.sh` fills (`~/.cache/hearth/models`). A missing
//! model fails the test with the command that fetches it: a test that
//! passes without its fixture proves nothing.

use std::path::PathBuf;

/// The test models' directory.
pub fn dir() -> PathBuf {
    std::env::var_os("HEARTH_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/hearth/models")
        })
}

/// The path of test model `name` (a file or a directory), which must exist.
pub fn path(name: &str) -> PathBuf {
    let p = dir().join(name);
    assert!(
        p.exists(),
        "test model {} is missing: run scripts/fetch-test-models.sh (or set HEARTH_TEST_MODELS)",
        p.display()
    );
    p
}
