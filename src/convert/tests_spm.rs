//! Tests of the SentencePiece decoders (Gemma 3, Phi-3, Gemma 2, Gemma):
//! tiny random-weight checkpoints written on the fly with the real Gemma
//! vocabulary (taken from the Gemma 3 270M GGUF of `HEARTH_TEST_MODELS`
//! and re-encoded as a `tokenizer.model` or a `tokenizer.json`), converted,
//! loaded in llama.cpp and checked against a plain-Rust forward pass of
//! the original weights, plus the tokenizer against the original GGUF's.
//! Without the test models they fail: the vocabulary is real data that
//! only the test-model script provides.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::json;

use super::source::{f16_to_f32, f32_to_f16};
use super::tests::{
    files_in, generate_greedy, gguf_f32, load_decoder, random_f32s, run, tiny_llama,
    write_safetensors,
};
use super::*;
use crate::gguf::{Gguf, Value};

/// The real Gemma vocabulary: tokens, scores and types.
struct RealVocab {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
}

/// The Gemma 3 270M GGUF of the test models (a missing one fails the test).
fn gemma_gguf() -> PathBuf {
    crate::test_models::path("gemma3-270m-q4_k_m.gguf")
}

fn real_vocab(path: &Path) -> RealVocab {
    let g = Gguf::open(path, true).unwrap();
    let array = |key: &str| -> Vec<Value> {
        g.get(key)
            .and_then(Value::as_array)
            .and_then(|a| a.values.clone())
            .unwrap_or_else(|| panic!("no {key}"))
    };
    RealVocab {
        tokens: array("tokenizer.ggml.tokens")
            .into_iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect(),
        scores: array("tokenizer.ggml.scores")
            .into_iter()
            .map(|v| match v {
                Value::F32(f) => f,
                other => panic!("score {other:?}"),
            })
            .collect(),
        types: array("tokenizer.ggml.token_type")
            .into_iter()
            .map(|v| match v {
                Value::I32(t) => t,
                other => panic!("type {other:?}"),
            })
            .collect(),
    }
}

const TEMPLATE: &str = "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}";

/// Writes `tokenizer.model` built from the real vocabulary, and a
/// `tokenizer_config.json` naming Gemma's special tokens.
fn write_sentencepiece(dir: &Path, vocab: &RealVocab) {
    let pieces: Vec<(String, f32, i32)> = vocab
        .tokens
        .iter()
        .zip(&vocab.scores)
        .zip(&vocab.types)
        .map(|((t, s), ty)| (t.clone(), *s, *ty))
        .collect();
    // Gemma's trainer spec: unk 3, bos 2, eos 1, pad 0.
    let model = sentencepiece::encode_model(&pieces, [3, 2, 1, 0], false);
    std::fs::write(dir.join("tokenizer.model"), model).unwrap();
    write_tokenizer_config(dir);
}

fn write_tokenizer_config(dir: &Path) {
    std::fs::write(
        dir.join("tokenizer_config.json"),
        json!({"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>",
               "unk_token": "<unk>", "add_bos_token": true, "add_eos_token": false,
               "chat_template": TEMPLATE})
        .to_string(),
    )
    .unwrap();
}

/// Writes the real vocabulary as Hugging Face's `tokenizer.json` spells a
/// SentencePiece BPE: a BPE model with byte fallback whose merges are every
/// split of a normal token into two normal tokens, ordered by the merged
/// token's score (what `transformers`' SentencePiece extractor does), and
/// the control and user-defined tokens as added tokens.
fn write_hf_tokenizer(dir: &Path, vocab: &RealVocab) {
    const NORMAL: i32 = 1;
    let index: HashMap<&str, usize> = vocab
        .tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| vocab.types[*i] == NORMAL)
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    let mut merges: Vec<(usize, usize, usize)> = Vec::new();
    for (i, t) in vocab.tokens.iter().enumerate() {
        if vocab.types[i] != NORMAL {
            continue;
        }
        for (at, _) in t.char_indices().skip(1) {
            if let (Some(&l), Some(&r)) = (index.get(&t[..at]), index.get(&t[at..])) {
                merges.push((i, l, r));
            }
        }
    }
    merges.sort_by(|a, b| {
        vocab.scores[b.0]
            .total_cmp(&vocab.scores[a.0])
            .then((a.1, a.2).cmp(&(b.1, b.2)))
    });
    let merges: Vec<serde_json::Value> = merges
        .iter()
        .map(|&(_, l, r)| json!([vocab.tokens[l], vocab.tokens[r]]))
        .collect();
    let mut map = serde_json::Map::new();
    for (i, t) in vocab.tokens.iter().enumerate() {
        map.insert(t.clone(), json!(i));
    }
    let added: Vec<serde_json::Value> = (0..vocab.tokens.len())
        .filter(|&i| matches!(vocab.types[i], 3 | 4))
        .map(|i| json!({"id": i, "content": vocab.tokens[i], "special": vocab.types[i] == 3}))
        .collect();
    std::fs::write(
        dir.join("tokenizer.json"),
        json!({
            "version": "1.0",
            "added_tokens": added,
            "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
            "pre_tokenizer": null,
            "model": {"type": "BPE", "vocab": map, "merges": merges, "byte_fallback": true,
                      "unk_token": "<unk>", "fuse_unk": true}
        })
        .to_string(),
    )
    .unwrap();
    write_tokenizer_config(dir);
}

/// Which tiny decoder to build.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Family {
    Gemma,
    Gemma2,
    Gemma3,
    Phi3,
}

/// The shape and options of a tiny decoder.
struct Tiny {
    family: Family,
    e: usize,
    f: usize,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    layers: usize,
    eps: f32,
    rope_theta: f32,
    /// Gemma 3's base for the sliding-window layers.
    rope_local: f32,
    /// The window of the sliding layers (Gemma 2 and 3), and which layers
    /// slide: layer `i` slides when `i % pattern < pattern - 1`.
    window: Option<(usize, usize)>,
    attn_cap: Option<f32>,
    final_cap: Option<f32>,
    /// The range of the random matrices. Larger ones make attention sharp
    /// enough for RoPE to matter, and keep Gemma's √hidden-scaled
    /// embedding from drowning the layers' output (Gemma 3's post-norms
    /// do that on their own); otherwise every token predicts itself.
    scale: f32,
    /// How the checkpoint is laid out.
    layout: Layout,
}

