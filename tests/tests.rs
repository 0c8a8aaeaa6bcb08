//! Black-box tests: each starts the real `hearth` binary on a free port with
//! a temporary store and talks to it over HTTP, as clients do.

mod harness;

mod auth;
mod blobs;
mod cli;
mod embed;
mod hostile;
mod inference;
mod memory;
mod models;
mod openai;
mod registry;
mod repl;
mod server;
mod store_budget;
mod structured;
mod tools;
// Without the feature, images are refused like on any text-only model.
#[cfg(feature = "vision")]
mod vision;
