//! Tests of the whole conversion: a tiny synthetic BERT and tiny random
//! Llama, Qwen2 and Qwen3 decoders written on the fly (always run, the
//! decoders through llama.cpp against a reference forward pass),
//! broken inputs, and the real all-MiniLM-L6-v2 checked
//! against sentence-transformers vectors through llama.cpp (from the test
//! models; without them that test fails).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use super::source::f32_to_f16;
use super::*;
use crate::gguf::{Gguf, Value};

/// Writes a Safetensors file from (name, dtype, shape, raw bytes).
pub(super) fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut header = serde_json::to_vec(&header).unwrap();
    while !header.len().is_multiple_of(8) {
        header.push(b' ');
    }
    let mut file = (header.len() as u64).to_le_bytes().to_vec();
    file.extend_from_slice(&header);
    file.extend_from_slice(&data);
    std::fs::write(path, file).unwrap();
}

/// F32 bytes counting up from `base` in steps of 1/64, so every value is
/// distinct and exact in F16.
fn f32s(n: usize, base: f32) -> Vec<u8> {
    (0..n)
        .flat_map(|i| (base + i as f32 / 64.0).to_le_bytes())
        .collect()
}

/// A one-layer BERT with hidden size 4 and eight tokens, in `dir`, with the
/// `bert.` prefix, a pooler and position ids that must be dropped.
fn tiny_model(dir: &Path) -> Files {
    let (e, f, v, p) = (4usize, 8usize, 8usize, 6usize);
    std::fs::write(
        dir.join("config.json"),
        json!({
            "_name_or_path": "test/tiny-bert", "architectures": ["BertModel"],
            "hidden_act": "gelu", "hidden_size": e, "intermediate_size": f,
            "layer_norm_eps": 1e-12, "max_position_embeddings": p,
            "num_attention_heads": 2, "num_hidden_layers": 1,
            "type_vocab_size": 2, "vocab_size": v
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer.json"),
        json!({
            "normalizer": {"type": "BertNormalizer", "lowercase": true, "strip_accents": null},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}},
                           {"SpecialToken": {"id": "[SEP]"}}]},
            "model": {"type": "WordPiece", "continuing_subword_prefix": "##",
                "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4,
                          "hello": 5, "world": 6, "##s": 7}},
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "special": true},
                {"id": 1, "content": "[UNK]", "special": true},
                {"id": 2, "content": "[CLS]", "special": true},
                {"id": 3, "content": "[SEP]", "special": true},
                {"id": 4, "content": "[MASK]", "special": true}
            ]
        })
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"cls_token": "[CLS]", "sep_token": "[SEP]", "unk_token": "[UNK]",
               "pad_token": "[PAD]", "mask_token": "[MASK]"})
        .to_string(),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
    std::fs::write(
        dir.join("1_Pooling/config.json"),
        json!({"pooling_mode_mean_tokens": true}).to_string(),
    )
    .unwrap();
    let l = "bert.encoder.layer.0";
    let mut tensors = vec![
        (
            "bert.embeddings.word_embeddings.weight".to_string(),
            vec![v, e],
        ),
        (
            "bert.embeddings.position_embeddings.weight".into(),
            vec![p, e],
        ),
        (
            "bert.embeddings.token_type_embeddings.weight".into(),
            vec![2, e],
        ),
        ("bert.embeddings.LayerNorm.weight".into(), vec![e]),
        ("bert.embeddings.LayerNorm.bias".into(), vec![e]),
        ("bert.pooler.dense.weight".into(), vec![e, e]),
    ];
    for (part, shape) in [
        ("attention.self.query.weight", vec![e, e]),
        ("attention.self.query.bias", vec![e]),
        ("attention.self.key.weight", vec![e, e]),
        ("attention.self.key.bias", vec![e]),
        ("attention.self.value.weight", vec![e, e]),
        ("attention.self.value.bias", vec![e]),
        ("attention.output.dense.weight", vec![e, e]),
        ("attention.output.dense.bias", vec![e]),
        ("attention.output.LayerNorm.weight", vec![e]),
        ("attention.output.LayerNorm.bias", vec![e]),
        ("intermediate.dense.weight", vec![f, e]),
        ("intermediate.dense.bias", vec![f]),
        ("output.dense.weight", vec![e, f]),
        ("output.dense.bias", vec![e]),
        ("output.LayerNorm.weight", vec![e]),
        ("output.LayerNorm.bias", vec![e]),
    ] {
        tensors.push((format!("{l}.{part}"), shape));
    }
    let mut raw: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            (name.as_str(), "F32", shape.clone(), f32s(n, i as f32))
        })
        .collect();
    raw.push((
        "bert.embeddings.position_ids",
        "I64",
        vec![1, p],
        vec![0; 8 * p],
    ));
    write_safetensors(&dir.join("model.safetensors"), &raw);
    files_in(dir)
}

/// Every file under `dir`, keyed by its `/`-separated relative path.
pub(super) fn files_in(dir: &Path) -> Files {
    fn walk(root: &Path, dir: &Path, out: &mut Files) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap().to_string_lossy();
                out.insert(rel.replace('\\', "/"), path.clone());
            }
        }
    }
    let mut files = Files::new();
    walk(dir, dir, &mut files);
    files
}

pub(super) fn run(files: &Files) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let n = convert(files, &mut out, &mut |_| {})?;
    assert_eq!(n, out.len() as u64);
    Ok(out)
}