/// Checkpoint layouts of Gemma 3.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    /// `Gemma3ForCausalLM`: a flat config, `model.*` tensors.
    CausalLm,
    /// `Gemma3ForConditionalGeneration` as Google published Gemma 3 4B to
    /// 27B: `text_config` leaving out what has defaults, tensors under
    /// `language_model.model.*` next to `vision_tower.*` and
    /// `multi_modal_projector.*`.
    Multimodal,
    /// The same as newer `transformers` save it: `model.language_model.*`,
    /// `model.vision_tower.*`, `model.multi_modal_projector.*`.
    MultimodalNew,
}

fn tiny(family: Family) -> Tiny {
    let gemma = family != Family::Phi3;
    Tiny {
        family,
        e: 64,
        f: 128,
        heads: 4,
        kv_heads: 2,
        // Gemma's query width differs from its hidden size; Phi-3's may not.
        hd: if gemma { 32 } else { 16 },
        layers: 2,
        eps: if gemma { 1e-6 } else { 1e-5 },
        rope_theta: if family == Family::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        },
        // Not llama.cpp's default, so a lost `rope.freq_base_swa` shows.
        rope_local: 20_000.0,
        // A window of 4 over a prompt of about ten tokens, with layer 0
        // sliding and layer 1 global.
        window: matches!(family, Family::Gemma2 | Family::Gemma3).then_some((4, 2)),
        // An attention cap low enough to change the scores. The final cap
        // is monotonic, so no cap can change greedy tokens; Gemma 2's own.
        attn_cap: (family == Family::Gemma2).then_some(1.0),
        final_cap: (family == Family::Gemma2).then_some(30.0),
        scale: if family != Family::Gemma3 { 0.3 } else { 0.1 },
        layout: Layout::CausalLm,
    }
}

