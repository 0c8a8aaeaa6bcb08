//! What llama.cpp's `gemma`, `gemma2` and `gemma3` architectures need from
//! a Hugging Face `GemmaForCausalLM`, `Gemma2ForCausalLM` or
//! `Gemma3ForCausalLM`: hyperparameters, tensor names, and the +1 on every
//! RMS norm weight (Hugging Face stores `w` and computes `x · (1 + w)`,
//! llama.cpp multiplies by the stored weight), following `GemmaModel`,
//! `Gemma2Model` and `Gemma3Model` in llama.cpp's converter.
//!
//! Gemma 2 adds attention and final logit soft-capping, a sliding window
//! on every other layer and norms after attention and after the MLP; Gemma
//! 3 drops the attention soft-capping, adds per-head q/k norms, a separate
//! RoPE base for its sliding-window layers and one global layer in six.
//! All three use NEOX RoPE on the Hugging Face layout, so nothing is
//! permuted, and llama.cpp scales the embeddings by √hidden itself.
//!
//! Gemma 3 4B, 12B and 27B ship as `Gemma3ForConditionalGeneration`: the
//! text hyperparameters nest under `text_config`, with Hugging Face's
//! `Gemma3TextConfig` defaults for the keys left out (see
//! [`multimodal_config`]), and the text weights sit under
//! `language_model.model.*` (`model.language_model.*` in newer saves) next
//! to the SigLIP vision tower and the projector. Here only the text model
//! is converted; the vision tensors are dropped, and `siglip.rs` writes
//! them to the projector's own file.

use serde_json::Value as Json;

use super::bert::Mapping;
use super::decoder::{block_tail, layer_part, num, Spec};
use super::gguf_writer::{Header, MetaValue};
use super::{Arch, Error};

/// The hyperparameters written as `<arch>.*` metadata.
#[derive(Debug)]
pub struct HfConfig {
    pub arch: Arch,
    pub name: String,
    pub hidden: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u64,
    pub heads_kv: u64,
    pub head_dim: u64,
    pub eps: f32,
    pub rope_theta: f32,
    /// Gemma 3: the RoPE base of the sliding-window layers.
    pub rope_local: Option<f32>,
    /// Gemma 3: a linear RoPE scaling factor for the global layers.
    pub rope_linear: Option<f32>,
    pub max_positions: u64,
    pub vocab_size: u64,
    pub attn_softcap: Option<f32>,
    pub final_softcap: Option<f32>,
    /// Gemma 2 and 3: the window of the sliding-window layers.
    pub sliding_window: Option<u64>,
    /// Gemma 3: one layer in this many attends globally (llama.cpp's
    /// default, 6, is not written).
    pub swa_pattern: Option<u64>,
    /// Whether `lm_head.weight` is dropped; Gemma and Gemma 2 always tie
    /// it to the embeddings in llama.cpp.
    pub tied: bool,
    /// Gemma 3 from a multimodal checkpoint: tensor names carry the
    /// language model's prefix, and vision tensors are dropped.
    pub multimodal: bool,
}

/// `Gemma3TextConfig`'s defaults for what a multimodal checkpoint's
/// `text_config` may leave out (Gemma 3 4B states only its sizes, layer
/// count, window and RoPE scaling). llama.cpp's converter defaults the
/// same keys to the same values; the sizes and layer count stay required.
const GEMMA3_TEXT_DEFAULTS: [(&str, f64); 10] = [
    ("num_attention_heads", 8.0),
    ("num_key_value_heads", 4.0),
    ("head_dim", 256.0),
    ("max_position_embeddings", 131_072.0),
    ("rms_norm_eps", 1e-6),
    ("rope_theta", 1_000_000.0),
    ("rope_local_base_freq", 10_000.0),
    ("query_pre_attn_scalar", 256.0),
    ("sliding_window", 4096.0),
    ("sliding_window_pattern", 6.0),
];