#[test]
fn converts_a_tiny_bert() {
    let dir = tempfile::tempdir().unwrap();
    let files = tiny_model(dir.path());
    let mut steps = Vec::new();
    let mut out = Vec::new();
    convert(&files, &mut out, &mut |s| steps.push(s.to_string())).unwrap();
    assert!(steps.iter().any(|s| s.contains("token_embd.weight")));

    let g = Gguf::parse(&out, true).unwrap();
    assert_eq!(g.architecture(), Some("bert"));
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(get("general.name"), Value::String("tiny-bert".into()));
    assert_eq!(get("bert.embedding_length"), Value::U32(4));
    assert_eq!(get("bert.block_count"), Value::U32(1));
    assert_eq!(get("bert.context_length"), Value::U32(6));
    assert_eq!(get("bert.attention.causal"), Value::Bool(false));
    assert_eq!(get("bert.pooling_type"), Value::U32(1));
    assert_eq!(get("general.file_type"), Value::U32(1));
    assert_eq!(get("tokenizer.ggml.model"), Value::String("bert".into()));
    assert_eq!(get("tokenizer.ggml.token_type_count"), Value::U32(2));
    assert_eq!(get("tokenizer.ggml.bos_token_id"), Value::U32(2));
    assert_eq!(get("tokenizer.ggml.seperator_token_id"), Value::U32(3));
    assert_eq!(get("tokenizer.ggml.mask_token_id"), Value::U32(4));
    let tokens = get("tokenizer.ggml.tokens");
    let tokens = tokens.as_array().unwrap().values.as_ref().unwrap();
    assert_eq!(tokens[2], Value::String("[CLS]".into()));
    assert_eq!(tokens[5], Value::String("\u{2581}hello".into()));
    assert_eq!(tokens[7], Value::String("s".into()));

    // 5 embedding tensors and 16 per layer; the pooler and ids are gone.
    assert_eq!(g.tensors.len(), 5 + 16);
    let names: Vec<&str> = g.tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names[..5],
        [
            "position_embd.weight",
            "token_embd.weight",
            "token_embd_norm.bias",
            "token_embd_norm.weight",
            "token_types.weight"
        ]
    );
    assert_eq!(names[5], "blk.0.attn_k.bias");
    let t = |name: &str| g.tensors.iter().find(|t| t.name == name).unwrap();
    assert_eq!(t("token_embd.weight").shape, vec![4, 8]);
    assert_eq!(t("token_embd.weight").ggml_type, 1);
    assert_eq!(t("token_types.weight").ggml_type, 0);
    assert_eq!(t("blk.0.ffn_up.weight").shape, vec![4, 8]);
    assert_eq!(t("blk.0.ffn_down.weight").shape, vec![8, 4]);
    assert_eq!(t("blk.0.attn_q.bias").ggml_type, 0);

    // Data: find the start of the data section from the last tensor.
    let data_start = out.len() as u64
        - g.tensors
            .iter()
            .map(|t| {
                gguf_writer::align(t.offset + t.elements() * if t.ggml_type == 1 { 2 } else { 4 })
            })
            .max()
            .unwrap();
    let at = |name: &str, i: usize, size: usize| {
        let off = (data_start + t(name).offset) as usize + i * size;
        out[off..off + size].to_vec()
    };
    // word_embeddings was tensor 0 in the source: values 0, 1/64, ...
    assert_eq!(
        at("token_embd.weight", 5, 2),
        f32_to_f16(5.0 / 64.0).to_le_bytes()
    );
    // LayerNorm.bias was tensor 4: values 4, 4 + 1/64, ...
    assert_eq!(
        at("token_embd_norm.bias", 1, 4),
        (4.0f32 + 1.0 / 64.0).to_le_bytes()
    );
}

#[test]
fn refuses_an_unsupported_architecture() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        json!({"architectures": ["FooModel"], "model_type": "foo"}).to_string(),
    )
    .unwrap();
    let files = files_in(dir.path());
    let err = detect(&files).unwrap_err();
    assert!(matches!(&err, Error::UnsupportedArchitecture(a) if a == "FooModel"));
    assert!(err.to_string().contains("FooModel"), "{err}");
    let err = run(&files).unwrap_err();
    assert!(err.to_string().contains("FooModel"), "{err}");
}

#[test]
fn detects_bert_by_architecture_or_model_type() {
    let by_architecture = [
        ("BertModel", Arch::Bert),
        ("BertForMaskedLM", Arch::Bert),
        ("LlamaForCausalLM", Arch::Llama),
        ("MistralForCausalLM", Arch::Llama),
        ("Qwen2ForCausalLM", Arch::Qwen2),
        ("Qwen3ForCausalLM", Arch::Qwen3),
        ("Phi3ForCausalLM", Arch::Phi3),
        ("Gemma3ForCausalLM", Arch::Gemma3),
        ("GemmaForCausalLM", Arch::Gemma),
        // The multimodal Gemma 3 wrapper, converted as its text model.
        ("Gemma3ForConditionalGeneration", Arch::Gemma3),
    ];
    for (name, want) in by_architecture {
        let config = json!({ "architectures": [name] });
        assert_eq!(detect_json(&config).ok(), Some(want), "{config}");
    }
    let by_model_type = [
        ("bert", Arch::Bert),
        ("mistral", Arch::Llama),
        ("qwen3", Arch::Qwen3),
        ("gemma2", Arch::Gemma2),
        ("gemma3", Arch::Gemma3),
    ];
    for (model_type, want) in by_model_type {
        let config = json!({ "model_type": model_type });
        assert_eq!(detect_json(&config).ok(), Some(want), "{config}");
    }
    assert_eq!(detect_json(&json!({})).ok(), None);
}

#[test]
fn reports_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = tiny_model(dir.path());
    let check = |files: &Files, want: &str| {
        let err = run(files).unwrap_err();
        assert!(matches!(err, Error::MissingFile(_)), "{err}");
        assert!(err.to_string().contains(want), "{err}");
    };
    files.remove("tokenizer.json");
    check(&files, "tokenizer.json");
    files.remove("model.safetensors");
    check(&files, "model.safetensors");
    files.remove("config.json");
    check(&files, "config.json");
    assert!(matches!(detect(&files), Err(Error::MissingFile(_))));

    // A map entry whose blob is gone is an I/O error, not a panic.
    let mut files = tiny_model(dir.path());
    files.insert("model.safetensors".into(), dir.path().join("gone"));
    assert!(matches!(run(&files), Err(Error::Io(_))));
}

#[test]
fn refuses_truncated_or_garbled_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let files = tiny_model(dir.path());
    let path = files["model.safetensors"].clone();
    let full = std::fs::read(&path).unwrap();
    for cut in [full.len() - 3, 200, 9, 3, 0] {
        std::fs::write(&path, &full[..cut]).unwrap();
        let err = run(&files).unwrap_err();
        assert!(
            matches!(err, Error::BadSafetensors { .. }),
            "cut {cut}: {err}"
        );
    }
    let mut garbled = full.clone();
    garbled[8] = b'[';
    std::fs::write(&path, &garbled).unwrap();
    assert!(matches!(run(&files), Err(Error::BadSafetensors { .. })));
    let mut huge = full;
    huge[..8].copy_from_slice(&u64::MAX.to_le_bytes());
    std::fs::write(&path, &huge).unwrap();
    assert!(matches!(run(&files), Err(Error::BadSafetensors { .. })));
}

#[test]
fn refuses_unknown_tensors_and_wrong_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let files = tiny_model(dir.path());
    let path = &files["model.safetensors"];
    write_safetensors(
        path,
        &[(
            "encoder.layer.0.crossattention.weight",
            "F32",
            vec![2],
            f32s(2, 0.0),
        )],
    );
    let err = run(&files).unwrap_err();
    assert!(err.to_string().contains("crossattention"), "{err}");
    write_safetensors(
        path,
        &[(
            "embeddings.word_embeddings.weight",
            "F32",
            vec![8, 3],
            f32s(24, 0.0),
        )],
    );
    let err = run(&files).unwrap_err();
    assert!(matches!(err, Error::BadTensor { .. }), "{err}");
}