/// Writes `config.json` and `model.safetensors` of a tiny decoder with
/// the real vocabulary size; returns the tensors as the GGUF holds them
/// (matrices rounded to F16, norm weights with Gemma's +1 applied), for
/// the reference forward pass.
fn write_tiny(dir: &Path, t: &Tiny, n_vocab: usize) -> HashMap<String, Vec<f32>> {
    let (e, f, hd) = (t.e, t.f, t.hd);
    let (q, kv) = (t.heads * hd, t.kv_heads * hd);
    let gemma = t.family != Family::Phi3;
    let (arch, model_type) = match t.family {
        Family::Gemma => ("GemmaForCausalLM", "gemma"),
        Family::Gemma2 => ("Gemma2ForCausalLM", "gemma2"),
        Family::Gemma3 => ("Gemma3ForCausalLM", "gemma3_text"),
        Family::Phi3 => ("Phi3ForCausalLM", "phi3"),
    };
    let mut config = json!({
        // Not "tiny-phi3": llama.cpp gives tokens of models named Phi-3
        // special attributes, and fails to load when Phi-3's `</s>` and
        // `<s>` are missing, as they are from the Gemma vocabulary here.
        "_name_or_path": format!("test/tiny-{}", model_type.replace("phi3", "p3")),
        "architectures": [arch],
        "model_type": model_type, "hidden_size": e, "intermediate_size": f,
        "num_hidden_layers": t.layers, "num_attention_heads": t.heads,
        "num_key_value_heads": t.kv_heads, "rms_norm_eps": t.eps,
        "rope_theta": t.rope_theta, "max_position_embeddings": 256,
        "vocab_size": n_vocab, "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    });
    if gemma {
        config["head_dim"] = json!(hd);
        config["hidden_activation"] = json!("gelu_pytorch_tanh");
        config["query_pre_attn_scalar"] = json!(hd);
        config["tie_word_embeddings"] = json!(true);
    } else {
        config["hidden_act"] = json!("silu");
        config["original_max_position_embeddings"] = json!(256);
        config["rope_scaling"] = json!(null);
        config["sliding_window"] = json!(null);
        config["tie_word_embeddings"] = json!(true);
    }
    if let Some((window, pattern)) = t.window {
        config["sliding_window"] = json!(window);
        if t.family == Family::Gemma3 {
            config["sliding_window_pattern"] = json!(pattern);
            config["rope_local_base_freq"] = json!(t.rope_local);
        }
    }
    if let Some(cap) = t.attn_cap {
        config["attn_logit_softcapping"] = json!(cap);
    }
    if let Some(cap) = t.final_cap {
        config["final_logit_softcapping"] = json!(cap);
    }
    if t.layout != Layout::CausalLm {
        config = multimodal_config(config);
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let hf_name = |name: &str| match t.layout {
        Layout::CausalLm => name.to_string(),
        Layout::Multimodal => format!("language_model.{name}"),
        Layout::MultimodalNew => name.replacen("model.", "model.language_model.", 1),
    };

    let mut shapes: Vec<(String, Vec<usize>)> = vec![("model.norm.weight".into(), vec![e])];
    for i in 0..t.layers {
        let l = format!("model.layers.{i}");
        let mut add = |part: &str, shape: Vec<usize>| shapes.push((format!("{l}.{part}"), shape));
        add("input_layernorm.weight", vec![e]);
        add("post_attention_layernorm.weight", vec![e]);
        add("self_attn.o_proj.weight", vec![e, q]);
        add("mlp.down_proj.weight", vec![e, f]);
        if gemma {
            add("self_attn.q_proj.weight", vec![q, e]);
            add("self_attn.k_proj.weight", vec![kv, e]);
            add("self_attn.v_proj.weight", vec![kv, e]);
            add("mlp.gate_proj.weight", vec![f, e]);
            add("mlp.up_proj.weight", vec![f, e]);
        } else {
            add("self_attn.qkv_proj.weight", vec![q + 2 * kv, e]);
            add("mlp.gate_up_proj.weight", vec![2 * f, e]);
        }
        if matches!(t.family, Family::Gemma2 | Family::Gemma3) {
            add("pre_feedforward_layernorm.weight", vec![e]);
            add("post_feedforward_layernorm.weight", vec![e]);
        }
        if t.family == Family::Gemma3 {
            add("self_attn.q_norm.weight", vec![hd]);
            add("self_attn.k_norm.weight", vec![hd]);
        }
    }
    let mut gguf_view = HashMap::new();
    let mut raw: Vec<(String, &str, Vec<usize>, Vec<u8>)> = Vec::new();
    // The embedding is F16 in the checkpoint: half the bytes of F32 for a
    // 262k-row matrix, and exact in the F16 GGUF.
    let embed: Vec<u16> = random_f32s(n_vocab * e, 7, 0.1)
        .chunks_exact(4)
        .map(|c| f32_to_f16(f32::from_le_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    gguf_view.insert(
        "model.embed_tokens.weight".to_string(),
        embed.iter().map(|&h| f16_to_f32(h)).collect(),
    );
    raw.push((
        hf_name("model.embed_tokens.weight"),
        "F16",
        vec![n_vocab, e],
        embed.iter().flat_map(|h| h.to_le_bytes()).collect(),
    ));
    for (i, (name, shape)) in shapes.iter().enumerate() {
        let n = shape.iter().product();
        let seed = i as u64 + 11;
        let values: Vec<f32> = if shape.len() == 1 {
            // Norm weights spread around 0 for Gemma (applied as 1 + w)
            // and around 1 for Phi-3, so a lost +1 or a misplaced norm
            // changes the result.
            random_f32s(n, seed, 0.5)
                .chunks_exact(4)
                .map(|c| {
                    f32::from_le_bytes([c[0], c[1], c[2], c[3]]) + if gemma { 0.0 } else { 1.0 }
                })
                .collect()
        } else {
            random_f32s(n, seed, t.scale)
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let view: Vec<f32> = if shape.len() == 1 {
            values
                .iter()
                .map(|v| v + if gemma { 1.0 } else { 0.0 })
                .collect()
        } else {
            values.iter().map(|&v| f16_to_f32(f32_to_f16(v))).collect()
        };
        gguf_view.insert(name.clone(), view);
        raw.push((
            hf_name(name),
            "F32",
            shape.clone(),
            values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ));
    }
    if t.layout != Layout::CausalLm {
        // A tiny SigLIP tower and projector (see [`tiny_vision`]), which
        // the text conversion drops and the projector conversion writes.
        let prefix = if t.layout == Layout::MultimodalNew {
            "model."
        } else {
            ""
        };
        for (name, shape, values) in tiny_vision(e) {
            raw.push((format!("{prefix}{name}"), "F32", shape, values));
        }
    }
    let refs: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = raw
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    write_safetensors(&dir.join("model.safetensors"), &refs);
    gguf_view
}

/// Nests a tiny Gemma 3's flat config the way Gemma 3 4B's `config.json`
/// does: the text model under `text_config`, without the keys whose
/// `Gemma3TextConfig` defaults apply (the tiny model's eps and RoPE base
/// are the defaults; its context length becomes 131072), token ids and
/// the name at the top level with a vision config beside.
fn multimodal_config(flat: serde_json::Value) -> serde_json::Value {
    let mut text = flat.as_object().unwrap().clone();
    for key in [
        "_name_or_path",
        "architectures",
        "rms_norm_eps",
        "rope_theta",
        "max_position_embeddings",
        "vocab_size",
        "hidden_activation",
        "tie_word_embeddings",
        "bos_token_id",
        "eos_token_id",
        "pad_token_id",
    ] {
        text.remove(key);
    }
    text.insert("model_type".into(), json!("gemma3_text"));
    json!({
        "_name_or_path": "test/tiny-gemma3-mm",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": text,
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": 32,
                          "intermediate_size": 64, "num_attention_heads": 2,
                          "num_hidden_layers": 1, "patch_size": 8, "image_size": 64,
                          "vision_use_head": false},
        "boi_token_index": 255_999, "eoi_token_index": 256_000,
        "image_token_index": 262_144, "mm_tokens_per_image": 16,
        "bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0
    })
}

/// The tensors of a tiny SigLIP vision tower and Gemma 3 projector under
/// their Hugging Face names, F32 little-endian bytes: width 32, one layer,
/// 64x64 images in 8x8 patches, projected to the text width `e`. The same
/// shape as the hand-written projector of `tests/vision.rs`.
fn tiny_vision(e: usize) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let (w, ff, patch, patches) = (32, 64, 8, 64);
    let tower = "vision_tower.vision_model";
    let mut shapes: Vec<(String, Vec<usize>)> = vec![
        (
            format!("{tower}.embeddings.patch_embedding.weight"),
            vec![w, 3, patch, patch],
        ),
        (format!("{tower}.embeddings.patch_embedding.bias"), vec![w]),
        (
            format!("{tower}.embeddings.position_embedding.weight"),
            vec![patches, w],
        ),
        (format!("{tower}.post_layernorm.weight"), vec![w]),
        (format!("{tower}.post_layernorm.bias"), vec![w]),
        (
            "multi_modal_projector.mm_input_projection_weight".into(),
            vec![w, e],
        ),
        (
            "multi_modal_projector.mm_soft_emb_norm.weight".into(),
            vec![w],
        ),
    ];
    let l = format!("{tower}.encoder.layers.0");
    for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        shapes.push((format!("{l}.self_attn.{m}.weight"), vec![w, w]));
        shapes.push((format!("{l}.self_attn.{m}.bias"), vec![w]));
    }
    for m in ["layer_norm1", "layer_norm2"] {
        shapes.push((format!("{l}.{m}.weight"), vec![w]));
        shapes.push((format!("{l}.{m}.bias"), vec![w]));
    }
    shapes.push((format!("{l}.mlp.fc1.weight"), vec![ff, w]));
    shapes.push((format!("{l}.mlp.fc1.bias"), vec![ff]));
    shapes.push((format!("{l}.mlp.fc2.weight"), vec![w, ff]));
    shapes.push((format!("{l}.mlp.fc2.bias"), vec![w]));
    shapes
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| {
            let n = shape.iter().product();
            (name, shape, random_f32s(n, 500 + i as u64, 0.1))
        })
        .collect()
}

/// y = W x for a row-major W of `rows` rows.
fn matvec(m: &[f32], x: &[f32], rows: usize) -> Vec<f32> {
    (0..rows)
        .map(|r| {
            m[r * x.len()..(r + 1) * x.len()]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum()
        })
        .collect()
}

/// RMS norm times `weight` (already holding Gemma's +1).
fn rms(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let s = 1.0 / (ms + eps).sqrt();
    x.iter().zip(weight).map(|(v, w)| v * s * w).collect()
}

fn gelu_tanh(x: f32) -> f32 {
    0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh())
}

/// Greedy decoding straight from the Hugging Face definition of each
/// family: Gemma's √hidden embedding scale, GELU MLP, sandwich norms,
/// q/k norms, soft-capping and sliding windows; Phi-3's fused projections
/// (q, k, v rows in that order; gate rows before up rows) and SiLU.
fn reference_greedy(t: &Tiny, w: &HashMap<String, Vec<f32>>, prompt: &[i32], n: usize) -> Vec<i32> {
    let (e, f, hd) = (t.e, t.f, t.hd);
    let (q_w, kv_w) = (t.heads * hd, t.kv_heads * hd);
    let gemma = t.family != Family::Phi3;
    let later = matches!(t.family, Family::Gemma2 | Family::Gemma3);
    let get = |name: &str| w.get(name).unwrap_or_else(|| panic!("no {name}"));
    let embed = get("model.embed_tokens.weight");
    let n_vocab = embed.len() / e;
    let rope = |v: &mut [f32], pos: usize, base: f32| {
        for head in v.chunks_mut(hd) {
            for i in 0..hd / 2 {
                let freq = base.powf(-((2 * i) as f32) / hd as f32);
                let (sin, cos) = (pos as f32 * freq).sin_cos();
                let (a, b) = (head[i], head[i + hd / 2]);
                head[i] = a * cos - b * sin;
                head[i + hd / 2] = b * cos + a * sin;
            }
        }
    };
    let mut tokens = prompt.to_vec();
    let mut generated = Vec::new();
    for _ in 0..n {
        let scale = if gemma { (e as f32).sqrt() } else { 1.0 };
        let mut xs: Vec<Vec<f32>> = tokens
            .iter()
            .map(|&tok| {
                embed[tok as usize * e..(tok as usize + 1) * e]
                    .iter()
                    .map(|v| v * scale)
                    .collect()
            })
            .collect();
        for layer in 0..t.layers {
            let l = format!("model.layers.{layer}");
            let p = |part: &str| get(&format!("{l}.{part}"));
            let sliding = t
                .window
                .filter(|&(_, pattern)| layer % pattern < pattern - 1)
                .map(|(window, _)| window);
            let base = if t.family == Family::Gemma3 && sliding.is_some() {
                t.rope_local
            } else {
                t.rope_theta
            };
            let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
            for (pos, x) in xs.iter().enumerate() {
                let h = rms(x, p("input_layernorm.weight"), t.eps);
                let (mut q, mut k, v) = if gemma {
                    (
                        matvec(p("self_attn.q_proj.weight"), &h, q_w),
                        matvec(p("self_attn.k_proj.weight"), &h, kv_w),
                        matvec(p("self_attn.v_proj.weight"), &h, kv_w),
                    )
                } else {
                    let qkv = matvec(p("self_attn.qkv_proj.weight"), &h, q_w + 2 * kv_w);
                    (
                        qkv[..q_w].to_vec(),
                        qkv[q_w..q_w + kv_w].to_vec(),
                        qkv[q_w + kv_w..].to_vec(),
                    )
                };
                if t.family == Family::Gemma3 {
                    let (qn, kn) = (p("self_attn.q_norm.weight"), p("self_attn.k_norm.weight"));
                    for head in q.chunks_mut(hd) {
                        let normed = rms(head, qn, t.eps);
                        head.copy_from_slice(&normed);
                    }
                    for head in k.chunks_mut(hd) {
                        let normed = rms(head, kn, t.eps);
                        head.copy_from_slice(&normed);
                    }
                }
                rope(&mut q, pos, base);
                rope(&mut k, pos, base);
                qs.push(q);
                ks.push(k);
                vs.push(v);
            }
            for (pos, x) in xs.iter_mut().enumerate() {
                let mut att = vec![0f32; q_w];
                for h in 0..t.heads {
                    let kvh = h / (t.heads / t.kv_heads);
                    let q = &qs[pos][h * hd..(h + 1) * hd];
                    let first = sliding.map_or(0, |window| (pos + 1).saturating_sub(window));
                    let scores: Vec<f32> = (first..=pos)
                        .map(|kp| {
                            let k = &ks[kp][kvh * hd..(kvh + 1) * hd];
                            let s = q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>()
                                / (hd as f32).sqrt();
                            t.attn_cap.map_or(s, |cap| (s / cap).tanh() * cap)
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f32::MIN, f32::max);
                    let exps: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                    let sum: f32 = exps.iter().sum();
                    for (i, ex) in exps.iter().enumerate() {
                        for d in 0..hd {
                            att[h * hd + d] += ex / sum * vs[first + i][kvh * hd + d];
                        }
                    }
                }
                let mut o = matvec(p("self_attn.o_proj.weight"), &att, e);
                if later {
                    o = rms(&o, p("post_attention_layernorm.weight"), t.eps);
                }
                x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
                let ffn_norm = if later {
                    p("pre_feedforward_layernorm.weight")
                } else {
                    p("post_attention_layernorm.weight")
                };
                let h = rms(x, ffn_norm, t.eps);
                let act: Vec<f32> = if gemma {
                    let g = matvec(p("mlp.gate_proj.weight"), &h, f);
                    let u = matvec(p("mlp.up_proj.weight"), &h, f);
                    g.iter().zip(&u).map(|(g, u)| gelu_tanh(*g) * u).collect()
                } else {
                    let gu = matvec(p("mlp.gate_up_proj.weight"), &h, 2 * f);
                    gu[..f]
                        .iter()
                        .zip(&gu[f..])
                        .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                        .collect()
                };
                let mut d = matvec(p("mlp.down_proj.weight"), &act, e);
                if later {
                    d = rms(&d, p("post_feedforward_layernorm.weight"), t.eps);
                }
                x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
            }
        }
        let last = rms(&xs[xs.len() - 1], get("model.norm.weight"), t.eps);
        let mut logits = matvec(embed, &last, n_vocab);
        if let Some(cap) = t.final_cap {
            logits.iter_mut().for_each(|v| *v = (*v / cap).tanh() * cap);
        }
        let best = (0..n_vocab)
            .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
            .unwrap() as i32;
        generated.push(best);
        tokens.push(best);
    }
    generated
}

/// Strings whose ids the converted vocabulary must give as the original
/// does: spaces, newlines, digits, accents, CJK, emoji (byte fallback) and
/// Gemma's turn markers.
const SAMPLES: [&str; 6] = [
    "The quick brown fox jumps over the lazy dog.",
    "  leading spaces,\n\nnewlines\tand tabs  ",
    "naïve café — 日本語のテキスト 🙂🦀",
    "<start_of_turn>user\nWhat is 1234567 + 89?<end_of_turn>\n",
    "fn main() { println!(\"{}\", x.unwrap_or(0)); }",
    "\u{0}\u{7f} odd bytes",
];

/// Tokenizes [`SAMPLES`] with llama.cpp, with and without special-token
/// parsing.
fn tokenize_all(runner: &crate::engine::Runner) -> Vec<Vec<i32>> {
    SAMPLES
        .iter()
        .flat_map(|s| {
            [
                runner.tokenize(s, true, true).unwrap(),
                runner.tokenize(s, false, false).unwrap(),
            ]
        })
        .collect()
}

/// The original Gemma GGUF's ids for [`SAMPLES`].
fn original_ids(path: &Path) -> Vec<Vec<i32>> {
    let params = crate::engine::LoadParams {
        n_ctx: 128,
        n_batch: 64,
        n_threads: 1,
        n_parallel: 1,
        embeddings: false,
        use_mmap: true,
        ..crate::engine::LoadParams::default()
    };
    let runner =
        crate::engine::Runner::load(path, params, Arc::new(crate::engine::CpuBudget::new(1)))
            .unwrap();
    tokenize_all(&runner)
}

/// Builds, converts and loads a tiny decoder of `family` with the real
/// vocabulary written by `tokenizer`; checks the metadata shared by all,
/// no warnings from llama.cpp, the tokenizer against the original GGUF's,
/// and the greedy tokens against the reference. Returns the GGUF.
fn check_family(family: Family, hf_tokenizer: bool) -> Gguf {
    check_tiny(tiny(family), hf_tokenizer)
}

/// [`check_family`] for a given tiny model.
fn check_tiny(t: Tiny, hf_tokenizer: bool) -> Gguf {
    let family = t.family;
    let original = gemma_gguf();
    let vocab = real_vocab(&original);
    let dir = tempfile::tempdir().unwrap();
    if hf_tokenizer {
        write_hf_tokenizer(dir.path(), &vocab);
    } else {
        write_sentencepiece(dir.path(), &vocab);
    }
    let weights = write_tiny(dir.path(), &t, vocab.tokens.len());
    let files = files_in(dir.path());
    let started = std::time::Instant::now();
    let out = run(&files).unwrap();
    eprintln!(
        "{family:?}: converted into {:.1} MB of GGUF in {:.2} s",
        out.len() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );

    let g = Gguf::parse(&out, true).unwrap();
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(get("tokenizer.ggml.model"), Value::String("llama".into()));
    assert_eq!(get("tokenizer.ggml.bos_token_id"), Value::U32(2));
    assert_eq!(get("tokenizer.ggml.eos_token_id"), Value::U32(1));
    assert_eq!(get("tokenizer.ggml.padding_token_id"), Value::U32(0));
    assert_eq!(get("tokenizer.ggml.unknown_token_id"), Value::U32(3));
    assert_eq!(get("tokenizer.ggml.add_bos_token"), Value::Bool(true));
    assert_eq!(get("tokenizer.ggml.add_eos_token"), Value::Bool(false));
    assert_eq!(
        get("tokenizer.chat_template"),
        Value::String(TEMPLATE.into())
    );
    let tokens = get("tokenizer.ggml.tokens");
    let tokens = tokens.as_array().unwrap().values.as_ref().unwrap();
    assert_eq!(tokens.len(), vocab.tokens.len());
    assert_eq!(tokens[1000], Value::String(vocab.tokens[1000].clone()));
    let types = get("tokenizer.ggml.token_type");
    let types = types.as_array().unwrap().values.as_ref().unwrap();
    if !hf_tokenizer {
        // The protobuf path carries tokens, scores and types over exactly.
        let scores = get("tokenizer.ggml.scores");
        let scores = scores.as_array().unwrap().values.as_ref().unwrap();
        for i in (0..vocab.tokens.len())
            .step_by(97)
            .chain([0, 3, 5, 107, 248])
        {
            assert_eq!(
                tokens[i],
                Value::String(vocab.tokens[i].clone()),
                "token {i}"
            );
            assert_eq!(scores[i], Value::F32(vocab.scores[i]), "score {i}");
            assert_eq!(types[i], Value::I32(vocab.types[i]), "type {i}");
        }
    }
    // Byte tokens stay byte tokens either way.
    assert_eq!(types[248], Value::I32(6));

    let (_out_dir, runner, warnings) = load_decoder(&out);
    if let Some(warnings) = warnings {
        assert!(warnings.is_empty(), "llama.cpp warned: {warnings:?}");
    }
    let got = tokenize_all(&runner);
    let want = original_ids(&original);
    for (i, (got, want)) in got.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "ids of {:?} (variant {})", SAMPLES[i / 2], i % 2);
    }
    let prompt = runner.tokenize(SAMPLES[0], true, false).unwrap();
    eprintln!("prompt ids: {prompt:?}");
    assert_eq!(prompt[0], 2, "BOS first");
    let expected = reference_greedy(&t, &weights, &prompt, 5);
    let generated = generate_greedy(&runner, prompt, 5);
    assert_eq!(
        generated, expected,
        "llama.cpp vs the reference forward pass"
    );
    g
}

