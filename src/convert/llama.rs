//! What llama.cpp's `llama`, `qwen2` and `qwen3` architectures need from a
//! Hugging Face `LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`
//! or `Qwen3ForCausalLM`: hyperparameters from `config.json`, the mapping of
//! tensor names and types, and (for Llama only) the row permutation of the
//! query and key weights, following `LlamaModel`, `Qwen2Model` and
//! `Qwen3Model` in llama.cpp's `convert_hf_to_gguf.py`. The vocabulary is
//! byte-level BPE (`bpe.rs`) or SentencePiece (`spm.rs`, Llama 2 and
//! Mistral's `tokenizer.model`).
//!
//! The three share one code path because Qwen2 is Llama plus optional
//! q/k/v biases, and Qwen3 is Qwen2 plus per-head q/k RMS norms. Qwen uses
//! NEOX-style RoPE (rotate-half on the Hugging Face layout), which llama.cpp
//! selects from the architecture name, so its q/k rows are not permuted.
//!
//! RoPE scaling: `linear` becomes `rope.scaling.*` metadata; Llama 3.1's
//! `llama3` becomes a computed `rope_freqs.weight` tensor of frequency
//! divisors (see [`llama3_factors`]); others (yarn, dynamic, longrope) are
//! refused by name.

use std::collections::HashMap;
use std::io::Write;

use serde_json::Value as Json;

use super::bert::Mapping;
use super::gguf_writer::{GgmlType, Header, MetaValue, TensorSpec};
use super::source::SourceFile;
use super::{
    check_plan, decoder, gguf_dims, open_sources, spm, tensor_order, write_gguf, Arch, Error,
    Expected, Files, Planned,
};

/// `config.json` architectures written as llama.cpp's `llama`. Mistral's
/// checkpoints differ from Llama's only in hyperparameters that the `llama`
/// architecture already carries.
pub const ARCHITECTURES: [&str; 2] = ["LlamaForCausalLM", "MistralForCausalLM"];

/// The hyperparameters written as `<arch>.*` metadata.
#[derive(Debug)]
pub struct HfConfig {
    /// Which llama.cpp architecture the model is written as.
    pub arch: Arch,
    pub name: String,
    pub hidden: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u64,
    pub heads_kv: u64,
    pub head_dim: u64,
    /// Whether `head_dim` was stated in the config rather than derived.
    pub explicit_head_dim: bool,
    pub eps: f32,
    pub rope_theta: f32,
    /// A linear RoPE scaling factor.
    pub rope_linear: Option<f32>,
    /// Llama 3.1's per-frequency RoPE divisors (`rope_freqs.weight`).
    pub rope_freqs: Option<Vec<f32>>,
    pub max_positions: u64,
    pub vocab_size: u64,
    pub tied: bool,
}