/// Collects llama.cpp's warnings with the name of the thread that logged
/// them. Tests run in parallel and the logger is process-wide, so a load
/// must look only at its own runner thread's lines (another test's bad
/// grammar is not this model's warning).
struct Warnings(Mutex<Vec<(String, String)>>);

impl log::Log for Warnings {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.level() <= log::Level::Warn && r.target() == "llama.cpp" {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((thread, r.args().to_string()));
        }
    }
    fn flush(&self) {}
}

static WARNINGS: Warnings = Warnings(Mutex::new(Vec::new()));

/// Loads the converted GGUF at `path` (renamed to a name no other load
/// uses, which names its runner thread) and returns llama.cpp's warnings
/// from that load (`None` when another logger owns the log and warnings
/// cannot be collected). Panics with llama.cpp's log if it fails.
fn load_watched(
    path: &Path,
    params: crate::engine::LoadParams,
) -> (crate::engine::Runner, Option<Vec<String>>) {
    static INSTALLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let logging = *INSTALLED.get_or_init(|| {
        let ours = log::set_logger(&WARNINGS).is_ok();
        if ours {
            log::set_max_level(log::LevelFilter::Warn);
        }
        ours
    });
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file = format!("converted-{n}.gguf");
    let unique = path.with_file_name(&file);
    std::fs::rename(path, &unique).unwrap();
    let path = unique;
    let loaded =
        crate::engine::Runner::load(&path, params, Arc::new(crate::engine::CpuBudget::new(1)));
    let thread = format!("runner-{file}");
    let mut all = WARNINGS.0.lock().unwrap_or_else(|e| e.into_inner());
    let (mine, others): (Vec<_>, Vec<_>) = all.drain(..).partition(|(t, _)| *t == thread);
    *all = others;
    drop(all);
    let warnings: Vec<String> = mine.into_iter().map(|(_, w)| w).collect();
    // llama.cpp says why a load failed only in its log.
    let runner = loaded.unwrap_or_else(|e| panic!("{e}; llama.cpp logged: {warnings:?}"));
    eprintln!("llama.cpp warnings while loading: {warnings:?}");
    (runner, logging.then_some(warnings))
}

