//! What llama.cpp's `llama` architecture needs from a Hugging Face
//! `LlamaForCausalLM` or `MistralForCausalLM`: hyperparameters from
//! `config.json`, the mapping of tensor names and types, and the row
//! permutation of the query and key weights, following `LlamaModel` in
//! llama.cpp's `convert_hf_to_gguf.py`.

use std::collections::HashMap;
use std::io::Write;

use serde_json::Value as Json;

use super::bert::Mapping;
use super::gguf_writer::{GgmlType, Header, MetaValue, TensorSpec};
use super::source::SourceFile;
use super::{bpe, open_sources, tensor_order, write_gguf, Error, Files, Planned};

/// `config.json` architectures written as llama.cpp's `llama`. Mistral's
/// checkpoints differ from Llama's only in hyperparameters that the `llama`
/// architecture already carries.
pub const ARCHITECTURES: [&str; 2] = ["LlamaForCausalLM", "MistralForCausalLM"];

/// The hyperparameters written as `llama.*` metadata.
#[derive(Debug)]
pub struct Config {
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
    /// A linear RoPE scaling factor, the only scaling supported so far.
    pub rope_linear: Option<f32>,
    pub max_positions: u64,
    pub vocab_size: u64,
    pub tied: bool,
}

impl Config {
    /// Reads and checks `config.json`.
    pub fn read(json: &Json) -> Result<Config, Error> {
        let num = |key: &str| -> Result<u64, Error> {
            json.get(key)
                .and_then(Json::as_u64)
                .filter(|&n| n > 0 && n <= u64::from(u32::MAX))
                .ok_or_else(|| {
                    Error::BadConfig(format!("{key} is missing or not a positive integer"))
                })
        };
        // llama.cpp's llama graph hard-codes SiLU gating, so another
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
        if on("attention_bias") || on("mlp_bias") {
            return Err(Error::BadConfig(
                "attention or MLP biases are not supported yet".into(),
            ));
        }
        let rope_linear = match json.get("rope_scaling").filter(|v| !v.is_null()) {
            None => None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Json::as_str)
                    .unwrap_or("");
                let factor = s.get("factor").and_then(Json::as_f64);
                match (kind, factor) {
                    ("default", _) => None,
                    ("linear", Some(f)) => Some(f as f32),
                    _ => {
                        return Err(Error::BadConfig(format!(
                            "rope_scaling {s} is not supported yet (only linear)"
                        )))
                    }
                }
            }
        };
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
        let config = Config {
            name: model_name(json),
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
            rope_theta: json
                .get("rope_theta")
                .and_then(Json::as_f64)
                .unwrap_or(10_000.0) as f32,
            rope_linear,
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
        if config.layers > 1000 {
            return Err(Error::BadConfig(format!(
                "num_hidden_layers {} is implausible",
                config.layers
            )));
        }
        Ok(config)
    }

    /// Adds `general.*` and `llama.*` entries.
    pub fn write_metadata(&self, h: &mut Header, n_vocab: u64) {
        let u = |n: u64| MetaValue::U32(n as u32);
        h.push("general.architecture", MetaValue::String("llama".into()));
        h.push("general.type", MetaValue::String("model".into()));
        h.push("general.name", MetaValue::String(self.name.clone()));
        h.push("general.alignment", MetaValue::U32(32));
        h.push("llama.block_count", u(self.layers));
        h.push("llama.context_length", u(self.max_positions));
        h.push("llama.embedding_length", u(self.hidden));
        h.push("llama.feed_forward_length", u(self.intermediate));
        h.push("llama.attention.head_count", u(self.heads));
        h.push("llama.attention.head_count_kv", u(self.heads_kv));
        h.push("llama.rope.freq_base", MetaValue::F32(self.rope_theta));
        h.push(
            "llama.attention.layer_norm_rms_epsilon",
            MetaValue::F32(self.eps),
        );
        // Like the Python converter, state the head size only when the
        // config does, since llama.cpp otherwise derives it from n_embd.
        if self.explicit_head_dim {
            h.push("llama.attention.key_length", u(self.head_dim));
            h.push("llama.attention.value_length", u(self.head_dim));
        }
        h.push("llama.vocab_size", u(n_vocab));
        h.push("llama.rope.dimension_count", u(self.head_dim));
        if let Some(factor) = self.rope_linear {
            h.push(
                "llama.rope.scaling.type",
                MetaValue::String("linear".into()),
            );
            h.push("llama.rope.scaling.factor", MetaValue::F32(factor));
        }
        // 1 is LLAMA_FTYPE_MOSTLY_F16: matrices are F16, vectors F32.
        h.push("general.file_type", MetaValue::U32(1));
        h.push("general.quantization_version", MetaValue::U32(2));
    }
}