#[test]
fn converts_a_tiny_gemma3_and_generates() {
    let g = check_family(Family::Gemma3, false);
    assert_eq!(g.architecture(), Some("gemma3"));
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(get("gemma3.attention.key_length"), Value::U32(32));
    assert_eq!(get("gemma3.attention.sliding_window"), Value::U32(4));
    assert_eq!(
        get("gemma3.attention.sliding_window_pattern"),
        Value::U32(2)
    );
    assert_eq!(get("gemma3.rope.freq_base"), Value::F32(1_000_000.0));
    assert_eq!(get("gemma3.rope.freq_base_swa"), Value::F32(20_000.0));
    assert_eq!(get("tokenizer.ggml.add_space_prefix"), Value::Bool(false));
    // Tied: no output matrix; 2 global tensors and 13 per layer.
    assert_eq!(g.tensors.len(), 2 + 2 * 13);
    let t = |name: &str| g.tensors.iter().find(|t| t.name == name).unwrap();
    assert_eq!(t("blk.1.attn_q_norm.weight").shape, vec![32]);
    assert_eq!(t("blk.1.post_ffw_norm.weight").ggml_type, 0);
    assert_eq!(t("blk.0.attn_q.weight").shape, vec![64, 128]);
}

/// Gemma 3 in the multimodal layout of Gemma 3 4B–27B converts to the
/// same text model: nested config with defaults, prefixed names, vision
/// tensors dropped; loads without warning and generates the reference's
/// tokens.
#[test]
fn converts_a_tiny_multimodal_gemma3_text_model() {
    let mut t = tiny(Family::Gemma3);
    t.layout = Layout::Multimodal;
    let g = check_tiny(t, false);
    assert_eq!(g.architecture(), Some("gemma3"));
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(get("general.name"), Value::String("tiny-gemma3-mm".into()));
    // Stated in text_config.
    assert_eq!(get("gemma3.attention.key_length"), Value::U32(32));
    assert_eq!(get("gemma3.attention.head_count"), Value::U32(4));
    assert_eq!(get("gemma3.attention.sliding_window"), Value::U32(4));
    assert_eq!(get("gemma3.rope.freq_base_swa"), Value::F32(20_000.0));
    // Gemma3TextConfig's defaults.
    assert_eq!(get("gemma3.context_length"), Value::U32(131_072));
    assert_eq!(get("gemma3.rope.freq_base"), Value::F32(1_000_000.0));
    assert_eq!(
        get("gemma3.attention.layer_norm_rms_epsilon"),
        Value::F32(1e-6)
    );
    // The text model only.
    assert_eq!(g.tensors.len(), 2 + 2 * 13);
    assert!(g.tensors.iter().all(|t| t.name.starts_with("blk.")
        || t.name == "token_embd.weight"
        || t.name == "output_norm.weight"));
}