/// A line of /proc/self/status in KiB (Linux only).
fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn cosine(a: &[f32], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Converts the real all-MiniLM-L6-v2, loads it with llama.cpp and compares
/// every reference sentence with sentence-transformers' vector.
#[test]
fn minilm_matches_sentence_transformers() {
    let dir = crate::test_models::path("all-minilm-l6-v2");
    let files = files_in(&dir);
    assert_eq!(detect(&files).unwrap(), Arch::Bert);

    // Reset the peak-RSS mark (writing 5 to clear_refs) so VmHWM measures
    // the conversion, not the test binary's start-up.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let rss_before = status_kib("VmRSS:");
    let out_dir = tempfile::tempdir().unwrap();
    let out_path = out_dir.path().join("minilm.gguf");
    let mut out = std::fs::File::create(&out_path).unwrap();
    let started = Instant::now();
    let written = convert(&files, &mut out, &mut |_| {}).unwrap();
    let secs = started.elapsed().as_secs_f64();
    drop(out);
    let input = std::fs::metadata(&files["model.safetensors"])
        .unwrap()
        .len();
    eprintln!(
        "converted {:.1} MB of safetensors into {:.1} MB of GGUF in {:.3} s ({:.0} MB/s in); \
         VmRSS before {:?} KiB, VmHWM during {:?} KiB",
        input as f64 / 1e6,
        written as f64 / 1e6,
        secs,
        input as f64 / 1e6 / secs,
        rss_before,
        status_kib("VmHWM:"),
    );

    let params = crate::engine::LoadParams {
        embeddings: true,
        n_parallel: 1,
        n_ctx: 512,
        n_batch: 512,
        n_threads: 1,
        use_mmap: true,
        ..crate::engine::LoadParams::default()
    };
    let (runner, warnings) = load_watched(&out_path, params);

    let reference: serde_json::Value =
        serde_json::from_str(include_str!("testdata/minilm-reference.json")).unwrap();
    let mut worst = 1.0f64;
    for s in reference["sentences"].as_array().unwrap() {
        let text = s["input"].as_str().unwrap();
        let tokens = runner.tokenize(text, true, false).unwrap();
        let want_ids: Vec<i32> = s["token_ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(tokens, want_ids, "tokens of {text:?}");
        let got = runner.embed(vec![tokens]).unwrap().remove(0);
        let want: Vec<f64> = s["embedding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        let c = cosine(&got, &want);
        eprintln!("cosine {c:.6}  {text}");
        worst = worst.min(c);
    }
    if let Some(warnings) = warnings {
        assert!(warnings.is_empty(), "llama.cpp warned: {warnings:?}");
    }
    assert!(worst >= 0.999, "worst cosine {worst}");
}

#[test]
fn refuses_other_phi_and_gemma_variants_by_name() {
    for name in [
        "Phi3SmallForCausalLM",
        "Gemma3nForConditionalGeneration",
        "Mistral3ForConditionalGeneration",
    ] {
        let err = detect_json(&json!({"architectures": [name]})).unwrap_err();
        assert!(
            matches!(&err, Error::UnsupportedArchitecture(a) if a == name),
            "{err}"
        );
    }
}

/// GPT-2's byte-to-unicode table: the character standing for each byte-level
/// token, in GPT-2's id order (printable bytes first, then the rest shifted
/// up past U+0100).
fn gpt2_byte_chars() -> Vec<char> {
    let mut bytes: Vec<u32> = (u32::from(b'!')..=u32::from(b'~'))
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut chars = bytes.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    chars
        .into_iter()
        .map(|c| char::from_u32(c).unwrap())
        .collect()
}

/// Deterministic pseudo-random F32 bytes in [-scale, scale) (xorshift).
pub(super) fn random_f32s(n: usize, seed: u64, scale: f32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let unit = (x >> 40) as f32 / (1u64 << 24) as f32;
            ((unit * 2.0 - 1.0) * scale).to_le_bytes()
        })
        .collect()
}

/// The shape of a tiny random decoder.
#[derive(Clone, Copy)]
struct Dims {
    e: usize,
    f: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    layers: usize,
}

/// Two layers, hidden 64, 4 heads and 2 KV heads for every architecture;
/// Qwen3 gets a head size of 32, so that its query width (128) differs
/// from the hidden size as in real Qwen3 checkpoints.
fn tiny_dims(arch: Arch) -> Dims {
    let hd = if arch == Arch::Qwen3 { 32 } else { 16 };
    Dims {
        e: 64,
        f: 128,
        heads: 4,
        kv_heads: 2,
        hd,
        layers: 2,
    }
}

/// Qwen2's pre-tokenizer split pattern (shared by Qwen2.5 and Qwen3).
const QWEN2_REGEX: &str = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/// A random two-layer Llama (hidden 64, 4 heads, 2 KV heads) with a tiny
/// byte-level BPE tokenizer, in `dir`. Returns the files and vocab size.
pub(super) fn tiny_llama(dir: &Path) -> (Files, usize) {
    tiny_decoder(dir, Arch::Llama)
}

/// A random two-layer decoder of `arch` (see [`tiny_dims`]) with a tiny
/// byte-level BPE tokenizer, in `dir`: Llama with `<s>`/`</s>`, Qwen with
/// `<|endoftext|>`/`<|im_end|>`, no BOS, Qwen's split regex, q/k/v biases
/// (Qwen2) or q/k norms (Qwen3). Returns the files and vocab size; the two
/// special tokens are the last two ids.
fn tiny_decoder(dir: &Path, arch: Arch) -> (Files, usize) {
    let Dims {
        e,
        f,
        heads,
        kv_heads,
        hd,
        layers,
    } = tiny_dims(arch);
    let qwen = arch != Arch::Llama;
    let mut vocab = serde_json::Map::new();
    for (i, c) in gpt2_byte_chars().into_iter().enumerate() {
        vocab.insert(c.to_string(), json!(i));
    }
    let merges = [
        "h e",
        "l l",
        "he ll",
        "hell o",
        "\u{120} w",
        "o r",
        "\u{120}w or",
        "l d",
        "\u{120}wor ld",
    ];
    for m in merges {
        let id = vocab.len();
        vocab.insert(m.replace(' ', ""), json!(id));
    }
    let (bos, eos) = (vocab.len(), vocab.len() + 1);
    let n_vocab = vocab.len() + 2;
    let (bos_text, eos_text) = if qwen {
        ("<|endoftext|>", "<|im_end|>")
    } else {
        ("<s>", "</s>")
    };
    let pre_tokenizer = if qwen {
        json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_REGEX},
             "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false,
             "use_regex": false}]})
    } else {
        json!({"type": "ByteLevel", "add_prefix_space": false,
               "trim_offsets": true, "use_regex": true})
    };
    std::fs::write(
        dir.join("tokenizer.json"),
        json!({
            "version": "1.0",
            "added_tokens": [
                {"id": bos, "content": bos_text, "special": true},
                {"id": eos, "content": eos_text, "special": true}
            ],
            "pre_tokenizer": pre_tokenizer,
            "decoder": {"type": "ByteLevel"},
            "model": {"type": "BPE", "vocab": vocab, "merges": merges,
                      "byte_fallback": false}
        })
        .to_string(),
    )
    .unwrap();
    let template = "{% for m in messages %}{{ m['content'] }}{% endfor %}";
    let tok_config = if qwen {
        // As Qwen ships it: no BOS token, EOS the chat turn end, PAD the
        // document end.
        json!({
            "bos_token": null, "eos_token": eos_text, "pad_token": bos_text,
            "add_prefix_space": false, "chat_template": template
        })
    } else {
        json!({
            "bos_token": "<s>", "eos_token": {"content": "</s>"}, "add_bos_token": true,
            "chat_template": template
        })
    };
    std::fs::write(dir.join("tokenizer_config.json"), tok_config.to_string()).unwrap();
    let (arch_name, model_type) = match arch {
        Arch::Qwen2 => ("Qwen2ForCausalLM", "qwen2"),
        Arch::Qwen3 => ("Qwen3ForCausalLM", "qwen3"),
        _ => ("LlamaForCausalLM", "llama"),
    };
    let mut config = json!({
        "_name_or_path": format!("test/tiny-{model_type}"), "architectures": [arch_name],
        "model_type": model_type, "hidden_act": "silu", "hidden_size": e,
        "intermediate_size": f, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
        "max_position_embeddings": 256, "tie_word_embeddings": false,
        "vocab_size": n_vocab, "bos_token_id": bos, "eos_token_id": eos
    });
    if qwen {
        config["use_sliding_window"] = json!(false);
        config["sliding_window"] = json!(256);
    }
    if arch == Arch::Qwen3 {
        config["head_dim"] = json!(hd);
        config["attention_bias"] = json!(false);
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![n_vocab, e]),
        ("model.norm.weight".into(), vec![e]),
        ("lm_head.weight".into(), vec![n_vocab, e]),
    ];
    for i in 0..layers {
        let l = format!("model.layers.{i}");
        tensors.extend([
            (format!("{l}.input_layernorm.weight"), vec![e]),
            (format!("{l}.self_attn.q_proj.weight"), vec![heads * hd, e]),
            (
                format!("{l}.self_attn.k_proj.weight"),
                vec![kv_heads * hd, e],
            ),
            (
                format!("{l}.self_attn.v_proj.weight"),
                vec![kv_heads * hd, e],
            ),
            (format!("{l}.self_attn.o_proj.weight"), vec![e, heads * hd]),
            (format!("{l}.post_attention_layernorm.weight"), vec![e]),
            (format!("{l}.mlp.gate_proj.weight"), vec![f, e]),
            (format!("{l}.mlp.up_proj.weight"), vec![f, e]),
            (format!("{l}.mlp.down_proj.weight"), vec![e, f]),
        ]);
        if arch == Arch::Qwen2 {
            tensors.extend([
                (format!("{l}.self_attn.q_proj.bias"), vec![heads * hd]),
                (format!("{l}.self_attn.k_proj.bias"), vec![kv_heads * hd]),
                (format!("{l}.self_attn.v_proj.bias"), vec![kv_heads * hd]),
            ]);
        }
        if arch == Arch::Qwen3 {
            tensors.extend([
                (format!("{l}.self_attn.q_norm.weight"), vec![hd]),
                (format!("{l}.self_attn.k_norm.weight"), vec![hd]),
            ]);
        }
    }
    let data: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            let seed = i as u64 + 1;
            let bytes = if name.ends_with(".bias") {
                // Biases large enough to move the attention scores.
                random_f32s(n, seed, 0.5)
            } else if name.ends_with("q_norm.weight") || name.ends_with("k_norm.weight") {
                // Norm weights around 1 that differ per channel, so a
                // misapplied norm changes the result.
                random_f32s(n, seed, 0.5)
                    .chunks_exact(4)
                    .flat_map(|c| {
                        (1.0 + f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
                    })
                    .collect()
            } else if shape.len() == 1 {
                (0..n).flat_map(|_| 1.0f32.to_le_bytes()).collect()
            } else {
                random_f32s(n, seed, 0.1)
            };
            (name.as_str(), "F32", shape.clone(), bytes)
        })
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &data);
    (files_in(dir), n_vocab)
}