/// A display name: the last part of `_name_or_path`, else "llama".
fn model_name(json: &Json) -> String {
    json.get("_name_or_path")
        .and_then(Json::as_str)
        .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("llama")
        .to_string()
}

/// Maps a Hugging Face Llama tensor name to llama.cpp's, or says to drop
/// it. `None` means the name is not recognised. `tied` drops `lm_head`,
/// which llama.cpp then takes from the token embeddings.
pub fn map_name(name: &str, tied: bool) -> Option<Mapping> {
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
    let part = match part {
        "input_layernorm.weight" => "attn_norm",
        "self_attn.q_proj.weight" => "attn_q",
        "self_attn.k_proj.weight" => "attn_k",
        "self_attn.v_proj.weight" => "attn_v",
        "self_attn.o_proj.weight" => "attn_output",
        "post_attention_layernorm.weight" => "ffn_norm",
        "mlp.gate_proj.weight" => "ffn_gate",
        "mlp.up_proj.weight" => "ffn_up",
        "mlp.down_proj.weight" => "ffn_down",
        _ => return None,
    };
    Some(Mapping::Keep(format!("blk.{layer}.{part}.weight")))
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
/// the query heads for `attn_q`, the key/value heads for `attn_k`.
pub fn permute_heads(config: &Config, gguf_name: &str) -> Option<usize> {
    if gguf_name.ends_with(".attn_q.weight") {
        Some(config.heads as usize)
    } else if gguf_name.ends_with(".attn_k.weight") {
        Some(config.heads_kv as usize)
    } else {
        None
    }
}

/// The ggml dims a tensor must have for the config.
pub fn expected_shape(config: &Config, n_vocab: u64, gguf_name: &str) -> Option<Vec<u64>> {
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
        "attn_k.weight" | "attn_v.weight" => vec![e, kv],
        "attn_output.weight" => vec![q, e],
        "ffn_gate.weight" | "ffn_up.weight" => vec![e, f],
        "ffn_down.weight" => vec![f, e],
        _ => return None,
    })
}

/// The names llama.cpp requires for a config.
pub fn required(config: &Config) -> Vec<String> {
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
    }
    names
}