/// Both multimodal layouts give the same GGUF.
#[test]
fn multimodal_gemma3_layouts_convert_alike() {
    let dir = |layout| {
        let dir = tempfile::tempdir().unwrap();
        // A small made-up vocabulary: the tokenizer is not under test.
        let n_vocab = 300;
        let pieces: Vec<(String, f32, i32)> = (0..n_vocab)
            .map(|i| (format!("t{i}"), -(i as f32), 1))
            .collect();
        let model = sentencepiece::encode_model(&pieces, [3, 2, 1, 0], false);
        std::fs::write(dir.path().join("tokenizer.model"), model).unwrap();
        let mut t = tiny(Family::Gemma3);
        t.layout = layout;
        write_tiny(dir.path(), &t, n_vocab);
        dir
    };
    let (old, new) = (dir(Layout::Multimodal), dir(Layout::MultimodalNew));
    let files = files_in(old.path());
    assert_eq!(detect(&files).unwrap(), Arch::Gemma3);
    let mut notes = Vec::new();
    let mut out = Vec::new();
    convert(&files, &mut out, &mut |s| notes.push(s.to_string())).unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("vision tower and projector go to the projector file")),
        "{notes:?}"
    );
    assert_eq!(out, run(&files_in(new.path())).unwrap());
    // A stray tensor outside the known prefixes is still refused.
    let mut flat = tiny(Family::Gemma3);
    flat.layout = Layout::CausalLm;
    let mixed = tempfile::tempdir().unwrap();
    write_tiny(mixed.path(), &flat, 300);
    std::fs::copy(
        old.path().join("config.json"),
        mixed.path().join("config.json"),
    )
    .unwrap();
    std::fs::copy(
        old.path().join("tokenizer.model"),
        mixed.path().join("tokenizer.model"),
    )
    .unwrap();
    let err = run(&files_in(mixed.path())).unwrap_err().to_string();
    assert!(err.contains("not a tensor of a gemma3 model"), "{err}");
}