/// Reads an F32 source tensor back from the tiny decoder's safetensors file.
fn source_f32(files: &Files, name: &str) -> Vec<f32> {
    let bytes = std::fs::read(&files["model.safetensors"]).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let off = &header[name]["data_offsets"];
    let (a, b) = (
        off[0].as_u64().unwrap() as usize,
        off[1].as_u64().unwrap() as usize,
    );
    bytes[8 + n + a..8 + n + b]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Greedy decoding of a tiny decoder of `arch` straight from its Hugging
/// Face layout (rotate-half RoPE, unpermuted q/k, Qwen2's q/k/v biases and
/// Qwen3's per-head q/k RMS norms before RoPE), with matrices rounded to
/// F16 as in the GGUF and vectors kept F32, so llama.cpp's tokens can be
/// checked against it: a wrong q/k permutation, a lost bias or norm
/// changes the attention scores and with them the tokens.
pub(super) fn reference_greedy(files: &Files, arch: Arch, prompt: &[i32], n: usize) -> Vec<i32> {
    reference_greedy_scaled(files, arch, prompt, n, &[])
}

/// [`reference_greedy`] with each RoPE frequency `i` divided by
/// `divisors[i]` (missing ones are 1), as llama.cpp applies
/// `rope_freqs.weight`; a linear scaling factor `f` is `f` for all.
fn reference_greedy_scaled(
    files: &Files,
    arch: Arch,
    prompt: &[i32],
    n: usize,
    divisors: &[f32],
) -> Vec<i32> {
    let Dims {
        e,
        f,
        heads,
        kv_heads,
        hd,
        layers,
    } = tiny_dims(arch);
    let w = |name: &str| -> Vec<f32> {
        source_f32(files, name)
            .into_iter()
            .map(|v| super::source::f16_to_f32(f32_to_f16(v)))
            .collect()
    };
    // y = W x for a row-major W of `rows` rows.
    let matvec = |m: &[f32], x: &[f32], rows: usize| -> Vec<f32> {
        (0..rows)
            .map(|r| {
                m[r * x.len()..(r + 1) * x.len()]
                    .iter()
                    .zip(x)
                    .map(|(a, b)| a * b)
                    .sum()
            })
            .collect()
    };
    let rms = |x: &[f32]| -> Vec<f32> {
        let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
        let s = 1.0 / (ms + 1e-5).sqrt();
        x.iter().map(|v| v * s).collect()
    };
    // Qwen3's q/k norm: RMS over each head, times the per-channel weight.
    let head_norm = |v: &mut [f32], weight: &[f32]| {
        for head in v.chunks_mut(hd) {
            let normed = rms(head);
            for ((h, n), g) in head.iter_mut().zip(normed).zip(weight) {
                *h = n * g;
            }
        }
    };
    let add = |v: &mut [f32], b: &[f32]| v.iter_mut().zip(b).for_each(|(a, b)| *a += b);
    let rope = |v: &mut [f32], pos: usize| {
        for head in v.chunks_mut(hd) {
            for i in 0..hd / 2 {
                let freq = 10000f32.powf(-((2 * i) as f32) / hd as f32)
                    / divisors.get(i).copied().unwrap_or(1.0);
                let (sin, cos) = (pos as f32 * freq).sin_cos();
                let (a, b) = (head[i], head[i + hd / 2]);
                head[i] = a * cos - b * sin;
                head[i + hd / 2] = b * cos + a * sin;
            }
        }
    };
    let embed = w("model.embed_tokens.weight");
    let head_w = w("lm_head.weight");
    let n_vocab = embed.len() / e;
    // Per layer: q, k, v, o, gate, up, down, then the optional vectors
    // (q/k/v biases for Qwen2, q/k norms for Qwen3; empty otherwise).
    let lw: Vec<[Vec<f32>; 12]> = (0..layers)
        .map(|i| {
            let l = format!("model.layers.{i}");
            let opt = |part: &str, on: bool| {
                if on {
                    source_f32(files, &format!("{l}.{part}"))
                } else {
                    Vec::new()
                }
            };
            let (q2, q3) = (arch == Arch::Qwen2, arch == Arch::Qwen3);
            [
                w(&format!("{l}.self_attn.q_proj.weight")),
                w(&format!("{l}.self_attn.k_proj.weight")),
                w(&format!("{l}.self_attn.v_proj.weight")),
                w(&format!("{l}.self_attn.o_proj.weight")),
                w(&format!("{l}.mlp.gate_proj.weight")),
                w(&format!("{l}.mlp.up_proj.weight")),
                w(&format!("{l}.mlp.down_proj.weight")),
                opt("self_attn.q_proj.bias", q2),
                opt("self_attn.k_proj.bias", q2),
                opt("self_attn.v_proj.bias", q2),
                opt("self_attn.q_norm.weight", q3),
                opt("self_attn.k_norm.weight", q3),
            ]
        })
        .collect();
    let mut tokens = prompt.to_vec();
    let mut generated = Vec::new();
    for _ in 0..n {
        let mut xs: Vec<Vec<f32>> = tokens
            .iter()
            .map(|&t| embed[t as usize * e..(t as usize + 1) * e].to_vec())
            .collect();
        for [wq, wk, wv, wo, wg, wu, wd, bq, bk, bv, nq, nk] in &lw {
            let mut qs = Vec::new();
            let mut ks = Vec::new();
            let mut vs = Vec::new();
            for (pos, x) in xs.iter().enumerate() {
                let h = rms(x);
                let mut q = matvec(wq, &h, heads * hd);
                let mut k = matvec(wk, &h, kv_heads * hd);
                let mut v = matvec(wv, &h, kv_heads * hd);
                add(&mut q, bq);
                add(&mut k, bk);
                add(&mut v, bv);
                if !nq.is_empty() {
                    head_norm(&mut q, nq);
                    head_norm(&mut k, nk);
                }
                rope(&mut q, pos);
                rope(&mut k, pos);
                qs.push(q);
                ks.push(k);
                vs.push(v);
            }
            for (pos, x) in xs.iter_mut().enumerate() {
                let mut att = vec![0f32; heads * hd];
                for h in 0..heads {
                    let kvh = h / (heads / kv_heads);
                    let q = &qs[pos][h * hd..(h + 1) * hd];
                    let scores: Vec<f32> = (0..=pos)
                        .map(|p| {
                            let k = &ks[p][kvh * hd..(kvh + 1) * hd];
                            q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f32 = exps.iter().sum();
                    for (p, ex) in exps.iter().enumerate() {
                        for d in 0..hd {
                            att[h * hd + d] += ex / sum * vs[p][kvh * hd + d];
                        }
                    }
                }
                let o = matvec(wo, &att, e);
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let h = rms(x);
                let g = matvec(wg, &h, f);
                let u = matvec(wu, &h, f);
                let act: Vec<f32> = g
                    .iter()
                    .zip(&u)
                    .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                    .collect();
                let d = matvec(wd, &act, e);
                x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
            }
        }
        let last = rms(&xs[xs.len() - 1]);
        let logits = matvec(&head_w, &last, n_vocab);
        let best = (0..n_vocab)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as i32;
        generated.push(best);
        tokens.push(best);
    }
    generated
}

/// Writes a converted decoder to a temporary file and loads it with
/// llama.cpp; returns the directory (to keep the file alive), the runner
/// and llama.cpp's warnings while loading (`None` when another logger is
/// installed and warnings cannot be collected).
pub(super) fn load_decoder(
    out: &[u8],
) -> (
    tempfile::TempDir,
    crate::engine::Runner,
    Option<Vec<String>>,
) {
    let out_dir = tempfile::tempdir().unwrap();
    let path = out_dir.path().join("tiny.gguf");
    std::fs::write(&path, out).unwrap();
    let params = crate::engine::LoadParams {
        n_ctx: 128,
        n_batch: 64,
        n_threads: 1,
        n_parallel: 1,
        embeddings: false,
        use_mmap: true,
        ..crate::engine::LoadParams::default()
    };
    let (runner, warnings) = load_watched(&path, params);
    (out_dir, runner, warnings)
}

/// Greedily generates `n` tokens after `prompt` with llama.cpp.
pub(super) fn generate_greedy(
    runner: &crate::engine::Runner,
    prompt: Vec<i32>,
    n: usize,
) -> Vec<i32> {
    let mut req = crate::engine::GenerateRequest::new(prompt);
    req.num_predict = i32::try_from(n).unwrap();
    req.stop_at_eog = false;
    req.sampling.temperature = 0.0;
    req.sampling.repeat_penalty = 1.0;
    req.sampling.seed = Some(1);
    let (tx, rx) = std::sync::mpsc::channel();
    runner
        .generate(req, Box::new(move |ev| tx.send(ev).is_ok()))
        .unwrap();
    let mut generated = Vec::new();
    loop {
        match rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap() {
            crate::engine::Event::Token { id, .. } => generated.push(id),
            crate::engine::Event::Done { eval_count, .. } => {
                assert_eq!(eval_count, n);
                break;
            }
            crate::engine::Event::Error(e) => panic!("generation failed: {e}"),
            crate::engine::Event::PromptDone { .. } => {}
        }
    }
    eprintln!("generated: {generated:?}");
    generated
}

#[test]
fn converts_a_tiny_llama_and_generates() {
    let dir = tempfile::tempdir().unwrap();
    let (files, n_vocab) = tiny_llama(dir.path());
    assert_eq!(detect(&files).unwrap(), Arch::Llama);
    let out = run(&files).unwrap();

    let g = Gguf::parse(&out, true).unwrap();
    assert_eq!(g.architecture(), Some("llama"));
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(get("llama.block_count"), Value::U32(2));
    assert_eq!(get("llama.attention.head_count_kv"), Value::U32(2));
    assert_eq!(get("llama.rope.dimension_count"), Value::U32(16));
    assert_eq!(get("llama.vocab_size"), Value::U32(n_vocab as u32));
    assert_eq!(get("tokenizer.ggml.model"), Value::String("gpt2".into()));
    assert_eq!(get("tokenizer.ggml.pre"), Value::String("default".into()));
    assert_eq!(
        get("tokenizer.ggml.bos_token_id"),
        Value::U32(n_vocab as u32 - 2)
    );
    assert_eq!(
        get("tokenizer.ggml.eos_token_id"),
        Value::U32(n_vocab as u32 - 1)
    );
    assert!(g.get("tokenizer.chat_template").is_some());
    let merges = get("tokenizer.ggml.merges");
    let merges = merges.as_array().unwrap().values.as_ref().unwrap();
    assert_eq!(merges[4], Value::String("\u{120} w".into()));
    // 3 global tensors and 9 per layer.
    assert_eq!(g.tensors.len(), 3 + 2 * 9);
    let t = |name: &str| g.tensors.iter().find(|t| t.name == name).unwrap();
    assert_eq!(t("blk.0.attn_k.weight").shape, vec![64, 32]);
    assert_eq!(t("blk.0.attn_k.weight").ggml_type, 1);
    assert_eq!(t("blk.1.ffn_norm.weight").ggml_type, 0);
    assert_eq!(t("output.weight").shape, vec![64, n_vocab as u64]);

    // The query rows are permuted: output row r holds source row
    // permuted_row(r), here for 4 heads of 16 rows.
    let data_start = out.len() as u64
        - g.tensors
            .iter()
            .map(|t| {
                gguf_writer::align(t.offset + t.elements() * if t.ggml_type == 1 { 2 } else { 4 })
            })
            .max()
            .unwrap();
    let q = source_f32(&files, "model.layers.0.self_attn.q_proj.weight");
    let q_at = (data_start + t("blk.0.attn_q.weight").offset) as usize;
    for r in 0..64 {
        let src = super::source::permuted_row(r, 64, 4);
        let off = q_at + r * 64 * 2;
        assert_eq!(
            out[off..off + 2],
            f32_to_f16(q[src * 64]).to_le_bytes(),
            "row {r}"
        );
    }

    let (_out_dir, runner, _warnings) = load_decoder(&out);

    let tokens = runner.tokenize("hello world", true, false).unwrap();
    eprintln!("tokens of \"hello world\": {tokens:?}");
    assert!(!tokens.is_empty());
    // The BOS is prepended, then the two merged words.
    assert_eq!(tokens, vec![n_vocab as i32 - 2, 256 + 3, 256 + 8]);
    assert_eq!(runner.detokenize(&tokens[1..]), "hello world");

    let want = reference_greedy(&files, Arch::Llama, &tokens, 5);
    let generated = generate_greedy(&runner, tokens, 5);
    assert_eq!(generated.len(), 5);
    assert_eq!(generated, want, "llama.cpp vs the reference forward pass");
}

/// Reads an F32 tensor of a converted GGUF.
pub(super) fn gguf_f32(out: &[u8], g: &Gguf, name: &str) -> Vec<f32> {
    let t = g.tensors.iter().find(|t| t.name == name).unwrap();
    assert_eq!(t.ggml_type, 0, "{name} is not F32");
    let data_start = out.len() as u64
        - g.tensors
            .iter()
            .map(|t| {
                gguf_writer::align(t.offset + t.elements() * if t.ggml_type == 1 { 2 } else { 4 })
            })
            .max()
            .unwrap();
    let at = (data_start + t.offset) as usize;
    out[at..at + 4 * t.elements() as usize]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Sets `rope_scaling` in a tiny decoder's config.json.
fn set_rope_scaling(files: &Files, scaling: serde_json::Value) {
    let path = &files["config.json"];
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    config["rope_scaling"] = scaling;
    std::fs::write(path, config.to_string()).unwrap();
}

/// Rewrites a tiny decoder's `model.safetensors` with the query and key
/// weights multiplied by `by`, which sharpens attention enough for RoPE
/// scaling to change the tokens (the plain tiny model attends almost
/// uniformly).
fn sharpen_attention(files: &Files, by: f32) {
    let bytes = std::fs::read(&files["model.safetensors"]).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = header
        .iter()
        .filter(|(name, _)| *name != "__metadata__")
        .map(|(name, info)| {
            let shape = info["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let scale = if name.ends_with("q_proj.weight") || name.ends_with("k_proj.weight") {
                by
            } else {
                1.0
            };
            let data = source_f32(files, name)
                .into_iter()
                .flat_map(|v| (v * scale).to_le_bytes())
                .collect();
            (name.clone(), shape, data)
        })
        .collect();
    let refs: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, s, d)| (n.as_str(), "F32", s.clone(), d.clone()))
        .collect();
    write_safetensors(&files["model.safetensors"], &refs);
}

/// A prompt of 40 tokens, long enough for RoPE scaling to change the
/// attention of the tiny models (ids below 256 are byte tokens).
fn long_prompt() -> Vec<i32> {
    (0..40).map(|i| (i * 37 + 11) % 250).collect()
}

#[test]
fn converts_llama3_rope_scaling_to_rope_freqs() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = tiny_llama(dir.path());
    sharpen_attention(&files, 4.0);
    // An original context of 64 puts the boundaries of the scaled band at
    // wavelengths 16 and 64, inside the tiny model's range (6.3 to 19869
    // for head size 16 and base 10000), so all three cases occur.
    set_rope_scaling(
        &files,
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}),
    );
    let out = run(&files).unwrap();
    let g = Gguf::parse(&out, true).unwrap();
    // No scaling type is written: the tensor carries it.
    assert!(g.get("llama.rope.scaling.type").is_none());
    assert_eq!(g.tensors.len(), 3 + 2 * 9 + 1);
    let factors = gguf_f32(&out, &g, "rope_freqs.weight");
    // Wavelength 2π·10000^(i/8): 6.3 keeps its frequency; 19.9 and 62.8
    // are blended with smooth = (64/λ − 1)/3; the rest are divided by 8.
    let blend = |wavelen: f64| {
        let smooth = (64.0 / wavelen - 1.0) / 3.0;
        (1.0 / ((1.0 - smooth) / 8.0 + smooth)) as f32
    };
    let pi2 = 2.0 * std::f64::consts::PI;
    let want = [
        1.0,
        blend(pi2 * 10f64.sqrt()),
        blend(pi2 * 10.0),
        8.0,
        8.0,
        8.0,
        8.0,
        8.0,
    ];
    for (got, want) in factors.iter().zip(want) {
        assert!((got - want).abs() < 1e-4, "{factors:?} vs {want:?}");
    }
    assert_eq!(factors.len(), 8);

    let prompt = long_prompt();
    let want = reference_greedy_scaled(&files, Arch::Llama, &prompt, 5, &factors);
    // The test only means something if the scaling changes the tokens.
    assert_ne!(
        want,
        reference_greedy(&files, Arch::Llama, &prompt, 5),
        "the llama3 scaling does not change the tiny model's tokens"
    );
    let (_out_dir, runner, warnings) = load_decoder(&out);
    if let Some(warnings) = warnings {
        assert!(warnings.is_empty(), "llama.cpp warned: {warnings:?}");
    }
    let generated = generate_greedy(&runner, prompt, 5);
    assert_eq!(generated, want, "llama.cpp vs the reference forward pass");
}