/// For a multimodal Gemma 3 config (`Gemma3ForConditionalGeneration`, or
/// model type `gemma3` without architectures): the text model's config as
/// a `Gemma3ForCausalLM` would have it, the top level overlaid with
/// `text_config` (as llama.cpp's converter merges them, so that token ids
/// and the name stay reachable) and the defaults above filled in. `None`
/// for any other config.
pub fn multimodal_config(json: &Json) -> Result<Option<Json>, Error> {
    let named = json
        .get("architectures")
        .and_then(Json::as_array)
        .and_then(|a| a.first())
        .and_then(Json::as_str);
    let multimodal = match named {
        Some(name) => name == "Gemma3ForConditionalGeneration",
        None => json.get("model_type").and_then(Json::as_str) == Some("gemma3"),
    };
    if !multimodal {
        return Ok(None);
    }
    let Json::Object(mut merged) = json.clone() else {
        return Err(Error::BadConfig("config.json is not an object".into()));
    };
    let text = match merged.remove("text_config") {
        Some(Json::Object(text)) => text,
        _ => {
            return Err(Error::BadConfig(
                "Gemma3ForConditionalGeneration without a text_config object".into(),
            ))
        }
    };
    merged.remove("vision_config");
    for (key, value) in text {
        if !value.is_null() {
            merged.insert(key, value);
        }
    }
    for (key, default) in GEMMA3_TEXT_DEFAULTS {
        if merged.get(key).is_none_or(Json::is_null) {
            let value = if default.fract() == 0.0 && default >= 1.0 {
                Json::from(default as u64)
            } else {
                Json::from(default)
            };
            merged.insert(key.to_string(), value);
        }
    }
    Ok(Some(Json::Object(merged)))
}

/// Where a tensor of a multimodal Gemma 3 checkpoint belongs.
#[derive(Debug, PartialEq)]
enum MultimodalPart {
    /// The language model's tensor, under its `Gemma3ForCausalLM` name.
    Text(String),
    /// The vision tower or the projector, left to `siglip.rs`.
    Vision,
}

fn multimodal_part(name: &str) -> Option<MultimodalPart> {
    let vision = [
        "vision_tower.",
        "multi_modal_projector.",
        "model.vision_tower.",
        "model.multi_modal_projector.",
    ];
    if vision.iter().any(|p| name.starts_with(p)) {
        return Some(MultimodalPart::Vision);
    }
    let text = if let Some(rest) = name.strip_prefix("language_model.") {
        // language_model.model.* and language_model.lm_head.weight.
        rest.to_string()
    } else if let Some(rest) = name.strip_prefix("model.language_model.") {
        format!("model.{rest}")
    } else if name == "lm_head.weight" {
        name.to_string()
    } else {
        return None;
    };
    Some(MultimodalPart::Text(text))
}

