//! What llama.cpp's `phi3` architecture needs from a Hugging Face
//! `Phi3ForCausalLM`: hyperparameters and tensor names, following
//! `Phi3MiniModel` in llama.cpp's converter. Phi-3 keeps its query, key and
//! value projections fused (`qkv_proj` → `attn_qkv`) and its gate and up
//! projections fused (`gate_up_proj` → `ffn_up`, gate first, which is the
//! order llama.cpp's fused SwiGLU splits); both pass through unchanged.
//! RoPE is NEOX-style on the Hugging Face layout, so nothing is permuted.
//! The long-context variants (`longrope`/`su` scaling with per-dimension
//! factors) are refused for now.

use serde_json::Value as Json;

use super::bert::Mapping;
use super::decoder::{block_tail, layer_part, num, Spec};
use super::gguf_writer::{Header, MetaValue};
use super::Error;

/// The hyperparameters written as `phi3.*` metadata.
#[derive(Debug)]
pub struct HfConfig {
    pub name: String,
    pub hidden: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u64,
    pub heads_kv: u64,
    pub eps: f32,
    pub rope_theta: f32,
    pub rope_dims: u64,
    pub max_positions: u64,
    pub original_max_positions: u64,
    /// Written as the Python converter does (0 when absent); llama.cpp
    /// currently ignores Phi's window and warns when it is set.
    pub sliding_window: u64,
    pub vocab_size: u64,
    pub tied: bool,
}

impl HfConfig {
    /// Reads and checks `config.json`.
    pub fn read(json: &Json) -> Result<HfConfig, Error> {
        let act = json
            .get("hidden_act")
            .and_then(Json::as_str)
            .unwrap_or("silu");
        if act != "silu" {
            return Err(Error::BadConfig(format!(
                "hidden_act {act:?} is not supported (llama.cpp's phi3 uses silu)"
            )));
        }
        if let Some(s) = json
            .get("rope_scaling")
            .filter(|v| !v.is_null())
            .or_else(|| json.get("rope_parameters"))
            .filter(|v| !v.is_null())
        {
            let kind = s
                .get("rope_type")
                .or_else(|| s.get("type"))
                .and_then(Json::as_str)
                .unwrap_or("default");
            if kind != "default" || s.get("long_factor").is_some() {
                return Err(Error::BadConfig(format!(
                    "Phi-3 rope scaling {kind:?} (the long-context variants) is not supported yet"
                )));
            }
        }
        let hidden = num(json, "hidden_size")?;
        let heads = num(json, "num_attention_heads")?;
        let heads_kv = json
            .get("num_key_value_heads")
            .and_then(Json::as_u64)
            .unwrap_or(heads);
        // llama.cpp's phi3 sizes attention by n_embd, so the head size must
        // tile the hidden size.
        if !hidden.is_multiple_of(heads) || heads_kv == 0 || !heads.is_multiple_of(heads_kv) {
            return Err(Error::BadConfig(format!(
                "hidden_size {hidden}, num_attention_heads {heads} and num_key_value_heads {heads_kv} do not fit together"
            )));
        }
        if let Some(d) = json.get("head_dim").and_then(Json::as_u64) {
            if d != hidden / heads {
                return Err(Error::BadConfig(format!(
                    "head_dim {d} is not hidden_size / num_attention_heads ({})",
                    hidden / heads
                )));
            }
        }
        // Newer configs move RoPE settings into rope_parameters.
        let rope_param = |key: &str| {
            json.get(key)
                .or_else(|| json.get("rope_parameters")?.get(key))
                .and_then(Json::as_f64)
        };
        let rot = rope_param("partial_rotary_factor").unwrap_or(1.0);
        let rope_dims = (rot * hidden as f64) as u64 / heads;
        if rope_dims == 0 || !rope_dims.is_multiple_of(2) {
            return Err(Error::BadConfig(format!(
                "partial_rotary_factor {rot} gives {rope_dims} rotary dimensions"
            )));
        }
        let max_positions = num(json, "max_position_embeddings")?;
        let layers = num(json, "num_hidden_layers")?;
        if layers > 1000 {
            return Err(Error::BadConfig(format!(
                "num_hidden_layers {layers} is implausible"
            )));
        }
        Ok(HfConfig {
            name: json
                .get("_name_or_path")
                .and_then(Json::as_str)
                .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
                .filter(|s| !s.is_empty())
                .unwrap_or("phi3")
                .to_string(),
            hidden,
            intermediate: num(json, "intermediate_size")?,
            layers,
            heads,
            heads_kv,
            eps: json
                .get("rms_norm_eps")
                .and_then(Json::as_f64)
                .unwrap_or(1e-5) as f32,
            rope_theta: rope_param("rope_theta").unwrap_or(10_000.0) as f32,
            rope_dims,
            max_positions,
            original_max_positions: match json.get("original_max_position_embeddings") {
                Some(v) if !v.is_null() => num(json, "original_max_position_embeddings")?,
                _ => max_positions,
            },
            // 0 (or absent) means none, as in Phi-4's configs.
            sliding_window: match json.get("sliding_window") {
                Some(v) if !v.is_null() => v
                    .as_u64()
                    .filter(|&n| n <= u64::from(u32::MAX))
                    .ok_or_else(|| {
                        Error::BadConfig(format!("sliding_window {v} is not a valid size"))
                    })?,
                _ => 0,
            },
            vocab_size: json.get("vocab_size").and_then(Json::as_u64).unwrap_or(0),
            tied: json
                .get("tie_word_embeddings")
                .and_then(Json::as_bool)
                .unwrap_or(false),
        })
    }
}