impl HfConfig {
    /// Reads and checks `config.json` for the architecture `arch`.
    pub fn read(arch: Arch, json: &Json) -> Result<HfConfig, Error> {
        let num = |key: &str| -> Result<u64, Error> {
            json.get(key)
                .and_then(Json::as_u64)
                .filter(|&n| n > 0 && n <= u64::from(u32::MAX))
                .ok_or_else(|| {
                    Error::BadConfig(format!("{key} is missing or not a positive integer"))
                })
        };
        // llama.cpp's llama and qwen graphs hard-code SiLU gating, so another
        // activation would load and silently compute something else.
        let act = json
            .get("hidden_act")
            .and_then(Json::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(Error::BadConfig(format!(
                "hidden_act {act:?} is not supported (llama.cpp's llama uses silu)"
            )));
        }
        let on = |key: &str| json.get(key).and_then(Json::as_bool).unwrap_or(false);
        // Qwen's q/k/v biases are optional tensors of llama.cpp's qwen2 and
        // qwen3; Llama's are not written yet, and no graph has MLP biases.
        if (arch == Arch::Llama && on("attention_bias")) || on("mlp_bias") {
            return Err(Error::BadConfig(
                "attention or MLP biases are not supported yet".into(),
            ));
        }
        // llama.cpp's qwen2 and qwen3 attend over the whole context, so a
        // model that needs a sliding window would compute differently.
        if arch != Arch::Llama && on("use_sliding_window") {
            return Err(Error::BadConfig(
                "use_sliding_window is not supported (llama.cpp's qwen attends globally)".into(),
            ));
        }
        let hidden = num("hidden_size")?;
        let heads = num("num_attention_heads")?;
        let explicit_head_dim = json.get("head_dim").is_some_and(|v| !v.is_null());
        let head_dim = if explicit_head_dim {
            num("head_dim")?
        } else {
            if !hidden.is_multiple_of(heads) {
                return Err(Error::BadConfig(format!(
                    "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
                )));
            }
            hidden / heads
        };
        // Newer configs nest the RoPE base and scaling in rope_parameters.
        let params = json.get("rope_parameters").filter(|v| v.is_object());
        let rope_theta = json
            .get("rope_theta")
            .or_else(|| params?.get("rope_theta"))
            .and_then(Json::as_f64)
            .unwrap_or(10_000.0);
        let scaling = json.get("rope_scaling").filter(|v| !v.is_null()).or(params);
        let (rope_linear, rope_freqs) = match scaling {
            None => (None, None),
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Json::as_str)
                    .unwrap_or("default");
                let factor = s.get("factor").and_then(Json::as_f64);
                match (kind, factor) {
                    ("default", _) => (None, None),
                    ("linear", Some(f)) => (Some(f as f32), None),
                    // llama.cpp's qwen graphs take no frequency factors.
                    ("llama3", _) if arch == Arch::Llama => (
                        None,
                        Some(llama3_factors(s, json, head_dim, rope_theta)?),
                    ),
                    _ => {
                        return Err(Error::BadConfig(format!(
                            "RoPE scaling {kind:?} is not supported for {} (only linear, and llama3 on Llama): {s}",
                            arch.name()
                        )))
                    }
                }
            }
        };
        let config = HfConfig {
            arch,
            name: model_name(json, arch.name()),
            hidden,
            intermediate: num("intermediate_size")?,
            layers: num("num_hidden_layers")?,
            heads,
            heads_kv: json
                .get("num_key_value_heads")
                .and_then(Json::as_u64)
                .unwrap_or(heads),
            head_dim,
            explicit_head_dim,
            eps: json
                .get("rms_norm_eps")
                .and_then(Json::as_f64)
                .unwrap_or(1e-6) as f32,
            rope_theta: rope_theta as f32,
            rope_linear,
            rope_freqs,
            max_positions: num("max_position_embeddings")?,
            vocab_size: json.get("vocab_size").and_then(Json::as_u64).unwrap_or(0),
            tied: on("tie_word_embeddings"),
        };
        // The permutation splits each head into two halves of rotary pairs.
        if !config.head_dim.is_multiple_of(2) {
            return Err(Error::BadConfig(format!(
                "head_dim {} is odd; RoPE needs an even head size",
                config.head_dim
            )));
        }
        if config.heads_kv == 0 || !config.heads.is_multiple_of(config.heads_kv) {
            return Err(Error::BadConfig(format!(
                "num_key_value_heads {} does not divide num_attention_heads {}",
                config.heads_kv, config.heads
            )));
        }
        // llama.cpp's qwen2 sizes the query and output projections by
        // n_embd, so a head size that does not tile the hidden size would
        // fail to load.
        if arch == Arch::Qwen2 && config.heads * config.head_dim != config.hidden {
            return Err(Error::BadConfig(format!(
                "num_attention_heads {} times head_dim {} is not hidden_size {}",
                config.heads, config.head_dim, config.hidden
            )));
        }
        if config.layers > 1000 {
            return Err(Error::BadConfig(format!(
                "num_hidden_layers {} is implausible",
                config.layers
            )));
        }
        Ok(config)
    }

    /// Adds `general.*` and `<arch>.*` entries.
    pub fn write_metadata(&self, h: &mut Header, n_vocab: u64) {
        let u = |n: u64| MetaValue::U32(n as u32);
        let arch = self.arch.name();
        let key = |k: &str| format!("{arch}.{k}");
        h.push_general(arch, "model", &self.name);
        h.push(&key("block_count"), u(self.layers));
        h.push(&key("context_length"), u(self.max_positions));
        h.push(&key("embedding_length"), u(self.hidden));
        h.push(&key("feed_forward_length"), u(self.intermediate));
        h.push(&key("attention.head_count"), u(self.heads));
        h.push(&key("attention.head_count_kv"), u(self.heads_kv));
        h.push(&key("rope.freq_base"), MetaValue::F32(self.rope_theta));
        h.push(
            &key("attention.layer_norm_rms_epsilon"),
            MetaValue::F32(self.eps),
        );
        // Like the Python converter, state the head size only when the
        // config does, since llama.cpp otherwise derives it from n_embd;
        // Qwen3's head size is independent of n_embd, so it is always stated.
        if self.explicit_head_dim || self.arch == Arch::Qwen3 {
            h.push(&key("attention.key_length"), u(self.head_dim));
            h.push(&key("attention.value_length"), u(self.head_dim));
        }
        h.push(&key("vocab_size"), u(n_vocab));
        h.push(&key("rope.dimension_count"), u(self.head_dim));
        if let Some(factor) = self.rope_linear {
            h.push(
                &key("rope.scaling.type"),
                MetaValue::String("linear".into()),
            );
            h.push(&key("rope.scaling.factor"), MetaValue::F32(factor));
        }
    }
}