#[test]
fn converts_linear_rope_scaling_for_llama() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = tiny_llama(dir.path());
    sharpen_attention(&files, 4.0);
    set_rope_scaling(&files, json!({"type": "linear", "factor": 4.0}));
    let out = run(&files).unwrap();
    let g = Gguf::parse(&out, true).unwrap();
    assert_eq!(
        g.get("llama.rope.scaling.type"),
        Some(&Value::String("linear".into()))
    );
    assert_eq!(g.get("llama.rope.scaling.factor"), Some(&Value::F32(4.0)));
    assert!(!g.tensors.iter().any(|t| t.name == "rope_freqs.weight"));
    // Linear scaling divides every frequency by the factor.
    let prompt = long_prompt();
    let want = reference_greedy_scaled(&files, Arch::Llama, &prompt, 5, &[4.0; 8]);
    assert_ne!(want, reference_greedy(&files, Arch::Llama, &prompt, 5));
    let (_out_dir, runner, _warnings) = load_decoder(&out);
    assert_eq!(generate_greedy(&runner, prompt, 5), want);
}

#[test]
fn refuses_other_rope_scalings_by_name() {
    for (arch, scaling) in [
        (Arch::Llama, json!({"rope_type": "yarn", "factor": 4.0})),
        (Arch::Llama, json!({"type": "dynamic", "factor": 2.0})),
        (Arch::Qwen2, json!({"rope_type": "llama3", "factor": 8.0})),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (files, _) = tiny_decoder(dir.path(), arch);
        set_rope_scaling(&files, scaling.clone());
        let err = run(&files).unwrap_err().to_string();
        let kind = scaling
            .get("rope_type")
            .or_else(|| scaling.get("type"))
            .and_then(serde_json::Value::as_str)
            .unwrap();
        assert!(err.contains(&format!("{kind:?} is not supported")), "{err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = tiny_llama(dir.path());
    set_rope_scaling(
        &files,
        json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
               "high_freq_factor": 4.0}),
    );
    assert!(run(&files)
        .unwrap_err()
        .to_string()
        .contains("low_freq_factor"));
}