impl HfConfig {
    /// Reads and checks `config.json` for `arch` (one of the Gemmas).
    pub fn read(arch: Arch, json: &Json) -> Result<HfConfig, Error> {
        let float = |key: &str| json.get(key).and_then(Json::as_f64).map(|v| v as f32);
        // HF's Gemma configs name the MLP activation hidden_activation
        // (older ones hidden_act); both mean tanh-approximated GELU, which
        // is what llama.cpp computes.
        let act = json
            .get("hidden_activation")
            .filter(|v| !v.is_null())
            .or_else(|| json.get("hidden_act"))
            .and_then(Json::as_str)
            .unwrap_or("gelu_pytorch_tanh");
        if !matches!(act, "gelu_pytorch_tanh" | "gelu" | "gelu_tanh") {
            return Err(Error::BadConfig(format!(
                "hidden activation {act:?} is not supported (llama.cpp's {} uses tanh GELU)",
                arch.name()
            )));
        }
        if json.get("attention_bias").and_then(Json::as_bool) == Some(true) {
            return Err(Error::BadConfig(
                "attention biases are not supported (llama.cpp's Gemma has none)".into(),
            ));
        }
        let hidden = num(json, "hidden_size")?;
        let heads = num(json, "num_attention_heads")?;
        let layers = num(json, "num_hidden_layers")?;
        let head_dim = match json.get("head_dim").filter(|v| !v.is_null()) {
            Some(_) => num(json, "head_dim")?,
            None if hidden.is_multiple_of(heads) => hidden / heads,
            None => {
                return Err(Error::BadConfig(format!(
                    "hidden_size {hidden} is not a multiple of num_attention_heads {heads}"
                )))
            }
        };
        let heads_kv = json
            .get("num_key_value_heads")
            .and_then(Json::as_u64)
            .unwrap_or(heads);
        if heads_kv == 0 || !heads.is_multiple_of(heads_kv) {
            return Err(Error::BadConfig(format!(
                "num_key_value_heads {heads_kv} does not divide num_attention_heads {heads}"
            )));
        }
        if !head_dim.is_multiple_of(2) || layers > 1000 {
            return Err(Error::BadConfig(format!(
                "head_dim {head_dim} or num_hidden_layers {layers} is implausible"
            )));
        }
        let (rope_theta, rope_local, rope_linear) = rope(arch, json)?;
        let mut config = HfConfig {
            arch,
            name: json
                .get("_name_or_path")
                .and_then(Json::as_str)
                .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
                .filter(|s| !s.is_empty())
                .unwrap_or(arch.name())
                .to_string(),
            hidden,
            intermediate: num(json, "intermediate_size")?,
            layers,
            heads,
            heads_kv,
            head_dim,
            eps: float("rms_norm_eps").unwrap_or(1e-6),
            rope_theta,
            rope_local,
            rope_linear,
            max_positions: num(json, "max_position_embeddings")?,
            vocab_size: json.get("vocab_size").and_then(Json::as_u64).unwrap_or(0),
            attn_softcap: None,
            final_softcap: float("final_logit_softcapping").filter(|&c| c != 0.0),
            sliding_window: None,
            swa_pattern: None,
            tied: arch != Arch::Gemma3
                || json
                    .get("tie_word_embeddings")
                    .and_then(Json::as_bool)
                    .unwrap_or(true),
            multimodal: false,
        };
        match arch {
            Arch::Gemma => {
                // Gemma 1 has neither; a config that sets them is another
                // model under Gemma's name.
                if config.final_softcap.is_some() || float("attn_logit_softcapping").is_some() {
                    return Err(Error::BadConfig(
                        "logit soft-capping is not part of Gemma (1); is this Gemma 2?".into(),
                    ));
                }
            }
            Arch::Gemma2 => {
                config.attn_softcap = float("attn_logit_softcapping").filter(|&c| c != 0.0);
                config.sliding_window = Some(match json.get("sliding_window") {
                    Some(v) if !v.is_null() => num(json, "sliding_window")?,
                    _ => 4096,
                });
                check_layer_types(json, layers, 2)?;
            }
            _ => {
                if float("attn_logit_softcapping").is_some() {
                    return Err(Error::BadConfig(
                        "attn_logit_softcapping is not supported for Gemma 3 (llama.cpp's gemma3 has none)"
                            .into(),
                    ));
                }
                let pattern = json
                    .get("sliding_window_pattern")
                    .and_then(Json::as_u64)
                    .unwrap_or(6);
                check_layer_types(json, layers, pattern)?;
                // A pattern of 1 means no sliding window at all.
                if pattern != 1 {
                    config.sliding_window = Some(num(json, "sliding_window")?);
                    config.swa_pattern = Some(pattern).filter(|&p| p != 6);
                }
            }
        }
        check_query_scale(&config, json)?;
        Ok(config)
    }
}