/// A tiny multimodal Gemma 3 checkpoint with a made-up vocabulary, for
/// the tests that do not load the text model.
fn tiny_multimodal_dir(layout: Layout) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let n_vocab = 300;
    let pieces: Vec<(String, f32, i32)> = (0..n_vocab)
        .map(|i| (format!("t{i}"), -(i as f32), 1))
        .collect();
    let model = sentencepiece::encode_model(&pieces, [3, 2, 1, 0], false);
    std::fs::write(dir.path().join("tokenizer.model"), model).unwrap();
    let mut t = tiny(Family::Gemma3);
    t.layout = layout;
    write_tiny(dir.path(), &t, n_vocab);
    dir
}

/// The vision tower and projector of a multimodal Gemma 3 become a clip
/// GGUF with exactly the keys, tensor names and shapes of the projector
/// `tests/vision.rs` writes by hand (which llama.cpp's clip loader
/// accepts), at the tiny text width of 64; both checkpoint layouts give
/// the same file.
#[test]
fn converts_the_tiny_multimodal_gemma3_vision_projector() {
    let dir = tiny_multimodal_dir(Layout::Multimodal);
    let files = files_in(dir.path());
    assert!(has_projector(&files).unwrap());
    let mut out = Vec::new();
    let n = convert_projector(&files, &mut out, &mut |_| {}).unwrap();
    assert_eq!(n, out.len() as u64);
    let g = Gguf::parse(&out, true).unwrap();
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    let (w, ff, e, patch) = (32u64, 64u64, 64u64, 8u64);
    assert_eq!(g.architecture(), Some("clip"));
    assert_eq!(get("general.type"), Value::String("mmproj".into()));
    assert_eq!(get("clip.projector_type"), Value::String("gemma3".into()));
    assert_eq!(get("clip.has_vision_encoder"), Value::Bool(true));
    assert_eq!(get("clip.use_gelu"), Value::Bool(true));
    for (key, want) in [
        ("clip.vision.embedding_length", w),
        ("clip.vision.feed_forward_length", ff),
        ("clip.vision.block_count", 1),
        ("clip.vision.projection_dim", e),
        ("clip.vision.attention.head_count", 2),
        ("clip.vision.image_size", 64),
        ("clip.vision.patch_size", patch),
        // 8x8 patches pooled to the 4x4 of mm_tokens_per_image 16.
        ("clip.vision.projector.scale_factor", 2),
    ] {
        assert_eq!(get(key), Value::U32(want as u32), "{key}");
    }
    assert_eq!(
        get("clip.vision.attention.layer_norm_epsilon"),
        Value::F32(1e-6)
    );
    for key in ["clip.vision.image_mean", "clip.vision.image_std"] {
        let a = get(key);
        let a = a.as_array().unwrap();
        assert_eq!(a.values, Some(vec![Value::F32(0.5); 3]), "{key}");
    }
    // The tensors of the hand-written projector, in ggml order, F32 for
    // embeddings and vectors, F16 for matrices.
    let mut want: Vec<(String, Vec<u64>, u32)> = vec![
        ("v.patch_embd.weight".into(), vec![patch, patch, 3, w], 0),
        ("v.patch_embd.bias".into(), vec![w], 0),
        ("v.position_embd.weight".into(), vec![w, 64], 0),
    ];
    for name in ["attn_q", "attn_k", "attn_v", "attn_out"] {
        want.push((format!("v.blk.0.{name}.weight"), vec![w, w], 1));
        want.push((format!("v.blk.0.{name}.bias"), vec![w], 0));
    }
    for name in ["ln1", "ln2"] {
        want.push((format!("v.blk.0.{name}.weight"), vec![w], 0));
        want.push((format!("v.blk.0.{name}.bias"), vec![w], 0));
    }
    want.push(("v.blk.0.ffn_up.weight".into(), vec![w, ff], 1));
    want.push(("v.blk.0.ffn_up.bias".into(), vec![ff], 0));
    want.push(("v.blk.0.ffn_down.weight".into(), vec![ff, w], 1));
    want.push(("v.blk.0.ffn_down.bias".into(), vec![w], 0));
    want.push(("v.post_ln.weight".into(), vec![w], 0));
    want.push(("v.post_ln.bias".into(), vec![w], 0));
    want.push(("mm.soft_emb_norm.weight".into(), vec![w], 0));
    want.push(("mm.input_projection.weight".into(), vec![e, w], 1));
    let mut got: Vec<(String, Vec<u64>, u32)> = g
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.clone(), t.ggml_type))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);
    // Values: the kernel as stored, the Gemma norm with its +1.
    let source = |name: &str| -> Vec<f32> {
        let (_, _, bytes) = tiny_vision(64)
            .into_iter()
            .find(|(n, _, _)| n == name)
            .unwrap();
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    };
    assert_eq!(
        gguf_f32(&out, &g, "v.patch_embd.weight"),
        source("vision_tower.vision_model.embeddings.patch_embedding.weight")
    );
    let norm: Vec<f32> = source("multi_modal_projector.mm_soft_emb_norm.weight")
        .iter()
        .map(|v| v + 1.0)
        .collect();
    assert_eq!(gguf_f32(&out, &g, "mm.soft_emb_norm.weight"), norm);
    // The newer layout converts to the same bytes.
    let new = tiny_multimodal_dir(Layout::MultimodalNew);
    let mut out_new = Vec::new();
    convert_projector(&files_in(new.path()), &mut out_new, &mut |_| {}).unwrap();
    assert_eq!(out, out_new);
    // A text-only model has no projector.
    let text = tempfile::tempdir().unwrap();
    write_tiny(text.path(), &tiny(Family::Gemma3), 300);
    assert!(!has_projector(&files_in(text.path())).unwrap());
}

