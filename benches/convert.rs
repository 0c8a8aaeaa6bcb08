//! Safetensors → GGUF conversion: throughput and peak memory, for the
//! all-MiniLM-L6-v2 test model and for a generated ~540 MB Llama-shaped
//! checkpoint (f32 weights, 8 layers, hidden 1024, 32k vocabulary).
//!
//! Run alone (`cargo bench --bench convert`): the checkpoint is written to a
//! temp dir first, then the process's peak RSS is reset
//! (`/proc/self/clear_refs`) so the figure covers the conversion only.
//! The output goes to a file, as it would into a blob.

// A bench prints its table.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::json;

fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    println!("| checkpoint | input | output | time | throughput | peak RSS |");
    println!("|---|---|---|---|---|---|");
    let models = std::env::var_os("HEARTH_TEST_MODELS").map(PathBuf::from);
    match models
        .map(|m| m.join("all-minilm-l6-v2"))
        .filter(|d| d.is_dir())
    {
        Some(minilm) => run(
            "all-MiniLM-L6-v2 (f32 BERT)",
            &files_in(&minilm),
            dir.path(),
        ),
        None => eprintln!("HEARTH_TEST_MODELS has no all-MiniLM-L6-v2; skipping it"),
    }
    let big = dir.path().join("llama");
    std::fs::create_dir_all(&big).expect("mkdir");
    let files = generate_llama(&big);
    run("generated Llama (f32)", &files, dir.path());
}

/// Converts `files` into a file under `out_dir` and prints one table row.
fn run(name: &str, files: &HashMap<String, PathBuf>, out_dir: &Path) {
    let input: u64 = files
        .values()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len())
        .sum();
    let out_path = out_dir.join("out.gguf");
    let mut out = BufWriter::new(std::fs::File::create(&out_path).expect("create output"));
    // Start the peak-RSS count here: what came before is not conversion.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let started = Instant::now();
    let written = hearth::convert::convert(files, &mut out, &mut |_| {}).expect("convert");
    out.flush().expect("flush");
    let secs = started.elapsed().as_secs_f64();
    let mb = |b: u64| b as f64 / 1e6;
    println!(
        "| {name} | {:.0} MB | {:.0} MB | {secs:.2} s | {:.0} MB/s | {:.1} MiB |",
        mb(input),
        mb(written),
        mb(input) / secs,
        peak_rss_kib() as f64 / 1024.0
    );
    let _ = std::fs::remove_file(out_path);
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Every file below `dir`, by its `/`-separated relative name.
fn files_in(dir: &Path) -> HashMap<String, PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut HashMap<String, PathBuf>) {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, out);
            } else if let Ok(rel) = p.strip_prefix(root) {
                out.insert(rel.to_string_lossy().replace('\\', "/"), p.clone());
            }
        }
    }
    let mut out = HashMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Writes a Llama-shaped checkpoint with pseudo-random f32 weights, one
/// tensor at a time (never the whole model in memory).
fn generate_llama(dir: &Path) -> HashMap<String, PathBuf> {
    let (e, f, layers, heads, kv, vocab) =
        (1024usize, 2816usize, 8usize, 16usize, 4usize, 32000usize);
    let hd = e / heads;
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![vocab, e]),
        ("model.norm.weight".into(), vec![e]),
        ("lm_head.weight".into(), vec![vocab, e]),
    ];
    for i in 0..layers {
        let l = format!("model.layers.{i}");
        tensors.extend([
            (format!("{l}.input_layernorm.weight"), vec![e]),
            (format!("{l}.self_attn.q_proj.weight"), vec![heads * hd, e]),
            (format!("{l}.self_attn.k_proj.weight"), vec![kv * hd, e]),
            (format!("{l}.self_attn.v_proj.weight"), vec![kv * hd, e]),
            (format!("{l}.self_attn.o_proj.weight"), vec![e, heads * hd]),
            (format!("{l}.post_attention_layernorm.weight"), vec![e]),
            (format!("{l}.mlp.gate_proj.weight"), vec![f, e]),
            (format!("{l}.mlp.up_proj.weight"), vec![f, e]),
            (format!("{l}.mlp.down_proj.weight"), vec![e, f]),
        ]);
    }
    // Safetensors: an 8-byte header length, the JSON header, then the data.
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape) in &tensors {
        let bytes = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + bytes]}),
        );
        offset += bytes;
    }
    let mut head = serde_json::Value::Object(header).to_string().into_bytes();
    while !head.len().is_multiple_of(8) {
        head.push(b' ');
    }
    let st = dir.join("model.safetensors");
    let mut w = BufWriter::new(std::fs::File::create(&st).expect("create"));
    w.write_all(&(head.len() as u64).to_le_bytes())
        .expect("write");
    w.write_all(&head).expect("write");
    let mut x: u32 = 0x1234_5678;
    let mut chunk = Vec::with_capacity(1 << 20);
    for (_, shape) in &tensors {
        let mut left = shape.iter().product::<usize>();
        while left > 0 {
            let n = left.min(1 << 18);
            chunk.clear();
            for _ in 0..n {
                // xorshift: cheap values in [-0.05, 0.05).
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let v = (x as f32 / u32::MAX as f32 - 0.5) * 0.1;
                chunk.extend_from_slice(&v.to_le_bytes());
            }
            w.write_all(&chunk).expect("write");
            left -= n;
        }
    }
    w.flush().expect("flush");
    // A plain vocabulary (the converter copies it; no merges needed).
    let mut tokens = serde_json::Map::new();
    for i in 0..vocab - 2 {
        tokens.insert(format!("t{i}"), json!(i));
    }
    let (bos, eos) = (vocab - 2, vocab - 1);
    let tokenizer = json!({
        "version": "1.0",
        "added_tokens": [{"id": bos, "content": "<s>", "special": true},
                         {"id": eos, "content": "</s>", "special": true}],
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "decoder": {"type": "ByteLevel"},
        "model": {"type": "BPE", "vocab": tokens, "merges": [], "byte_fallback": false}
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string()).expect("write");
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": true}).to_string(),
    )
    .expect("write");
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": e, "intermediate_size": f, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv, "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0, "max_position_embeddings": 2048, "tie_word_embeddings": false,
        "vocab_size": vocab, "bos_token_id": bos, "eos_token_id": eos
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write");
    files_in(dir)
}