/// RoPE bases and scaling: (global base, sliding-window base for Gemma 3,
/// linear factor for Gemma 3's global layers). Newer configs nest them in
/// `rope_parameters` per layer type.
fn rope(arch: Arch, json: &Json) -> Result<(f32, Option<f32>, Option<f32>), Error> {
    let params = json.get("rope_parameters").filter(|v| v.is_object());
    let full = params
        .and_then(|p| p.get("full_attention"))
        .or(params)
        .unwrap_or(json);
    let default_theta = if arch == Arch::Gemma3 {
        1_000_000.0
    } else {
        10_000.0
    };
    let theta = full
        .get("rope_theta")
        .or_else(|| json.get("rope_theta"))
        .and_then(Json::as_f64)
        .unwrap_or(default_theta) as f32;
    let local = params
        .and_then(|p| p.get("sliding_attention")?.get("rope_theta")?.as_f64())
        .or_else(|| json.get("rope_local_base_freq").and_then(Json::as_f64))
        .unwrap_or(10_000.0) as f32;
    let scaling = json
        .get("rope_scaling")
        .filter(|v| !v.is_null())
        .or_else(|| params.map(|_| full));
    let linear = match scaling {
        None => None,
        Some(s) => {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Json::as_str)
                .unwrap_or("default");
            match (kind, s.get("factor").and_then(Json::as_f64)) {
                ("default", _) => None,
                ("linear", Some(f)) if arch == Arch::Gemma3 => Some(f as f32),
                _ => {
                    return Err(Error::BadConfig(format!(
                        "rope scaling {s} is not supported for {} (only linear, on Gemma 3)",
                        arch.name()
                    )))
                }
            }
        }
    };
    Ok((theta, (arch == Arch::Gemma3).then_some(local), linear))
}

/// Refuses a `layer_types` list that is not llama.cpp's layout for
/// `pattern`: layer `i` slides unless `i % pattern == pattern - 1`.
fn check_layer_types(json: &Json, layers: u64, pattern: u64) -> Result<(), Error> {
    let Some(types) = json.get("layer_types").and_then(Json::as_array) else {
        return Ok(());
    };
    let expected = (0..layers).map(|i| {
        if pattern == 0 || i % pattern < pattern - 1 {
            "sliding_attention"
        } else {
            "full_attention"
        }
    });
    if types.len() as u64 != layers || !types.iter().map(Json::as_str).eq(expected.map(Some)) {
        return Err(Error::BadConfig(format!(
            "layer_types does not follow one global layer in {pattern}; other sliding-window layouts are not supported yet"
        )));
    }
    Ok(())
}

/// llama.cpp scales queries by 1/√head_dim (1/√(hidden/heads) for the 27B
/// layer counts) and does not read `query_pre_attn_scalar`, so a model
/// that asks for another scale is refused rather than computed wrong.
fn check_query_scale(config: &HfConfig, json: &Json) -> Result<(), Error> {
    if config.arch == Arch::Gemma {
        return Ok(());
    }
    let big = match config.arch {
        Arch::Gemma2 => config.layers == 46,
        _ => config.layers == 62,
    };
    let llama_cpp = if big {
        config.hidden / config.heads
    } else {
        config.head_dim
    };
    let wanted = json
        .get("query_pre_attn_scalar")
        .and_then(Json::as_f64)
        .unwrap_or(config.head_dim as f64);
    if wanted != llama_cpp as f64 {
        return Err(Error::BadConfig(format!(
            "query_pre_attn_scalar {wanted} is not supported: llama.cpp's {} scales queries by 1/sqrt({llama_cpp}) for this model",
            config.arch.name()
        )));
    }
    Ok(())
}