/// Vision variants llama.cpp's Gemma 3 projector does not compute are
/// refused by name, and an incomplete tower names what is missing.
#[test]
fn refuses_other_vision_towers() {
    let dir = tiny_multimodal_dir(Layout::Multimodal);
    let files = files_in(dir.path());
    let config_path = dir.path().join("config.json");
    let original = std::fs::read_to_string(&config_path).unwrap();
    let edit = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut j: serde_json::Value = serde_json::from_str(&original).unwrap();
        f(&mut j);
        std::fs::write(&config_path, j.to_string()).unwrap();
    };
    edit(&|j| j["vision_config"]["model_type"] = json!("clip_vision_model"));
    let err = has_projector(&files).unwrap_err().to_string();
    assert!(err.contains("clip_vision_model"), "{err}");
    edit(&|j| j["vision_config"]["hidden_act"] = json!("quick_gelu"));
    let err = has_projector(&files).unwrap_err().to_string();
    assert!(err.contains("quick_gelu"), "{err}");
    edit(&|j| j["mm_tokens_per_image"] = json!(9));
    let err = has_projector(&files).unwrap_err().to_string();
    assert!(err.contains("9 image tokens"), "{err}");
    edit(&|j| {
        if let Some(v) = j["vision_config"].as_object_mut() {
            v.remove("patch_size");
        }
    });
    let err = has_projector(&files).unwrap_err().to_string();
    assert!(err.contains("vision_config.patch_size is missing"), "{err}");
    edit(&|j| j["vision_config"]["hidden_size"] = json!(16));
    let err = convert_projector(&files, &mut Vec::new(), &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("the vision config implies"), "{err}");
}

#[test]
fn converts_a_tiny_phi3_and_generates() {
    let g = check_family(Family::Phi3, false);
    assert_eq!(g.architecture(), Some("phi3"));
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(get("phi3.rope.dimension_count"), Value::U32(16));
    assert_eq!(get("phi3.attention.sliding_window"), Value::U32(0));
    assert_eq!(
        get("phi3.rope.scaling.original_context_length"),
        Value::U32(256)
    );
    let t = |name: &str| g.tensors.iter().find(|t| t.name == name).unwrap();
    assert_eq!(t("blk.0.attn_qkv.weight").shape, vec![64, 128]);
    assert_eq!(t("blk.1.ffn_up.weight").shape, vec![64, 256]);
    assert_eq!(g.tensors.len(), 2 + 2 * 6);
}

#[test]
fn converts_a_tiny_gemma2_and_generates() {
    let g = check_family(Family::Gemma2, false);
    assert_eq!(g.architecture(), Some("gemma2"));
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(get("gemma2.attn_logit_softcapping"), Value::F32(1.0));
    assert_eq!(get("gemma2.final_logit_softcapping"), Value::F32(30.0));
    assert_eq!(get("gemma2.attention.sliding_window"), Value::U32(4));
    assert_eq!(g.tensors.len(), 2 + 2 * 11);
}

