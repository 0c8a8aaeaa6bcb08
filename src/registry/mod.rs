//! The registry side of hearth, in one place: pulling models from a
//! registry (`pull.rs`), pushing them to one (`push.rs`), the signed token
//! exchange both use (`auth.rs`), the HTTP session that carries their
//! requests (`session.rs`), and what the `/v2`
//! endpoints of this box's own registry do with the store (`serve.rs`:
//! upload sessions, manifests accepted only when their blobs are here).
//!
//! It knows nothing of serving HTTP: `api/registry.rs` parses the routes
//! and writes the answers, `error.rs` maps these errors to statuses, and
//! every byte on disk is the store's.

pub mod auth;
pub mod pull;
pub mod push;
pub mod serve;
pub mod session;