/// Llama 3.1's RoPE scaling as llama.cpp takes it: one divisor per pair of
/// rotary dimensions, which llama.cpp applies to the frequencies
/// `theta^(-2i/head_dim)`. Wavelengths shorter than
/// `original_max_position_embeddings / high_freq_factor` keep their
/// frequency (1), those longer than `… / low_freq_factor` are slowed by
/// `factor`, and the band between blends the two smoothly, as in Hugging
/// Face's `_compute_llama3_parameters` and llama.cpp's converter (whose
/// defaults, 8, 1, 4 and 8192, fill missing fields). The original context
/// length is read from `rope_scaling` as Hugging Face does (llama.cpp's
/// converter reads the top level, where Llama 3.1 configs do not set it,
/// so both use 8192 for them).
fn llama3_factors(s: &Json, json: &Json, head_dim: u64, theta: f64) -> Result<Vec<f32>, Error> {
    let get = |key: &str, default: f64| s.get(key).and_then(Json::as_f64).unwrap_or(default);
    let factor = get("factor", 8.0);
    let low = get("low_freq_factor", 1.0);
    let high = get("high_freq_factor", 4.0);
    let old_context = s
        .get("original_max_position_embeddings")
        .or_else(|| json.get("original_max_position_embeddings"))
        .and_then(Json::as_f64)
        .unwrap_or(8192.0);
    if !(factor >= 1.0 && low > 0.0 && high > low && old_context > 0.0 && theta > 1.0) {
        return Err(Error::BadConfig(format!(
            "llama3 RoPE scaling needs factor >= 1, 0 < low_freq_factor < high_freq_factor and a positive original_max_position_embeddings: {s}"
        )));
    }
    let (low_wavelen, high_wavelen) = (old_context / low, old_context / high);
    Ok((0..head_dim / 2)
        .map(|i| {
            let freq = theta.powf(-((2 * i) as f64) / head_dim as f64);
            let wavelen = 2.0 * std::f64::consts::PI / freq;
            let divisor = if wavelen < high_wavelen {
                1.0
            } else if wavelen > low_wavelen {
                factor
            } else {
                let smooth = (old_context / wavelen - low) / (high - low);
                1.0 / ((1.0 - smooth) / factor + smooth)
            };
            divisor as f32
        })
        .collect())
}

/// A display name: the last part of `_name_or_path`, else `fallback`.
fn model_name(json: &Json, fallback: &str) -> String {
    json.get("_name_or_path")
        .and_then(Json::as_str)
        .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or(fallback)
        .to_string()
}