/// Converts a Llama-family model whose `config.json` is already parsed.
pub fn convert(
    files: &Files,
    config_json: &Json,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, Error> {
    let config = Config::read(config_json)?;
    // Refuse unsupported tokenizers before touching the weights.
    bpe::check_supported(files)?;
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
    check_tensors(&config, n_vocab, &plan)?;

    progress("reading tokenizer");
    let vocab = bpe::Vocab::load(files, config_json, n_vocab as usize)?;

    let mut header = Header::default();
    config.write_metadata(&mut header, n_vocab);
    vocab.write_metadata(&mut header);
    plan.sort_by_key(|p| tensor_order(&p.spec.name));
    header.tensors = plan.iter().map(|p| p.spec.clone()).collect();
    write_gguf(&header, &plan, &mut sources, out, progress)
}

/// Maps every source tensor to its output entry, refusing names llama.cpp's
/// `llama` does not know (they would signal a variant it computes
/// differently).
fn plan_tensors(config: &Config, sources: &[SourceFile]) -> Result<Vec<Planned>, Error> {
    let mut plan = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (file, src) in sources.iter().enumerate() {
        for (name, info) in &src.tensors {
            let gguf_name = match map_name(name, config.tied) {
                Some(Mapping::Keep(n)) => n,
                Some(Mapping::Drop) => continue,
                None => {
                    return Err(Error::BadTensor {
                        name: name.clone(),
                        reason: "not a tensor of a Llama model that llama.cpp knows".into(),
                    })
                }
            };
            if let Some(other) = seen.insert(gguf_name.clone(), name.clone()) {
                return Err(Error::BadTensor {
                    name: name.clone(),
                    reason: format!("maps to {gguf_name}, as {other} does"),
                });
            }
            if info.shape.is_empty() || info.shape.len() > 2 {
                return Err(Error::BadTensor {
                    name: name.clone(),
                    reason: format!("has {} dimensions; 1 or 2 expected", info.shape.len()),
                });
            }
            // GGUF lists dimensions fastest-varying first.
            let dims: Vec<u64> = info.shape.iter().rev().map(|&d| d as u64).collect();
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
            });
        }
    }
    Ok(plan)
}

/// Checks presence, layer numbers and shapes against the config.
fn check_tensors(config: &Config, n_vocab: u64, plan: &[Planned]) -> Result<(), Error> {
    let names: HashMap<&str, &Planned> = plan.iter().map(|p| (p.spec.name.as_str(), p)).collect();
    for name in required(config) {
        if !names.contains_key(name.as_str()) {
            return Err(Error::BadTensor {
                name,
                reason: "missing from the safetensors files".into(),
            });
        }
    }
    for p in plan {
        if let Some(layer) = p.spec.name.strip_prefix("blk.") {
            let n: u64 = layer
                .split('.')
                .next()
                .and_then(|s| s.parse().ok())
                .unwrap_or(u64::MAX);
            if n >= config.layers {
                return Err(Error::BadTensor {
                    name: p.source_name.clone(),
                    reason: format!("layer {n} is beyond num_hidden_layers {}", config.layers),
                });
            }
        }
        if let Some(want) = expected_shape(config, n_vocab, &p.spec.name) {
            if want != p.spec.dims {
                return Err(Error::BadTensor {
                    name: p.source_name.clone(),
                    reason: format!(
                        "has ggml shape {:?}, the config implies {want:?}",
                        p.spec.dims
                    ),
                });
            }
        }
    }
    if config.vocab_size != 0 && config.vocab_size != n_vocab {
        return Err(Error::BadConfig(format!(
            "vocab_size is {} but the embedding matrix has {n_vocab} rows",
            config.vocab_size
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_names() {
        let keep = |s: &str| Some(Mapping::Keep(s.to_string()));
        assert_eq!(
            map_name("model.embed_tokens.weight", false),
            keep("token_embd.weight")
        );
        assert_eq!(map_name("lm_head.weight", false), keep("output.weight"));
        assert_eq!(map_name("lm_head.weight", true), Some(Mapping::Drop));
        assert_eq!(
            map_name("model.layers.7.self_attn.o_proj.weight", false),
            keep("blk.7.attn_output.weight")
        );
        assert_eq!(
            map_name("model.layers.0.post_attention_layernorm.weight", false),
            keep("blk.0.ffn_norm.weight")
        );
        assert_eq!(
            map_name("model.layers.0.self_attn.rotary_emb.inv_freq", false),
            Some(Mapping::Drop)
        );
        assert_eq!(
            map_name("model.layers.0.self_attn.q_proj.bias", false),
            None
        );
        assert_eq!(target_type("blk.0.attn_norm.weight", 1), GgmlType::F32);
        assert_eq!(target_type("blk.0.attn_q.weight", 2), GgmlType::F16);
    }
}