impl Spec for HfConfig {
    fn arch_name(&self) -> &'static str {
        "phi3"
    }

    fn layers(&self) -> u64 {
        self.layers
    }

    fn vocab_size(&self) -> u64 {
        self.vocab_size
    }

    fn map_name(&self, name: &str) -> Option<Mapping> {
        let keep = |s: &str| Some(Mapping::Keep(s.to_string()));
        match name {
            "model.embed_tokens.weight" => return keep("token_embd.weight"),
            "model.norm.weight" => return keep("output_norm.weight"),
            "lm_head.weight" if self.tied => return Some(Mapping::Drop),
            "lm_head.weight" => return keep("output.weight"),
            _ => {}
        }
        let (layer, part) = layer_part(name)?;
        let part = match part {
            "self_attn.rotary_emb.inv_freq" => return Some(Mapping::Drop),
            "input_layernorm.weight" => "attn_norm.weight",
            "self_attn.qkv_proj.weight" => "attn_qkv.weight",
            "self_attn.o_proj.weight" => "attn_output.weight",
            "post_attention_layernorm.weight" => "ffn_norm.weight",
            "mlp.gate_up_proj.weight" => "ffn_up.weight",
            "mlp.down_proj.weight" => "ffn_down.weight",
            _ => return None,
        };
        Some(Mapping::Keep(format!("blk.{layer}.{part}")))
    }

    fn expected_shape(&self, n_vocab: u64, gguf_name: &str) -> Option<Vec<u64>> {
        let (e, f) = (self.hidden, self.intermediate);
        let kv = self.heads_kv * (e / self.heads);
        Some(match block_tail(gguf_name) {
            "token_embd.weight" | "output.weight" => vec![e, n_vocab],
            "output_norm.weight" | "attn_norm.weight" | "ffn_norm.weight" => vec![e],
            "attn_qkv.weight" => vec![e, e + 2 * kv],
            "attn_output.weight" => vec![e, e],
            "ffn_up.weight" => vec![e, 2 * f],
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
        for i in 0..self.layers {
            for part in [
                "attn_norm",
                "attn_qkv",
                "attn_output",
                "ffn_norm",
                "ffn_up",
                "ffn_down",
            ] {
                names.push(format!("blk.{i}.{part}.weight"));
            }
        }
        names
    }

    fn write_metadata(&self, h: &mut Header, _n_vocab: u64) {
        let u = |n: u64| MetaValue::U32(n as u32);
        h.push_general("phi3", "model", &self.name);
        h.push("phi3.context_length", u(self.max_positions));
        h.push(
            "phi3.rope.scaling.original_context_length",
            u(self.original_max_positions),
        );
        h.push("phi3.embedding_length", u(self.hidden));
        h.push("phi3.feed_forward_length", u(self.intermediate));
        h.push("phi3.block_count", u(self.layers));
        h.push("phi3.attention.head_count", u(self.heads));
        h.push("phi3.attention.head_count_kv", u(self.heads_kv));
        h.push(
            "phi3.attention.layer_norm_rms_epsilon",
            MetaValue::F32(self.eps),
        );
        h.push("phi3.rope.dimension_count", u(self.rope_dims));
        h.push("phi3.rope.freq_base", MetaValue::F32(self.rope_theta));
        h.push("phi3.attention.sliding_window", u(self.sliding_window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mini() -> Json {
        json!({"architectures": ["Phi3ForCausalLM"], "hidden_size": 3072,
               "intermediate_size": 8192, "num_hidden_layers": 32,
               "num_attention_heads": 32, "num_key_value_heads": 32,
               "max_position_embeddings": 4096, "original_max_position_embeddings": 4096,
               "rope_scaling": null, "sliding_window": 2047, "vocab_size": 32064})
    }

    #[test]
    fn reads_phi3_mini_and_maps_fused_tensors() {
        let c = HfConfig::read(&mini()).unwrap();
        assert_eq!(c.rope_dims, 96);
        assert_eq!(c.sliding_window, 2047);
        assert_eq!(
            c.map_name("model.layers.2.self_attn.qkv_proj.weight"),
            Some(Mapping::Keep("blk.2.attn_qkv.weight".into()))
        );
        assert_eq!(
            c.expected_shape(32064, "blk.2.attn_qkv.weight"),
            Some(vec![3072, 3 * 3072])
        );
        assert_eq!(
            c.expected_shape(32064, "blk.2.ffn_up.weight"),
            Some(vec![3072, 2 * 8192])
        );
        assert_eq!(c.map_name("model.layers.2.self_attn.q_proj.weight"), None);
    }

    #[test]
    fn reads_rope_parameters() {
        let mut j = mini();
        j["rope_scaling"] = json!(null);
        j["rope_parameters"] =
            json!({"rope_type": "default", "rope_theta": 250000.0, "partial_rotary_factor": 0.5});
        let c = HfConfig::read(&j).unwrap();
        assert_eq!(c.rope_theta, 250000.0);
        assert_eq!(c.rope_dims, 48);
    }

    #[test]
    fn refuses_long_context_rope() {
        let mut j = mini();
        j["rope_scaling"] =
            json!({"type": "longrope", "long_factor": [1.0], "short_factor": [1.0]});
        let err = HfConfig::read(&j).unwrap_err().to_string();
        assert!(err.contains("longrope"), "{err}");
        j["rope_scaling"] = json!({"type": "su", "long_factor": [1.0]});
        assert!(HfConfig::read(&j).is_err());
        j["rope_scaling"] = json!(null);
        j["rope_parameters"] = json!({"rope_type": "longrope", "long_factor": [1.0]});
        assert!(HfConfig::read(&j).is_err());
    }
}