/// Maps a Hugging Face Llama or Qwen tensor name to llama.cpp's, or says
/// to drop it. `None` means the name is not recognised for `arch` (q/k/v
/// biases only for Qwen, q/k norms only for Qwen3). `tied` drops `lm_head`,
/// which llama.cpp then takes from the token embeddings.
pub fn map_name(name: &str, arch: Arch, tied: bool) -> Option<Mapping> {
    let keep = |s: &str| Some(Mapping::Keep(s.to_string()));
    match name {
        "model.embed_tokens.weight" => return keep("token_embd.weight"),
        "model.norm.weight" => return keep("output_norm.weight"),
        "lm_head.weight" if tied => return Some(Mapping::Drop),
        "lm_head.weight" => return keep("output.weight"),
        _ => {}
    }
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: u32 = layer.parse().ok()?;
    // Old checkpoints store RoPE's inverse frequencies; llama.cpp computes
    // them from rope.freq_base instead.
    if part == "self_attn.rotary_emb.inv_freq" {
        return Some(Mapping::Drop);
    }
    let qwen = arch != Arch::Llama;
    let part = match part {
        "self_attn.q_proj.bias" if qwen => "attn_q.bias",
        "self_attn.k_proj.bias" if qwen => "attn_k.bias",
        "self_attn.v_proj.bias" if qwen => "attn_v.bias",
        "self_attn.q_norm.weight" if arch == Arch::Qwen3 => "attn_q_norm.weight",
        "self_attn.k_norm.weight" if arch == Arch::Qwen3 => "attn_k_norm.weight",
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(Mapping::Keep(format!("blk.{layer}.{part}")))
}

/// The element type in an F16 file: matrices F16, norms and other vectors
/// F32, as llama.cpp's converter writes them.
pub fn target_type(gguf_name: &str, n_dims: usize) -> GgmlType {
    if n_dims < 2 || gguf_name.ends_with("_norm.weight") {
        GgmlType::F32
    } else {
        GgmlType::F16
    }
}

/// The head count whose rows llama.cpp's converter permutes for a tensor:
/// the query heads for `attn_q`, the key/value heads for `attn_k`, and
/// nothing for Qwen, whose NEOX RoPE works on the Hugging Face layout.
pub fn permute_heads(config: &HfConfig, gguf_name: &str) -> Option<usize> {
    if config.arch != Arch::Llama {
        None
    } else if gguf_name.ends_with(".attn_q.weight") {
        Some(config.heads as usize)
    } else if gguf_name.ends_with(".attn_k.weight") {
        Some(config.heads_kv as usize)
    } else {
        None
    }
}

/// The ggml dims a tensor must have for the config.
pub fn expected_shape(config: &HfConfig, n_vocab: u64, gguf_name: &str) -> Option<Vec<u64>> {
    let (e, f) = (config.hidden, config.intermediate);
    let q = config.heads * config.head_dim;
    let kv = config.heads_kv * config.head_dim;
    let tail = gguf_name
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .map_or(gguf_name, |(_, t)| t);
    Some(match tail {
        "token_embd.weight" | "output.weight" => vec![e, n_vocab],
        "output_norm.weight" | "attn_norm.weight" | "ffn_norm.weight" => vec![e],
        "attn_q.weight" => vec![e, q],
        "attn_q.bias" => vec![q],
        "attn_k.bias" | "attn_v.bias" => vec![kv],
        "attn_q_norm.weight" | "attn_k_norm.weight" => vec![config.head_dim],
        "attn_k.weight" | "attn_v.weight" => vec![e, kv],
        "attn_output.weight" => vec![q, e],
        "ffn_gate.weight" | "ffn_up.weight" => vec![e, f],
        "ffn_down.weight" => vec![f, e],
        "rope_freqs.weight" => vec![config.head_dim / 2],
        _ => return None,
    })
}

/// The names llama.cpp requires for a config.
pub fn required(config: &HfConfig) -> Vec<String> {
    let mut names = vec![
        "token_embd.weight".to_string(),
        "output_norm.weight".to_string(),
    ];
    if !config.tied {
        names.push("output.weight".to_string());
    }
    for i in 0..config.layers {
        for part in [
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ] {
            names.push(format!("blk.{i}.{part}.weight"));
        }
        if config.arch == Arch::Qwen3 {
            names.push(format!("blk.{i}.attn_q_norm.weight"));
            names.push(format!("blk.{i}.attn_k_norm.weight"));
        }
    }
    names
}

/// Converts a Llama-family or Qwen model whose `config.json` is already
/// parsed and detected as `arch`.
pub fn convert(
    arch: Arch,
    files: &Files,
    config_json: &Json,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, Error> {
    let config = HfConfig::read(arch, config_json)?;
    // Refuse unsupported tokenizers before touching the weights.
    let kind = spm::kind(files)?;
    let mut sources = open_sources(files, progress)?;
    let mut plan = plan_tensors(&config, &sources)?;
    let n_vocab = plan
        .iter()
        .find(|p| p.spec.name == "token_embd.weight")
        .and_then(|p| p.spec.dims.get(1).copied())
        .ok_or_else(|| Error::BadTensor {
            name: "token_embd.weight".into(),
            reason: "missing (model.embed_tokens.weight)".into(),
        })?;
    if let Some(factors) = &config.rope_freqs {
        plan.push(rope_freqs_tensor(factors));
    }
    check_plan(
        &Expected {
            required: required(&config),
            layers: config.layers,
            vocab_size: config.vocab_size,
            shape: &|name| expected_shape(&config, n_vocab, name),
        },
        n_vocab,
        &plan,
    )?;

    progress("reading tokenizer");

    let mut header = Header::default();
    config.write_metadata(&mut header, n_vocab);
    // Like llama.cpp's converter, take add_space_prefix from the
    // SentencePiece model (Llama 2 and Mistral prepend a space).
    decoder::write_vocab(kind, files, config_json, n_vocab, None, &mut header)?;
    plan.sort_by_key(|p| tensor_order(&p.spec.name));
    header.tensors = plan.iter().map(|p| p.spec.clone()).collect();
    write_gguf(&header, &plan, &mut sources, out, progress)
}

/// The computed `rope_freqs.weight` entry (F32, one value per rotary pair),
/// which llama.cpp's `llama` reads as the frequency divisors of every layer.
fn rope_freqs_tensor(factors: &[f32]) -> Planned {
    let n = factors.len();
    Planned {
        spec: TensorSpec {
            name: "rope_freqs.weight".into(),
            dims: vec![n as u64],
            ggml_type: GgmlType::F32,
        },
        file: 0,
        info: safetensors::tensor::TensorInfo {
            dtype: safetensors::Dtype::F32,
            shape: vec![n],
            data_offsets: (0, 0),
        },
        source_name: "rope_scaling (llama3)".into(),
        permute_heads: None,
        shift: 0.0,
        computed: Some(factors.to_vec()),
    }
}

/// Maps every source tensor to its output entry, refusing names llama.cpp's
/// architecture does not know (they would signal a variant it computes
/// differently).
fn plan_tensors(config: &HfConfig, sources: &[SourceFile]) -> Result<Vec<Planned>, Error> {
    let mut plan = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (file, src) in sources.iter().enumerate() {
        for (name, info) in &src.tensors {
            let gguf_name = match map_name(name, config.arch, config.tied) {
                Some(Mapping::Keep(n)) => n,
                Some(Mapping::Drop) => continue,
                None => {
                    return Err(Error::BadTensor {
                        name: name.clone(),
                        reason: format!(
                            "not a tensor of a {} model that llama.cpp knows",
                            config.arch.name()
                        ),
                    })
                }
            };
            let dims = gguf_dims(name, &gguf_name, &info.shape, 2, &mut seen)?;
            let ggml_type = target_type(&gguf_name, dims.len());
            let permute_heads = permute_heads(config, &gguf_name);
            plan.push(Planned {
                spec: TensorSpec {
                    name: gguf_name,
                    dims,
                    ggml_type,
                },
                file,
                info: info.clone(),
                source_name: name.clone(),
                permute_heads,
                shift: 0.0,
                computed: None,
            });
        }
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names() {
        let keep = |s: &str| Some(Mapping::Keep(s.to_string()));
        assert_eq!(
            map_name("model.embed_tokens.weight", Arch::Llama, false),
            keep("token_embd.weight")
        );
        assert_eq!(
            map_name("lm_head.weight", Arch::Llama, false),
            keep("output.weight")
        );
        assert_eq!(
            map_name("lm_head.weight", Arch::Llama, true),
            Some(Mapping::Drop)
        );
        assert_eq!(
            map_name("model.layers.7.self_attn.o_proj.weight", Arch::Llama, false),
            keep("blk.7.attn_output.weight")
        );
        assert_eq!(
            map_name(
                "model.layers.0.post_attention_layernorm.weight",
                Arch::Llama,
                false
            ),
            keep("blk.0.ffn_norm.weight")
        );
        assert_eq!(
            map_name(
                "model.layers.0.self_attn.rotary_emb.inv_freq",
                Arch::Llama,
                false
            ),
            Some(Mapping::Drop)
        );
        assert_eq!(
            map_name("model.layers.0.self_attn.q_proj.bias", Arch::Llama, false),
            None
        );
        assert_eq!(
            map_name("model.layers.3.self_attn.k_proj.bias", Arch::Qwen2, false),
            keep("blk.3.attn_k.bias")
        );
        assert_eq!(
            map_name("model.layers.0.self_attn.q_norm.weight", Arch::Qwen2, false),
            None
        );
        assert_eq!(
            map_name("model.layers.0.self_attn.q_norm.weight", Arch::Qwen3, false),
            keep("blk.0.attn_q_norm.weight")
        );
        assert_eq!(target_type("blk.0.attn_q_norm.weight", 1), GgmlType::F32);
        assert_eq!(target_type("blk.0.attn_q.bias", 1), GgmlType::F32);
        assert_eq!(target_type("blk.0.attn_norm.weight", 1), GgmlType::F32);
        assert_eq!(target_type("blk.0.attn_q.weight", 2), GgmlType::F16);
    }
}