/// Converts a tiny Qwen2 or Qwen3, checks the metadata and tensors that
/// differ from Llama's, and compares llama.cpp's greedy tokens with the
/// reference forward pass.
fn check_tiny_qwen(arch: Arch) {
    let dir = tempfile::tempdir().unwrap();
    let (files, n_vocab) = tiny_decoder(dir.path(), arch);
    assert_eq!(detect(&files).unwrap(), arch);
    let out = run(&files).unwrap();

    let name = arch.name();
    let g = Gguf::parse(&out, true).unwrap();
    assert_eq!(g.architecture(), Some(name));
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    let key = |k: &str| format!("{name}.{k}");
    let d = tiny_dims(arch);
    assert_eq!(get(&key("block_count")), Value::U32(2));
    assert_eq!(get(&key("embedding_length")), Value::U32(64));
    assert_eq!(get(&key("feed_forward_length")), Value::U32(128));
    assert_eq!(get(&key("context_length")), Value::U32(256));
    assert_eq!(get(&key("attention.head_count")), Value::U32(4));
    assert_eq!(get(&key("attention.head_count_kv")), Value::U32(2));
    assert_eq!(get(&key("rope.freq_base")), Value::F32(10000.0));
    assert!(g.get(&key("attention.layer_norm_rms_epsilon")).is_some());
    if arch == Arch::Qwen3 {
        assert_eq!(get(&key("attention.key_length")), Value::U32(d.hd as u32));
        assert_eq!(get(&key("attention.value_length")), Value::U32(d.hd as u32));
    }
    assert_eq!(get("tokenizer.ggml.model"), Value::String("gpt2".into()));
    assert_eq!(get("tokenizer.ggml.pre"), Value::String("qwen2".into()));
    assert_eq!(
        get("tokenizer.ggml.eos_token_id"),
        Value::U32(n_vocab as u32 - 1)
    );
    assert_eq!(
        get("tokenizer.ggml.padding_token_id"),
        Value::U32(n_vocab as u32 - 2)
    );
    assert!(g.get("tokenizer.chat_template").is_some());

    // 3 global tensors and 9 per layer, plus 3 biases (Qwen2) or 2 norms
    // (Qwen3) per layer.
    let extra = if arch == Arch::Qwen2 { 3 } else { 2 };
    assert_eq!(g.tensors.len(), 3 + 2 * (9 + extra));
    let t = |name: &str| g.tensors.iter().find(|t| t.name == name).unwrap();
    let (q, kv) = ((d.heads * d.hd) as u64, (d.kv_heads * d.hd) as u64);
    assert_eq!(t("blk.0.attn_q.weight").shape, vec![64, q]);
    assert_eq!(t("blk.1.attn_output.weight").shape, vec![q, 64]);
    if arch == Arch::Qwen2 {
        assert_eq!(t("blk.0.attn_q.bias").shape, vec![q]);
        assert_eq!(t("blk.1.attn_v.bias").shape, vec![kv]);
        assert_eq!(t("blk.1.attn_k.bias").ggml_type, 0);
    } else {
        assert_eq!(t("blk.0.attn_q_norm.weight").shape, vec![d.hd as u64]);
        assert_eq!(t("blk.1.attn_k_norm.weight").ggml_type, 0);
    }

    // The query rows are not permuted: row r of the GGUF is row r of the
    // source.
    let data_start = out.len() as u64
        - g.tensors
            .iter()
            .map(|t| {
                gguf_writer::align(t.offset + t.elements() * if t.ggml_type == 1 { 2 } else { 4 })
            })
            .max()
            .unwrap();
    let wq = source_f32(&files, "model.layers.0.self_attn.q_proj.weight");
    let q_at = (data_start + t("blk.0.attn_q.weight").offset) as usize;
    for r in 0..q as usize {
        let off = q_at + r * 64 * 2;
        assert_eq!(
            out[off..off + 2],
            f32_to_f16(wq[r * 64]).to_le_bytes(),
            "row {r}"
        );
    }

    let (_out_dir, runner, warnings) = load_decoder(&out);
    if let Some(warnings) = warnings {
        assert!(warnings.is_empty(), "llama.cpp warned: {warnings:?}");
    }
    let tokens = runner.tokenize("hello world", true, false).unwrap();
    eprintln!("tokens of \"hello world\": {tokens:?}");
    // Qwen adds no BOS: just the two merged words.
    assert_eq!(tokens, vec![256 + 3, 256 + 8]);
    assert_eq!(runner.detokenize(&tokens), "hello world");

    let want = reference_greedy(&files, arch, &tokens, 5);
    let generated = generate_greedy(&runner, tokens, 5);
    assert_eq!(generated.len(), 5);
    assert_eq!(generated, want, "llama.cpp vs the reference forward pass");
}

