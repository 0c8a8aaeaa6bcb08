//! Where the time from "model not loaded" to "first token" goes: the
//! vocabulary, the rest of the model load, the context, the first prompt
//! evaluation and one more token, each timed on its own with llama.cpp
//! directly. Three set-ups: hearth's (4096-token context, sliding-window
//! layers cached only for their window), llama.cpp's defaults (the model's
//! training context, full-length sliding-window caches), and hearth's with
//! the model file dropped from the page cache first (a box that just
//! booted reads it from its disk).
//!
//! `cargo bench --bench coldstart` prints a table (medians of 5 runs). Run
//! it alone: ggml's threads spin, so anything else running skews it.

// A benchmark reports by printing its table.
#![allow(clippy::print_stdout)]

mod common;

use std::time::Duration;

use hearth::engine::{load_phases, LoadPhases, PhaseSettings};

const RUNS: usize = 5;

/// One phase's time out of a run.
type Pick = fn(&LoadPhases) -> Duration;

fn main() {
    let models = common::models_dir();
    let gemma = models.join("gemma3-270m-q4_k_m.gguf");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let hearth = PhaseSettings {
        n_ctx: 4096,
        threads,
        full_swa_cache: false,
        from_disk: false,
    };
    let setups = [
        ("hearth (ctx 4096, window-sized SWA cache)", hearth),
        (
            "llama.cpp defaults (ctx 32768, full SWA cache)",
            PhaseSettings {
                n_ctx: 32768,
                full_swa_cache: true,
                ..hearth
            },
        ),
        (
            "hearth, file not in the page cache",
            PhaseSettings {
                from_disk: true,
                ..hearth
            },
        ),
    ];
    // One load first, so the first measured run is not also the first
    // time this process touches llama.cpp.
    load_phases(&gemma, hearth).expect("load gemma");
    let columns: Vec<Vec<LoadPhases>> = setups
        .iter()
        .map(|(_, s)| {
            (0..RUNS)
                .map(|_| load_phases(&gemma, *s).expect("load gemma"))
                .collect()
        })
        .collect();

    println!("Gemma 3 270M Q4_K_M, {threads} threads, median of {RUNS} runs (ms)\n");
    let mut header = String::from("| phase |");
    let mut rule = String::from("|---|");
    for (name, _) in &setups {
        header.push_str(&format!(" {name} |"));
        rule.push_str("---|");
    }
    println!("{header}\n{rule}");
    let rows: [(&str, Pick); 6] = [
        ("vocabulary alone (metadata + 262k tokens)", |p| p.vocab),
        ("model load (vocabulary, mapping, repacking)", |p| p.model),
        ("context (KV cache zeroed, graphs reserved)", |p| p.context),
        (
            "first prompt (a short question; first touch of the weights)",
            |p| p.first_eval,
        ),
        ("one more token", |p| p.next_token),
        ("load + context + first prompt", |p| {
            p.model + p.context + p.first_eval
        }),
    ];
    for (label, pick) in rows {
        let mut line = format!("| {label} |");
        for runs in &columns {
            line.push_str(&format!(" {:.1} |", median_ms(runs.iter().map(pick))));
        }
        println!("{line}");
    }
}

fn median_ms(values: impl Iterator<Item = Duration>) -> f64 {
    let mut ms: Vec<f64> = values.map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    ms.get(ms.len() / 2).copied().unwrap_or(0.0)
}
