//! Tests of the whole conversion: a tiny synthetic BERT written on the fly
//! (always run), broken inputs, and the real all-MiniLM-L6-v2 checked
//! against sentence-transformers vectors through llama.cpp (only with
//! `HEARTH_TEST_MODELS`, since it needs the model and a llama.cpp load).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::json;

use super::source::f32_to_f16;
use super::*;
use crate::gguf::{Gguf, Value};

/// Writes a Safetensors file from (name, dtype, shape, raw bytes).
fn write_safetensors(path: &Path, tensors: &[(&str, &str, Vec<usize>, Vec<u8>)]) {
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
fn files_in(dir: &Path) -> Files {
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

fn run(files: &Files) -> Result<Vec<u8>, Error> {
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
    let check = |config: serde_json::Value, want: Option<Arch>| {
        assert_eq!(detect_json(&config).ok(), want, "{config}");
    };
    check(json!({"architectures": ["BertModel"]}), Some(Arch::Bert));
    check(
        json!({"architectures": ["BertForMaskedLM"]}),
        Some(Arch::Bert),
    );
    check(json!({"model_type": "bert"}), Some(Arch::Bert));
    check(json!({"architectures": ["LlamaForCausalLM"]}), None);
    check(json!({}), None);
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

/// Collects llama.cpp's warnings while the MiniLM test loads its output.
struct Warnings(Mutex<Vec<String>>);

impl log::Log for Warnings {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Warn
    }
    fn log(&self, r: &log::Record) {
        if r.level() <= log::Level::Warn && r.target() == "llama.cpp" {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(r.args().to_string());
        }
    }
    fn flush(&self) {}
}

static WARNINGS: Warnings = Warnings(Mutex::new(Vec::new()));

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
    let Some(models) = std::env::var_os("HEARTH_TEST_MODELS") else {
        eprintln!("HEARTH_TEST_MODELS is not set; skipping");
        return;
    };
    let dir = Path::new(&models).join("all-minilm-l6-v2");
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

    let logging = log::set_logger(&WARNINGS).is_ok();
    if logging {
        log::set_max_level(log::LevelFilter::Warn);
    }
    let params = crate::engine::LoadParams {
        embeddings: true,
        n_parallel: 1,
        n_ctx: 512,
        n_batch: 512,
        n_threads: 1,
        use_mmap: true,
    };
    let runner = crate::engine::Runner::load(
        &out_path,
        params,
        Arc::new(crate::engine::CpuBudget::new(1)),
    )
    .unwrap();
    let warnings = std::mem::take(&mut *WARNINGS.0.lock().unwrap());

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
    if logging {
        eprintln!("llama.cpp warnings while loading: {warnings:?}");
        assert!(warnings.is_empty(), "llama.cpp warned: {warnings:?}");
    }
    assert!(worst >= 0.999, "worst cosine {worst}");
}