#[test]
fn converts_a_tiny_qwen2_and_generates() {
    check_tiny_qwen(Arch::Qwen2);
}

#[test]
fn converts_a_tiny_qwen3_and_generates() {
    check_tiny_qwen(Arch::Qwen3);
}

#[test]
fn refuses_unigram_and_broken_sentencepiece_tokenizers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = tiny_llama(dir.path());
    // A tokenizer.model that is not a SentencePiece protobuf.
    let tokenizer = files.remove("tokenizer.json").unwrap();
    files.insert("tokenizer.model".into(), tokenizer.clone());
    let err = run(&files).unwrap_err();
    assert!(
        matches!(&err, Error::Tokenizer(m) if m.contains("tokenizer.model")),
        "{err}"
    );
    std::fs::write(
        &tokenizer,
        json!({"model": {"type": "Unigram", "vocab": []}}).to_string(),
    )
    .unwrap();
    files.remove("tokenizer.model");
    files.insert("tokenizer.json".into(), tokenizer);
    let err = run(&files).unwrap_err();
    assert!(
        matches!(&err, Error::Tokenizer(m) if m.contains("Unigram")),
        "{err}"
    );
}

#[test]
fn tied_embeddings_leave_out_the_output_matrix() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = tiny_llama(dir.path());
    let path = &files["config.json"];
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    config["tie_word_embeddings"] = json!(true);
    config["architectures"] = json!(["MistralForCausalLM"]);
    std::fs::write(path, config.to_string()).unwrap();
    let out = run(&files).unwrap();
    let g = Gguf::parse(&out, true).unwrap();
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.tensors.len(), 2 + 2 * 9);
    assert!(g.tensors.iter().all(|t| t.name != "output.weight"));
}
