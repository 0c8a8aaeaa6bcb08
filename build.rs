//! Records which ggml CPU kernels this build of llama.cpp gets, and refuses
//! flag combinations that cannot build or would silently lose the kernels.
//!
//! llama-cpp-sys-2 (=0.1.161) decides the kernels itself; this script only
//! mirrors its rules, for the *target* (Cargo's CARGO_CFG_* variables, never
//! `cfg!(target_...)`, which is the host this script runs on):
//! - x86_64: each Rust target feature in a fixed list becomes a GGML_* cmake
//!   option, and `target-cpu=X` reaches gcc as `-march=X`.
//! - aarch64 Linux: `target-cpu=X` also reaches gcc as `-march=X`, and the
//!   crate then pins `GGML_CPU_ARM_ARCH=armv8-a` *after* forwarding our
//!   GGML_* environment, so a plain `GGML_CPU_ARM_ARCH=...` is overridden.
//!   `cross/ggml-arm-arch.cmake`, passed as `CMAKE_PROJECT_INCLUDE` (the crate
//!   forwards every CMAKE_* variable to cmake), re-applies the environment's
//!   value after that.
//! - 32-bit arm: `GGML_CPU_ARM_ARCH` is forwarded unchanged.
//!
//! Outputs `HEARTH_KERNELS` and `HEARTH_TARGET` (see `src/build_info.rs`).

use std::env;

/// Every variable read here, so Cargo reruns this script when one changes.
const VARS: &[&str] = &[
    "TARGET",
    "HOST",
    "CARGO_CFG_TARGET_ARCH",
    "CARGO_CFG_TARGET_FEATURE",
    "CARGO_ENCODED_RUSTFLAGS",
    "GGML_CPU_ARM_ARCH",
    "CMAKE_PROJECT_INCLUDE",
];

/// x86_64: Rust target feature -> label. avx2/fma/f16c/bmi2/avxvnni and the
/// AVX-512 extensions are the ones llama-cpp-sys-2 turns into GGML_* options;
/// avx512f has no option of its own but arrives with `-march` (x86-64-v4).
const X86: &[(&str, &str)] = &[
    ("avx2", "AVX2"),
    ("fma", "FMA"),
    ("f16c", "F16C"),
    ("bmi2", "BMI2"),
    ("avxvnni", "AVX-VNNI"),
    ("avx512f", "AVX-512"),
    ("avx512vnni", "AVX512-VNNI"),
    ("avx512bf16", "AVX512-BF16"),
];

/// ARM: `GGML_CPU_ARM_ARCH` extension -> label. These are the extensions
/// ggml's ARM kernels test for (`__ARM_FEATURE_*`).
const ARM_EXT: &[(&str, &str)] = &[
    ("+dotprod", "dotprod"),
    ("+fp16", "fp16"),
    ("+i8mm", "i8mm"),
    ("+sve", "SVE"),
];

