//! hearth as a library: the modules the `hearth` binary is made of, public
//! so that benchmarks and tests can drive the engine and the store directly.

pub mod access;
pub mod api;
pub mod build_info;
pub mod cli;
pub mod config;
pub mod convert;
pub mod create;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod grammar;
pub mod infer;
pub mod model;
pub mod options;
pub mod progress;
pub mod prompt;
pub mod registry;
pub mod scheduler;
pub mod store;
pub mod template;
#[cfg(test)]
mod test_models;
pub mod think;
pub mod tls;
pub mod tools;
