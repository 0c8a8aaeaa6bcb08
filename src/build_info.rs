//! What this binary was built for, recorded by `build.rs`: the target triple
//! and the ggml CPU kernels llama.cpp was compiled with.

/// ggml CPU kernels, e.g. `x86_64 (x86-64-v3): AVX2 FMA F16C BMI2 (AVX-512 off)`
/// or `aarch64 (armv8.2-a+dotprod+fp16): NEON dotprod fp16`.
pub const KERNELS: &str = env!("HEARTH_KERNELS");

/// The Rust target triple, e.g. `aarch64-unknown-linux-gnu`.
pub const TARGET: &str = env!("HEARTH_TARGET");