fn var(name: &str) -> String {
    env::var(name).unwrap_or_default()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    for v in VARS {
        println!("cargo:rerun-if-env-changed={v}");
    }
    let target = var("TARGET");
    let arch = var("CARGO_CFG_TARGET_ARCH");
    let features: Vec<String> = var("CARGO_CFG_TARGET_FEATURE")
        .split(',')
        .map(str::to_owned)
        .collect();
    // Same parse as llama-cpp-sys-2: the first `target-cpu=` in the flags.
    let cpu = var("CARGO_ENCODED_RUSTFLAGS")
        .split('\x1f')
        .find_map(|f| f.split("target-cpu=").nth(1).map(str::to_owned));
    let arm_arch = var("GGML_CPU_ARM_ARCH");
    let has = |f: &str| features.iter().any(|x| x == f);

    // `native` makes ggml probe (and run test programs on) the build machine:
    // wrong for any other target, so a cross build with it cannot work.
    if cpu.as_deref() == Some("native") && target != var("HOST") {
        panic!("target-cpu=native while cross-compiling for {target}: ggml would be tuned for this build machine. Drop it and use a cross/ profile.");
    }

    let kernels = match (arch.as_str(), cpu.as_deref()) {
        // Native build: ggml picks its own flags at configure time.
        (_, Some("native")) => format!("{arch}: native (ggml probes the build machine)"),
        // x86_64: kernels follow the Rust target features (see X86).
        ("x86_64", _) => {
            let on: Vec<&str> = X86.iter().filter(|(f, _)| has(f)).map(|(_, l)| *l).collect();
            let base = if on.is_empty() { "SSE only".to_owned() } else { on.join(" ") };
            let avx512 = if has("avx512f") { "" } else { " (AVX-512 off)" };
            format!("x86_64 ({}): {base}{avx512}", cpu.as_deref().unwrap_or("x86-64"))
        }
        // aarch64: a CPU name reaches gcc as `-march=cortex-a76`, which gcc
        // rejects (and ggml-cpu would be pinned to armv8-a regardless).
        ("aarch64", Some(c)) => panic!(
            "aarch64 with target-cpu={c}: llama-cpp-sys-2 passes it to gcc as -march={c}, which fails. \
             Remove target-cpu and set GGML_CPU_ARM_ARCH (e.g. armv8.2-a+dotprod+fp16 for Cortex-A76); see cross/rpi5.env."
        ),
        // aarch64: NEON is baseline; extensions come from GGML_CPU_ARM_ARCH.
        ("aarch64", None) => {
            check_arm_arch(&arm_arch, "armv8", "armv9");
            // Without our cmake include, llama-cpp-sys-2's armv8-a pin wins
            // and the requested extensions would be silently dropped.
            let include = var("CMAKE_PROJECT_INCLUDE");
            if !arm_arch.is_empty() && !include.ends_with("ggml-arm-arch.cmake") {
                panic!(
                    "GGML_CPU_ARM_ARCH={arm_arch} is overridden with armv8-a by llama-cpp-sys-2 on aarch64 Linux. \
                     Also set CMAKE_PROJECT_INCLUDE=<repo>/cross/ggml-arm-arch.cmake (cross/*.env do)."
                );
            }
            let level = if arm_arch.is_empty() { "armv8-a" } else { arm_arch.as_str() };
            format!("aarch64 ({level}): NEON{}", arm_labels(level))
        }
        // 32-bit arm: no NEON unless GGML_CPU_ARM_ARCH asks for it (Debian's
        // armhf compiler defaults to armv7-a+fp, VFP only).
        ("arm", None) => {
            check_arm_arch(&arm_arch, "armv6", "armv7");
            // The cc crate passes -mfpu=vfpv3-d16 for armv7 gnueabihf, and an
            // explicit -mfpu makes gcc ignore +neon in -march: without a
            // later -mfpu=neon* the NEON kernels are silently not built.
            let cflags_var = format!("CFLAGS_{}", target.replace('-', "_"));
            println!("cargo:rerun-if-env-changed={cflags_var}");
            if arm_arch.contains("+neon") && !var(&cflags_var).contains("-mfpu=neon") {
                panic!("GGML_CPU_ARM_ARCH={arm_arch} asks for NEON, but gcc gets -mfpu=vfpv3-d16 from the cc crate and ignores +neon. Also set {cflags_var}=-mfpu=neon-vfpv4 (and CXXFLAGS_...); see cross/rpi3-armv7.env.");
            }
            let neon = if arm_arch.contains("+neon") { "NEON" } else { "VFP only (no NEON)" };
            format!("arm ({}): {neon}", if arm_arch.is_empty() { "compiler default" } else { &arm_arch })
        }
        // 32-bit arm with a CPU name: same -march failure as aarch64.
        ("arm", Some(c)) => panic!(
            "arm with target-cpu={c}: reaches gcc as -march={c}, which fails. Use GGML_CPU_ARM_ARCH instead (see cross/rpi3-armv7.env)."
        ),
        // Anything else: ggml's generic C kernels.
        _ => format!("{arch}: generic"),
    };

    println!("cargo:rustc-env=HEARTH_KERNELS={kernels}");
    println!("cargo:rustc-env=HEARTH_TARGET={target}");
}

/// ggml passes GGML_CPU_ARM_ARCH to gcc as `-march=`, so it must be an
/// architecture (`armv8.2-a+dotprod`), not a CPU name (`cortex-a76`).
fn check_arm_arch(value: &str, a: &str, b: &str) {
    if !value.is_empty() && !value.starts_with(a) && !value.starts_with(b) {
        panic!("GGML_CPU_ARM_ARCH={value} reaches gcc as -march={value}; it must be an {a}/{b} architecture such as armv8.2-a+dotprod+fp16, not a CPU name.");
    }
}

fn arm_labels(level: &str) -> String {
    ARM_EXT
        .iter()
        .filter(|(e, _)| level.contains(e))
        .map(|(_, l)| format!(" {l}"))
        .collect()
}