impl Spec for HfConfig {
    fn arch_name(&self) -> &'static str {
        self.arch.name()
    }

    fn layers(&self) -> u64 {
        self.layers
    }

    fn vocab_size(&self) -> u64 {
        self.vocab_size
    }

    fn map_name(&self, name: &str) -> Option<Mapping> {
        let text_name;
        let name = if self.multimodal {
            match multimodal_part(name)? {
                MultimodalPart::Vision => return Some(Mapping::Drop),
                MultimodalPart::Text(n) => {
                    text_name = n;
                    text_name.as_str()
                }
            }
        } else {
            name
        };
        let keep = |s: &str| Some(Mapping::Keep(s.to_string()));
        match name {
            "model.embed_tokens.weight" => return keep("token_embd.weight"),
            "model.norm.weight" => return keep("output_norm.weight"),
            "lm_head.weight" if self.tied => return Some(Mapping::Drop),
            "lm_head.weight" => return keep("output.weight"),
            _ => {}
        }
        let (layer, part) = layer_part(name)?;
        let later = self.arch != Arch::Gemma;
        let part = match part {
            "input_layernorm.weight" => "attn_norm.weight",
            "self_attn.q_proj.weight" => "attn_q.weight",
            "self_attn.k_proj.weight" => "attn_k.weight",
            "self_attn.v_proj.weight" => "attn_v.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "self_attn.q_norm.weight" if self.arch == Arch::Gemma3 => "attn_q_norm.weight",
            "self_attn.k_norm.weight" if self.arch == Arch::Gemma3 => "attn_k_norm.weight",
            // Gemma's post-attention norm is the MLP's input norm; Gemma 2
            // and 3 normalise the attention output with it and have a
            // separate pre-MLP norm.
            "post_attention_layernorm.weight" if later => "post_attention_norm.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "pre_feedforward_layernorm.weight" if later => "ffn_norm.weight",
            "post_feedforward_layernorm.weight" if later => "post_ffw_norm.weight",
            "mlp.gate_proj.weight" => "ffn_gate.weight",
            "mlp.up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            _ => return None,
        };
        Some(Mapping::Keep(format!("blk.{layer}.{part}")))
    }

    fn expected_shape(&self, n_vocab: u64, gguf_name: &str) -> Option<Vec<u64>> {
        let (e, f) = (self.hidden, self.intermediate);
        let q = self.heads * self.head_dim;
        let kv = self.heads_kv * self.head_dim;
        Some(match block_tail(gguf_name) {
            "token_embd.weight" | "output.weight" => vec![e, n_vocab],
            "output_norm.weight"
            | "attn_norm.weight"
            | "ffn_norm.weight"
            | "post_attention_norm.weight"
            | "post_ffw_norm.weight" => vec![e],
            "attn_q_norm.weight" | "attn_k_norm.weight" => vec![self.head_dim],
            "attn_q.weight" => vec![e, q],
            "attn_k.weight" | "attn_v.weight" => vec![e, kv],
            "attn_output.weight" => vec![q, e],
            "ffn_gate.weight" | "ffn_up.weight" => vec![e, f],
            "ffn_down.weight" => vec![f, e],
            _ => return None,
        })
    }

    fn required(&self) -> Vec<String> {
        let mut names = vec![
            "token_embd.weight".to_string(),
            "output_norm.weight".to_string(),
        ];
        if !self.tied {
            names.push("output.weight".to_string());
        }
        let mut parts = vec![
            "attn_norm",
            "attn_q",
            "attn_k",
            "attn_v",
            "attn_output",
            "ffn_norm",
            "ffn_gate",
            "ffn_up",
            "ffn_down",
        ];
        if self.arch != Arch::Gemma {
            parts.extend(["post_attention_norm", "post_ffw_norm"]);
        }
        if self.arch == Arch::Gemma3 {
            parts.extend(["attn_q_norm", "attn_k_norm"]);
        }
        for i in 0..self.layers {
            for part in &parts {
                names.push(format!("blk.{i}.{part}.weight"));
            }
        }
        names
    }

    fn shift(&self, gguf_name: &str) -> f32 {
        if gguf_name.ends_with("norm.weight") {
            1.0
        } else {
            0.0
        }
    }

    fn write_metadata(&self, h: &mut Header, _n_vocab: u64) {
        let u = |n: u64| MetaValue::U32(n as u32);
        let arch = self.arch.name();
        let key = |k: &str| format!("{arch}.{k}");
        h.push_general(arch, "model", &self.name);
        h.push(&key("context_length"), u(self.max_positions));
        h.push(&key("embedding_length"), u(self.hidden));
        h.push(&key("block_count"), u(self.layers));
        h.push(&key("feed_forward_length"), u(self.intermediate));
        h.push(&key("attention.head_count"), u(self.heads));
        h.push(&key("attention.head_count_kv"), u(self.heads_kv));
        h.push(
            &key("attention.layer_norm_rms_epsilon"),
            MetaValue::F32(self.eps),
        );
        h.push(&key("attention.key_length"), u(self.head_dim));
        h.push(&key("attention.value_length"), u(self.head_dim));
        h.push(&key("rope.freq_base"), MetaValue::F32(self.rope_theta));
        if let Some(base) = self.rope_local {
            h.push(&key("rope.freq_base_swa"), MetaValue::F32(base));
        }
        if let Some(factor) = self.rope_linear {
            h.push(
                &key("rope.scaling.type"),
                MetaValue::String("linear".into()),
            );
            h.push(&key("rope.scaling.factor"), MetaValue::F32(factor));
        }
        if let Some(cap) = self.attn_softcap {
            h.push(&key("attn_logit_softcapping"), MetaValue::F32(cap));
        }
        if let Some(cap) = self.final_softcap {
            h.push(&key("final_logit_softcapping"), MetaValue::F32(cap));
        }
        if let Some(window) = self.sliding_window {
            h.push(&key("attention.sliding_window"), u(window));
        }
        if let Some(pattern) = self.swa_pattern {
            h.push(&key("attention.sliding_window_pattern"), u(pattern));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn gemma3() -> Json {
        json!({"architectures": ["Gemma3ForCausalLM"], "hidden_size": 640,
               "intermediate_size": 2048, "num_hidden_layers": 18,
               "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 256,
               "max_position_embeddings": 32768, "query_pre_attn_scalar": 256,
               "sliding_window": 512, "rope_theta": 1_000_000.0,
               "rope_local_base_freq": 10_000.0, "vocab_size": 262_144})
    }

    /// The text part of Gemma 3 4B's config.json, as published.
    #[test]
    fn reads_gemma3_4b_multimodal_config() {
        let json = json!({
            "architectures": ["Gemma3ForConditionalGeneration"],
            "boi_token_index": 255_999, "eos_token_id": [1, 106],
            "image_token_index": 262_144, "model_type": "gemma3",
            "text_config": {"hidden_size": 2560, "intermediate_size": 10240,
                            "model_type": "gemma3_text", "num_hidden_layers": 34,
                            "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                            "sliding_window": 1024},
            "vision_config": {"hidden_size": 1152, "image_size": 896}
        });
        assert_eq!(multimodal_config(&gemma3()).unwrap(), None);
        let text = multimodal_config(&json).unwrap().unwrap();
        assert!(text.get("vision_config").is_none());
        let mut c = HfConfig::read(Arch::Gemma3, &text).unwrap();
        assert_eq!((c.hidden, c.layers, c.heads, c.heads_kv), (2560, 34, 8, 4));
        assert_eq!((c.head_dim, c.max_positions), (256, 131_072));
        assert_eq!(c.rope_theta, 1_000_000.0);
        assert_eq!(c.rope_local, Some(10_000.0));
        assert_eq!(c.rope_linear, Some(8.0));
        assert_eq!(c.sliding_window, Some(1024));
        assert_eq!(c.swa_pattern, None);
        assert!(c.tied);
        c.multimodal = true;
        let keep = |s: &str| Some(Mapping::Keep(s.to_string()));
        for (name, want) in [
            (
                "language_model.model.layers.3.self_attn.q_norm.weight",
                keep("blk.3.attn_q_norm.weight"),
            ),
            (
                "model.language_model.embed_tokens.weight",
                keep("token_embd.weight"),
            ),
            ("language_model.lm_head.weight", Some(Mapping::Drop)),
            (
                "vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight",
                Some(Mapping::Drop),
            ),
            (
                "model.multi_modal_projector.mm_input_projection_weight",
                Some(Mapping::Drop),
            ),
            ("model.layers.0.self_attn.q_proj.weight", None),
            ("audio_tower.x.weight", None),
        ] {
            assert_eq!(c.map_name(name), want, "{name}");
        }
        // The 27B states its own query scale and head size.
        let mut big = json.clone();
        big["text_config"]["head_dim"] = json!(128);
        big["text_config"]["num_attention_heads"] = json!(32);
        big["text_config"]["num_hidden_layers"] = json!(62);
        big["text_config"]["hidden_size"] = json!(5376);
        big["text_config"]["query_pre_attn_scalar"] = json!(168);
        let text = multimodal_config(&big).unwrap().unwrap();
        assert!(HfConfig::read(Arch::Gemma3, &text).is_ok());
        // Without text_config there is nothing to convert.
        let err = multimodal_config(&json!({"architectures": ["Gemma3ForConditionalGeneration"]}))
            .unwrap_err();
        assert!(err.to_string().contains("text_config"), "{err}");
    }

    #[test]
    fn reads_gemma3_270m() {
        let c = HfConfig::read(Arch::Gemma3, &gemma3()).unwrap();
        assert_eq!(c.sliding_window, Some(512));
        assert_eq!(c.swa_pattern, None);
        assert_eq!(c.rope_local, Some(10_000.0));
        assert!(c.tied);
        let keep = |s: &str| Some(Mapping::Keep(s.to_string()));
        assert_eq!(
            c.map_name("model.layers.3.post_attention_layernorm.weight"),
            keep("blk.3.post_attention_norm.weight")
        );
        assert_eq!(
            c.map_name("model.layers.3.self_attn.k_norm.weight"),
            keep("blk.3.attn_k_norm.weight")
        );
        assert_eq!(c.shift("blk.3.attn_k_norm.weight"), 1.0);
        assert_eq!(c.shift("blk.3.attn_k.weight"), 0.0);
    }

    #[test]
    fn refuses_what_llama_cpp_would_compute_differently() {
        let check = |edit: &dyn Fn(&mut Json), want: &str| {
            let mut j = gemma3();
            edit(&mut j);
            let err = HfConfig::read(Arch::Gemma3, &j).unwrap_err().to_string();
            assert!(err.contains(want), "{err}");
        };
        check(
            &|j| j["query_pre_attn_scalar"] = json!(128),
            "query_pre_attn_scalar",
        );
        check(
            &|j| j["attn_logit_softcapping"] = json!(50.0),
            "attn_logit_softcapping",
        );
        check(
            &|j| j["rope_scaling"] = json!({"rope_type": "yarn", "factor": 8.0}),
            "rope scaling",
        );
        check(&|j| j["hidden_activation"] = json!("relu"), "relu");
        check(
            &|j| j["layer_types"] = json!(vec!["full_attention"; 18]),
            "layer_types",
        );
    }

    #[test]
    fn gemma1_keeps_the_mlp_norm_name() {
        let mut j = gemma3();
        j["architectures"] = json!(["GemmaForCausalLM"]);
        let c = HfConfig::read(Arch::Gemma, &j).unwrap();
        assert_eq!(
            c.map_name("model.layers.0.post_attention_layernorm.weight"),
            Some(Mapping::Keep("blk.0.ffn_norm.weight".into()))
        );
        assert_eq!(c.map_name("model.layers.0.self_attn.q_norm.weight"), None);
        assert_eq!(c.map_name("lm_head.weight"), Some(Mapping::Drop));
    }
}