#[test]
fn converts_a_tiny_gemma_and_generates() {
    let g = check_family(Family::Gemma, false);
    assert_eq!(g.architecture(), Some("gemma"));
    assert_eq!(g.tensors.len(), 2 + 2 * 9);
    assert!(g.get("gemma.attention.sliding_window").is_none());
}

/// The same Gemma 3 with only a Hugging Face `tokenizer.json` (byte
/// fallback BPE): the vocabulary built from it must tokenize as the
/// original does.
#[test]
fn converts_gemma3_with_a_tokenizer_json() {
    let g = check_family(Family::Gemma3, true);
    let scores = g.get("tokenizer.ggml.scores").unwrap();
    let scores = scores.as_array().unwrap().values.as_ref().unwrap();
    // Merge ranks as scores: an early merge outranks a late one.
    assert!(matches!((&scores[1000], &scores[100_000]), (Value::F32(a), Value::F32(b)) if a > b));
}

/// A garbled or cut `tokenizer.model` fails the conversion with a
/// tokenizer error, before any tensor data is read.
#[test]
fn refuses_a_broken_tokenizer_model() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiny(Family::Gemma3);
    let n_vocab = 300;
    write_tiny(dir.path(), &t, n_vocab);
    let pieces: Vec<(String, f32, i32)> = (0..n_vocab)
        .map(|i| (format!("t{i}"), -(i as f32), 1))
        .collect();
    let model = sentencepiece::encode_model(&pieces, [3, 2, 1, 0], false);
    let path = dir.path().join("tokenizer.model");
    let files = || files_in(dir.path());
    std::fs::write(&path, &model).unwrap();
    run(&files()).unwrap();
    for bad in [
        model[..model.len() / 2].to_vec(),
        model[..7].to_vec(),
        b"not a protobuf at all".to_vec(),
        vec![0xff; 64],
        Vec::new(),
    ] {
        std::fs::write(&path, &bad).unwrap();
        let err = run(&files()).unwrap_err();
        assert!(matches!(err, Error::Tokenizer(_)), "{err}");
    }
    // More pieces than embedding rows.
    let more: Vec<(String, f32, i32)> = (0..n_vocab + 1)
        .map(|i| (format!("t{i}"), 0.0, 1))
        .collect();
    std::fs::write(
        &path,
        sentencepiece::encode_model(&more, [3, 2, 1, 0], false),
    )
    .unwrap();
    let err = run(&files()).unwrap_err();
    assert!(err.to_string().contains("pieces"), "{err}");
    // Gemma with a byte-level BPE instead of SentencePiece.
    std::fs::remove_file(&path).unwrap();
    std::fs::write(
        dir.path().join("tokenizer.json"),
        json!({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}}).to_string(),
    )
    .unwrap();
    let err = run(&files()).unwrap_err();
    assert!(err.to_string().contains("SentencePiece"), "{err}");
}

/// A tiny Llama with a small SentencePiece `tokenizer.model` (as Llama 2
/// and Mistral ship): ASCII bytes, the characters and growing prefixes of
/// "▁hello" and "▁world", and a dummy prefix. Always runs: the vocabulary
/// is synthetic.
#[test]
fn converts_a_tiny_llama_with_a_sentencepiece_tokenizer() {
    const BYTE: i32 = 6;
    let dir = tempfile::tempdir().unwrap();
    let (mut files, n_vocab) = tiny_llama(dir.path());
    let mut pieces: Vec<(String, f32, i32)> = vec![
        ("<unk>".into(), 0.0, 2),
        ("<s>".into(), 0.0, 3),
        ("</s>".into(), 0.0, 3),
    ];
    pieces.extend((0..128).map(|b| (format!("<0x{b:02X}>"), 0.0, BYTE)));
    for c in ["\u{2581}", "h", "e", "l", "o", "w", "r", "d"] {
        pieces.push((c.to_string(), -100.0, 1));
    }
    let mut score = -1.0;
    for word in ["\u{2581}hello", "\u{2581}world"] {
        let chars: Vec<(usize, char)> = word.char_indices().collect();
        for &(end, c) in &chars[1..] {
            pieces.push((word[..end + c.len_utf8()].to_string(), score, 1));
            score -= 1.0;
        }
    }
    let id = |text: &str| pieces.iter().position(|p| p.0 == text).unwrap() as i32;
    let (hello, world) = (id("\u{2581}hello"), id("\u{2581}world"));
    files.remove("tokenizer.json");
    let path = dir.path().join("tokenizer.model");
    std::fs::write(
        &path,
        sentencepiece::encode_model(&pieces, [0, 1, 2, -1], true),
    )
    .unwrap();
    files.insert("tokenizer.model".into(), path);

    let out = run(&files).unwrap();
    let g = Gguf::parse(&out, true).unwrap();
    let get = |k: &str| g.get(k).unwrap_or_else(|| panic!("no {k}")).clone();
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(get("tokenizer.ggml.model"), Value::String("llama".into()));
    assert_eq!(get("tokenizer.ggml.bos_token_id"), Value::U32(1));
    assert_eq!(get("tokenizer.ggml.eos_token_id"), Value::U32(2));
    assert_eq!(get("tokenizer.ggml.add_space_prefix"), Value::Bool(true));
    let tokens = get("tokenizer.ggml.tokens");
    let tokens = tokens.as_array().unwrap().values.as_ref().unwrap();
    assert_eq!(tokens.len(), n_vocab);
    assert_eq!(
        tokens[n_vocab - 1],
        Value::String(format!("[PAD{}]", n_vocab - 1))
    );

    let (_out_dir, runner, warnings) = load_decoder(&out);
    if let Some(warnings) = warnings {
        assert!(warnings.is_empty(), "llama.cpp warned: {warnings:?}");
    }
    let prompt = runner.tokenize("hello world", true, false).unwrap();
    assert_eq!(prompt, vec![1, hello, world]);
    assert_eq!(runner.detokenize(&prompt[1..]), "hello world");
    let want = super::tests::reference_greedy(&files, Arch::Llama, &prompt, 5);
    let generated = generate_greedy(&runner, prompt, 5);
    assert_eq!(generated, want, "llama.cpp vs the reference forward pass");
}
