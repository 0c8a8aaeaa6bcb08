//! The `{"status": ...}` lines that create, pull and push report as they
//! go: a wire shape (Ollama's), kept here because those modules sit below
//! `api` and must not import it.

use serde::Serialize;

/// A `{"status": ...}` progress line.
#[derive(Debug, Serialize, Clone, PartialEq)]
pub struct Progress {
    /// What is happening.
    pub status: String,
    /// The layer, when one is being transferred.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// Bytes in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    /// Bytes done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed: Option<u64>,
}

impl Progress {
    /// A bare status line.
    pub fn status(s: impl Into<String>) -> Progress {
        Progress {
            status: s.into(),
            digest: None,
            total: None,
            completed: None,
        }
    }
}
