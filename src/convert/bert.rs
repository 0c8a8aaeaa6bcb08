//! What llama.cpp's `bert` architecture needs from a Hugging Face BERT:
//! hyperparameters from `config.json`, pooling from the sentence-transformers
//! modules, and the mapping of tensor names and types, following
//! `BertModel` in llama.cpp's `convert_hf_to_gguf.py`.

use serde_json::Value as Json;

use super::gguf_writer::{GgmlType, Header, MetaValue};
use super::{read_json, Error, Files};

/// `config.json` architectures handled as plain BERT encoders.
pub const ARCHITECTURES: [&str; 3] = ["BertModel", "BertForMaskedLM", "BertForPreTraining"];

/// llama.cpp's pooling types (`enum llama_pooling_type`).
const POOLING_MEAN: u32 = 1;
const POOLING_CLS: u32 = 2;
const POOLING_LAST: u32 = 3;

/// The hyperparameters written as `bert.*` metadata.
#[derive(Debug)]
pub struct HfConfig {
    pub name: String,
    pub hidden: u64,
    pub intermediate: u64,
    pub layers: u64,
    pub heads: u64,
    pub eps: f32,
    pub max_positions: u64,
    pub type_vocab: u64,
    pub vocab_size: u64,
}

impl HfConfig {
    /// Reads and checks `config.json`.
    pub fn read(json: &Json) -> Result<HfConfig, Error> {
        let num = |key: &str| -> Result<u64, Error> {
            json.get(key)
                .and_then(Json::as_u64)
                .filter(|&n| n > 0 && n <= u64::from(u32::MAX))
                .ok_or_else(|| {
                    Error::BadConfig(format!("{key} is missing or not a positive integer"))
                })
        };
        // llama.cpp's BERT graph hard-codes GELU and absolute positions, so
        // a model built otherwise would load and give wrong vectors.
        let act = json
            .get("hidden_act")
            .and_then(Json::as_str)
            .unwrap_or("gelu");
        if act != "gelu" {
            return Err(Error::BadConfig(format!(
                "hidden_act {act:?} is not supported (llama.cpp's BERT uses gelu)"
            )));
        }
        let pos = json
            .get("position_embedding_type")
            .and_then(Json::as_str)
            .unwrap_or("absolute");
        if pos != "absolute" {
            return Err(Error::BadConfig(format!(
                "position_embedding_type {pos:?} is not supported (only absolute)"
            )));
        }
        let config = HfConfig {
            name: model_name(json),
            hidden: num("hidden_size")?,
            intermediate: num("intermediate_size")?,
            layers: num("num_hidden_layers")?,
            heads: num("num_attention_heads")?,
            eps: json
                .get("layer_norm_eps")
                .and_then(Json::as_f64)
                .unwrap_or(1e-12) as f32,
            max_positions: num("max_position_embeddings")?,
            type_vocab: json
                .get("type_vocab_size")
                .and_then(Json::as_u64)
                .unwrap_or(1),
            vocab_size: json.get("vocab_size").and_then(Json::as_u64).unwrap_or(0),
        };
        if !config.hidden.is_multiple_of(config.heads) {
            return Err(Error::BadConfig(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden, config.heads
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

    /// Adds `general.*` and `bert.*` entries.
    pub fn write_metadata(&self, h: &mut Header, pooling: Option<u32>) {
        h.push_general("bert", "model", &self.name);
        h.push(
            "bert.context_length",
            MetaValue::U32(self.max_positions as u32),
        );
        h.push("bert.embedding_length", MetaValue::U32(self.hidden as u32));
        h.push(
            "bert.feed_forward_length",
            MetaValue::U32(self.intermediate as u32),
        );
        h.push("bert.block_count", MetaValue::U32(self.layers as u32));
        h.push(
            "bert.attention.head_count",
            MetaValue::U32(self.heads as u32),
        );
        h.push(
            "bert.attention.layer_norm_epsilon",
            MetaValue::F32(self.eps),
        );
        h.push("bert.attention.causal", MetaValue::Bool(false));
        if let Some(p) = pooling {
            h.push("bert.pooling_type", MetaValue::U32(p));
        }
    }
}

/// A display name: the last part of `_name_or_path`, else "bert".
fn model_name(json: &Json) -> String {
    json.get("_name_or_path")
        .and_then(Json::as_str)
        .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
        .filter(|s| !s.is_empty())
        .unwrap_or("bert")
        .to_string()
}

/// The pooling llama.cpp should apply, from the sentence-transformers
/// Pooling module (found through `modules.json`, else `1_Pooling/`).
/// `None` when the model has no pooling module, as with a bare BERT.
pub fn pooling(files: &Files) -> Result<Option<u32>, Error> {
    let mut dir = "1_Pooling".to_string();
    if let Some(path) = files.get("modules.json") {
        let modules = read_json(path, "modules.json")?;
        if let Some(m) = modules.as_array().into_iter().flatten().find(|m| {
            m.get("type").and_then(Json::as_str) == Some("sentence_transformers.models.Pooling")
        }) {
            if let Some(p) = m.get("path").and_then(Json::as_str) {
                dir = p.trim_end_matches('/').to_string();
            }
        }
    }
    let key = format!("{dir}/config.json");
    let Some(path) = files.get(&key) else {
        return Ok(None);
    };
    let json = read_json(path, &key)?;
    let on = |k: &str| json.get(k).and_then(Json::as_bool).unwrap_or(false);
    if on("pooling_mode_mean_tokens") {
        Ok(Some(POOLING_MEAN))
    } else if on("pooling_mode_cls_token") {
        Ok(Some(POOLING_CLS))
    } else if on("pooling_mode_lasttoken") {
        Ok(Some(POOLING_LAST))
    } else {
        Err(Error::BadConfig(format!(
            "{key}: only mean, CLS and last-token pooling are supported by llama.cpp"
        )))
    }
}

/// What to do with one source tensor.
#[derive(Debug, PartialEq)]
pub enum Mapping {
    /// Write it under this GGUF name.
    Keep(String),
    /// Leave it out: llama.cpp does not use it.
    Drop,
}

/// Maps a Hugging Face BERT tensor name to llama.cpp's, or says to drop it.
/// `None` means the name is not recognised.
pub fn map_name(name: &str) -> Option<Mapping> {
    let name = name.strip_prefix("bert.").unwrap_or(name);
    // Old TensorFlow-era checkpoints call LayerNorm's parameters gamma/beta.
    let (stem, suffix) = name.rsplit_once('.')?;
    let suffix = match suffix {
        "gamma" | "weight" => "weight",
        "beta" | "bias" => "bias",
        _ if name == "embeddings.position_ids" => return Some(Mapping::Drop),
        _ => return None,
    };
    if stem.starts_with("pooler.")
        || stem.starts_with("cls.predictions")
        || stem.starts_with("cls.seq_relationship")
    {
        return Some(Mapping::Drop);
    }
    let base = match stem {
        "embeddings.word_embeddings" => "token_embd".to_string(),
        "embeddings.token_type_embeddings" => "token_types".to_string(),
        "embeddings.position_embeddings" => "position_embd".to_string(),
        "embeddings.LayerNorm" => "token_embd_norm".to_string(),
        _ => {
            let rest = stem.strip_prefix("encoder.layer.")?;
            let (layer, part) = rest.split_once('.')?;
            let layer: u32 = layer.parse().ok()?;
            let part = match part {
                "attention.self.query" => "attn_q",
                "attention.self.key" => "attn_k",
                "attention.self.value" => "attn_v",
                "attention.output.dense" => "attn_output",
                "attention.output.LayerNorm" => "attn_output_norm",
                "intermediate.dense" => "ffn_up",
                "output.dense" => "ffn_down",
                "output.LayerNorm" => "layer_output_norm",
                _ => return None,
            };
            format!("blk.{layer}.{part}")
        }
    };
    Some(Mapping::Keep(format!("{base}.{suffix}")))
}

/// The element type llama.cpp's converter gives a tensor in an F16 file:
/// matrices named `.weight` go to F16; vectors, biases, and the position
/// and token-type embeddings (which the graph adds as rows) stay F32.
pub fn target_type(gguf_name: &str, n_dims: usize) -> GgmlType {
    let keep_f32 = n_dims < 2
        || !gguf_name.ends_with(".weight")
        || gguf_name.ends_with("_norm.weight")
        || gguf_name == "position_embd.weight"
        || gguf_name == "token_types.weight";
    if keep_f32 {
        GgmlType::F32
    } else {
        GgmlType::F16
    }
}

/// The GGUF tensors llama.cpp refuses to load without, with their expected
/// ggml dims, for a config. Optional ones (biases of q/k/v, token types)
/// are checked only for shape when present.
pub fn expected_shape(config: &HfConfig, n_vocab: u64, gguf_name: &str) -> Option<Vec<u64>> {
    let (e, f) = (config.hidden, config.intermediate);
    let tail = gguf_name
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .map_or(gguf_name, |(_, t)| t);
    Some(match tail {
        "token_embd.weight" => vec![e, n_vocab],
        "token_types.weight" => vec![e, config.type_vocab],
        "position_embd.weight" => vec![e, config.max_positions],
        "attn_q.weight" | "attn_k.weight" | "attn_v.weight" | "attn_output.weight" => vec![e, e],
        "ffn_up.weight" => vec![e, f],
        "ffn_down.weight" => vec![f, e],
        "ffn_up.bias" => vec![f],
        _ if tail.ends_with(".bias") || tail.ends_with("_norm.weight") => vec![e],
        _ => return None,
    })
}

/// The names llama.cpp requires for a config (see `llama_model_bert::
/// load_arch_tensors`).
pub fn required(config: &HfConfig) -> Vec<String> {
    let mut names: Vec<String> = [
        "token_embd.weight",
        "position_embd.weight",
        "token_embd_norm.weight",
        "token_embd_norm.bias",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for i in 0..config.layers {
        for part in [
            "attn_q.weight",
            "attn_k.weight",
            "attn_v.weight",
            "attn_output.weight",
            "attn_output_norm.weight",
            "attn_output_norm.bias",
            "ffn_up.weight",
            "ffn_down.weight",
            "layer_output_norm.weight",
            "layer_output_norm.bias",
        ] {
            names.push(format!("blk.{i}.{part}"));
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(s: &str) -> Option<Mapping> {
        Some(Mapping::Keep(s.to_string()))
    }

    #[test]
    fn maps_names_with_and_without_prefix() {
        assert_eq!(
            map_name("embeddings.word_embeddings.weight"),
            keep("token_embd.weight")
        );
        assert_eq!(
            map_name("bert.embeddings.LayerNorm.gamma"),
            keep("token_embd_norm.weight")
        );
        assert_eq!(
            map_name("encoder.layer.3.attention.self.query.bias"),
            keep("blk.3.attn_q.bias")
        );
        assert_eq!(
            map_name("bert.encoder.layer.11.output.LayerNorm.beta"),
            keep("blk.11.layer_output_norm.bias")
        );
        assert_eq!(
            map_name("encoder.layer.0.output.dense.weight"),
            keep("blk.0.ffn_down.weight")
        );
        assert_eq!(map_name("embeddings.position_ids"), Some(Mapping::Drop));
        assert_eq!(map_name("bert.pooler.dense.weight"), Some(Mapping::Drop));
        assert_eq!(
            map_name("cls.predictions.decoder.weight"),
            Some(Mapping::Drop)
        );
        assert_eq!(map_name("encoder.layer.0.crossattention.x.weight"), None);
        assert_eq!(map_name("something"), None);
    }

    #[test]
    fn picks_types_like_the_python_converter() {
        assert_eq!(target_type("token_embd.weight", 2), GgmlType::F16);
        assert_eq!(target_type("blk.0.attn_q.weight", 2), GgmlType::F16);
        assert_eq!(target_type("blk.0.attn_q.bias", 1), GgmlType::F32);
        assert_eq!(target_type("position_embd.weight", 2), GgmlType::F32);
        assert_eq!(target_type("token_types.weight", 2), GgmlType::F32);
        assert_eq!(target_type("token_embd_norm.weight", 1), GgmlType::F32);
    }
}
