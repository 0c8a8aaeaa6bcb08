//! The vision half of Gemma 3's multimodal checkpoints
//! (`Gemma3ForConditionalGeneration`): the SigLIP vision tower and Gemma 3's
//! projector, written as the separate clip GGUF (projector type `gemma3`)
//! that llama.cpp's `mtmd` library loads beside the text model, following
//! `Gemma3VisionModel` in llama.cpp's converter.
//!
//! Nothing is transposed or permuted: the patch embedding's
//! `[width, 3, p, p]` convolution kernel, the position table and every
//! matrix keep the Hugging Face layout (clip.cpp transposes the input
//! projection itself). The soft-embedding norm gets the +1 that Gemma's
//! RMS norms need; SigLIP's own layer norms are plain. Embeddings stay
//! F32 and the input projection F16, as llama.cpp writes them. The text
//! model is `gemma.rs`'s business.

use std::io::Write;

use serde_json::Value as Json;

use super::bert::Mapping;
use super::decoder::num;
use super::gguf_writer::{GgmlType, Header, MetaValue, TensorSpec};
use super::source::SourceFile;
use super::{gguf_dims, open_sources, read_json, write_gguf, Error, Files, Planned};

/// What Hugging Face prefixes the vision tensors with: the original
/// Gemma 3 saves, then newer `transformers` ones.
const PREFIXES: [&str; 2] = ["", "model."];

/// Image tokens per image when neither `preprocessor_config.json` nor the
/// config says (Gemma 3's 256, a 16×16 grid).
const DEFAULT_IMAGE_TOKENS: u64 = 256;
/// The pooling clip.cpp assumes for Gemma 3 when the key is absent.
const DEFAULT_SCALE_FACTOR: u64 = 4;

/// The vision tower's and projector's hyperparameters.
#[derive(Debug, Clone, PartialEq)]
pub struct HfConfig {
    pub width: u64,
    pub ff: u64,
    pub layers: u64,
    pub heads: u64,
    pub image_size: u64,
    pub patch_size: u64,
    pub eps: f32,
    /// The text model's width, which the projector outputs.
    pub text_width: u64,
    /// Patches pooled per side into one image token.
    pub scale_factor: u64,
    pub image_mean: Vec<f32>,
    pub image_std: Vec<f32>,
}

impl HfConfig {
    /// Reads the vision config of a `Gemma3ForConditionalGeneration`
    /// `config.json` (`None` when it has no `vision_config`), with
    /// `preprocessor_config.json` when the files hold one. `text_width` is
    /// the text model's `hidden_size`.
    pub fn read(json: &Json, files: &Files, text_width: u64) -> Result<Option<HfConfig>, Error> {
        let Some(v) = json.get("vision_config").filter(|v| !v.is_null()) else {
            return Ok(None);
        };
        let model_type = v
            .get("model_type")
            .and_then(Json::as_str)
            .unwrap_or("siglip_vision_model");
        if model_type != "siglip_vision_model" {
            return Err(Error::BadConfig(format!(
                "vision model type {model_type:?} is not supported (Gemma 3's projector needs a SigLIP vision tower, siglip_vision_model)"
            )));
        }
        let act = v
            .get("hidden_act")
            .and_then(Json::as_str)
            .unwrap_or("gelu_pytorch_tanh");
        if !matches!(act, "gelu_pytorch_tanh" | "gelu") {
            return Err(Error::BadConfig(format!(
                "vision hidden_act {act:?} is not supported (clip.cpp's SigLIP uses GELU)"
            )));
        }
        if v.get("num_channels").and_then(Json::as_u64).unwrap_or(3) != 3 {
            return Err(Error::BadConfig(
                "vision num_channels must be 3 (RGB), as clip.cpp feeds it".into(),
            ));
        }
        let vnum = |key: &str| {
            num(v, key).map_err(|_| {
                Error::BadConfig(format!(
                    "vision_config.{key} is missing or not a positive integer"
                ))
            })
        };
        let (image_size, patch_size) = (vnum("image_size")?, vnum("patch_size")?);
        if !image_size.is_multiple_of(patch_size) {
            return Err(Error::BadConfig(format!(
                "vision image_size {image_size} is not a multiple of patch_size {patch_size}"
            )));
        }
        let preprocessor = match files.get("preprocessor_config.json") {
            Some(path) => read_json(path, "preprocessor_config.json")?,
            None => Json::Null,
        };
        let tokens = preprocessor
            .get("image_seq_length")
            .or_else(|| json.get("mm_tokens_per_image"))
            .and_then(Json::as_u64)
            .unwrap_or(DEFAULT_IMAGE_TOKENS);
        let per_side = (tokens as f64).sqrt() as u64;
        let patches_per_side = image_size / patch_size;
        if per_side == 0
            || per_side * per_side != tokens
            || !patches_per_side.is_multiple_of(per_side)
        {
            return Err(Error::BadConfig(format!(
                "{tokens} image tokens do not pool a {patches_per_side}x{patches_per_side} patch grid evenly (clip.cpp's Gemma 3 pools square blocks)"
            )));
        }
        // Gemma 3's processor normalises to [-1, 1].
        let triple = |key: &str| -> Result<Vec<f32>, Error> {
            match preprocessor.get(key) {
                None | Some(Json::Null) => Ok(vec![0.5; 3]),
                Some(Json::Array(a)) if a.len() == 3 => a
                    .iter()
                    .map(|x| x.as_f64().map(|x| x as f32))
                    .collect::<Option<Vec<f32>>>()
                    .ok_or_else(|| {
                        Error::BadConfig(format!("preprocessor_config.json {key} is not numeric"))
                    }),
                Some(other) => Err(Error::BadConfig(format!(
                    "preprocessor_config.json {key} {other} is not three numbers"
                ))),
            }
        };
        Ok(Some(HfConfig {
            width: vnum("hidden_size")?,
            ff: vnum("intermediate_size")?,
            layers: vnum("num_hidden_layers")?,
            heads: vnum("num_attention_heads")?,
            image_size,
            patch_size,
            eps: v
                .get("layer_norm_eps")
                .and_then(Json::as_f64)
                .unwrap_or(1e-6) as f32,
            text_width,
            scale_factor: patches_per_side / per_side,
            image_mean: triple("image_mean")?,
            image_std: triple("image_std")?,
        }))
    }

    /// The clip GGUF name of a checkpoint tensor: `Keep` for the vision
    /// tower and projector, `Drop` for the text model and SigLIP's unused
    /// pooling head, `None` for a vision tensor llama.cpp does not know.
    pub fn map_name(&self, name: &str) -> Option<Mapping> {
        let keep = |s: String| Some(Mapping::Keep(s));
        let Some(rest) = strip_vision(name) else {
            return Some(Mapping::Drop);
        };
        if let Some(p) = rest.strip_prefix("multi_modal_projector.") {
            return match p {
                "mm_input_projection_weight" => keep("mm.input_projection.weight".into()),
                "mm_soft_emb_norm.weight" => keep("mm.soft_emb_norm.weight".into()),
                _ => None,
            };
        }
        let t = rest.strip_prefix("vision_tower.vision_model.")?;
        if t.starts_with("head.") {
            return Some(Mapping::Drop);
        }
        match t {
            "embeddings.patch_embedding.weight" => return keep("v.patch_embd.weight".into()),
            "embeddings.patch_embedding.bias" => return keep("v.patch_embd.bias".into()),
            "embeddings.position_embedding.weight" => return keep("v.position_embd.weight".into()),
            "post_layernorm.weight" => return keep("v.post_ln.weight".into()),
            "post_layernorm.bias" => return keep("v.post_ln.bias".into()),
            _ => {}
        }
        let (layer, part) = t.strip_prefix("encoder.layers.")?.split_once('.')?;
        let layer: u64 = layer.parse().ok()?;
        let (module, kind) = part.rsplit_once('.')?;
        if !matches!(kind, "weight" | "bias") {
            return None;
        }
        let to = match module {
            "self_attn.q_proj" => "attn_q",
            "self_attn.k_proj" => "attn_k",
            "self_attn.v_proj" => "attn_v",
            "self_attn.out_proj" => "attn_out",
            "layer_norm1" => "ln1",
            "layer_norm2" => "ln2",
            "mlp.fc1" => "ffn_up",
            "mlp.fc2" => "ffn_down",
            _ => return None,
        };
        keep(format!("v.blk.{layer}.{to}.{kind}"))
    }

    /// The ggml dims a clip tensor must have.
    pub fn expected_shape(&self, gguf_name: &str) -> Option<Vec<u64>> {
        let (w, f, p) = (self.width, self.ff, self.patch_size);
        let patches = (self.image_size / p).pow(2);
        let tail = gguf_name
            .strip_prefix("v.blk.")
            .and_then(|r| r.split_once('.'))
            .map_or(gguf_name, |(_, t)| t);
        Some(match tail {
            "v.patch_embd.weight" => vec![p, p, 3, w],
            "v.position_embd.weight" => vec![w, patches],
            "mm.input_projection.weight" => vec![self.text_width, w],
            "attn_q.weight" | "attn_k.weight" | "attn_v.weight" | "attn_out.weight" => {
                vec![w, w]
            }
            "ffn_up.weight" => vec![w, f],
            "ffn_up.bias" => vec![f],
            "ffn_down.weight" => vec![f, w],
            _ => vec![w],
        })
    }

    /// Every tensor clip.cpp's Gemma 3 graph reads.
    pub fn required(&self) -> Vec<String> {
        let mut names: Vec<String> = [
            "v.patch_embd.weight",
            "v.patch_embd.bias",
            "v.position_embd.weight",
            "v.post_ln.weight",
            "v.post_ln.bias",
            "mm.soft_emb_norm.weight",
            "mm.input_projection.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for i in 0..self.layers {
            for part in [
                "attn_q", "attn_k", "attn_v", "attn_out", "ln1", "ln2", "ffn_up", "ffn_down",
            ] {
                for kind in ["weight", "bias"] {
                    names.push(format!("v.blk.{i}.{part}.{kind}"));
                }
            }
        }
        names
    }

    /// The element type llama.cpp's F16 conversion gives a clip tensor.
    fn target_type(gguf_name: &str, n_dims: usize) -> GgmlType {
        if gguf_name == "mm.input_projection.weight" {
            GgmlType::F16
        } else if n_dims < 2
            || gguf_name.starts_with("v.patch_embd")
            || gguf_name.starts_with("v.position_embd")
        {
            GgmlType::F32
        } else {
            GgmlType::F16
        }
    }

    /// The `clip.*` metadata.
    pub fn write_metadata(&self, h: &mut Header, name: &str) {
        let u = |n: u64| MetaValue::U32(n as u32);
        h.push_general("clip", "mmproj", name);
        h.push("clip.projector_type", MetaValue::String("gemma3".into()));
        h.push("clip.has_vision_encoder", MetaValue::Bool(true));
        h.push("clip.use_gelu", MetaValue::Bool(true));
        h.push("clip.vision.projection_dim", u(self.text_width));
        h.push("clip.vision.image_size", u(self.image_size));
        h.push("clip.vision.patch_size", u(self.patch_size));
        h.push("clip.vision.embedding_length", u(self.width));
        h.push("clip.vision.feed_forward_length", u(self.ff));
        h.push("clip.vision.block_count", u(self.layers));
        h.push("clip.vision.attention.head_count", u(self.heads));
        h.push(
            "clip.vision.attention.layer_norm_epsilon",
            MetaValue::F32(self.eps),
        );
        h.push(
            "clip.vision.image_mean",
            MetaValue::F32Array(self.image_mean.clone()),
        );
        h.push(
            "clip.vision.image_std",
            MetaValue::F32Array(self.image_std.clone()),
        );
        // clip.cpp assumes 4 (Gemma 3's 64x64 patches to 16x16 tokens);
        // like llama.cpp's converter, write it only when it differs.
        if self.scale_factor != DEFAULT_SCALE_FACTOR {
            h.push("clip.vision.projector.scale_factor", u(self.scale_factor));
        }
    }
}

/// The name without its `model.` prefix when it is a vision tower or
/// projector tensor.
fn strip_vision(name: &str) -> Option<&str> {
    PREFIXES.iter().find_map(|p| {
        let rest = name.strip_prefix(p)?;
        (rest.starts_with("vision_tower.") || rest.starts_with("multi_modal_projector."))
            .then_some(rest)
    })
}

/// Whether the checkpoint holds any vision tensor.
pub fn has_vision_tensors(sources: &[SourceFile]) -> bool {
    sources
        .iter()
        .any(|s| s.tensors.iter().any(|(n, _)| strip_vision(n).is_some()))
}

/// Writes the clip GGUF of `config` from the checkpoint's vision tensors
/// into `out`, streaming; returns the bytes written.
pub fn convert(
    config: &HfConfig,
    name: &str,
    files: &Files,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, Error> {
    let mut sources = open_sources(files, progress)?;
    let mut plan = Vec::new();
    let mut seen = std::collections::HashMap::new();
    for (file, src) in sources.iter().enumerate() {
        for (source_name, info) in &src.tensors {
            let gguf_name = match config.map_name(source_name) {
                Some(Mapping::Keep(n)) => n,
                Some(Mapping::Drop) => continue,
                None => {
                    return Err(Error::BadTensor {
                        name: source_name.clone(),
                        reason: "not a tensor of a SigLIP vision tower or Gemma 3 projector that llama.cpp knows".into(),
                    })
                }
            };
            let dims = gguf_dims(source_name, &gguf_name, &info.shape, 4, &mut seen)?;
            if let Some(layer) = gguf_name
                .strip_prefix("v.blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse::<u64>().ok())
            {
                if layer >= config.layers {
                    return Err(Error::BadTensor {
                        name: source_name.clone(),
                        reason: format!(
                            "layer {layer} is beyond the vision num_hidden_layers {}",
                            config.layers
                        ),
                    });
                }
            }
            if let Some(want) = config.expected_shape(&gguf_name) {
                if want != dims {
                    return Err(Error::BadTensor {
                        name: source_name.clone(),
                        reason: format!(
                            "has ggml shape {dims:?}, the vision config implies {want:?}"
                        ),
                    });
                }
            }
            let ggml_type = HfConfig::target_type(&gguf_name, dims.len());
            let shift = if gguf_name == "mm.soft_emb_norm.weight" {
                1.0
            } else {
                0.0
            };
            plan.push(Planned {
                spec: TensorSpec {
                    name: gguf_name,
                    dims,
                    ggml_type,
                },
                file,
                info: info.clone(),
                source_name: source_name.clone(),
                permute_heads: None,
                shift,
                computed: None,
            });
        }
    }
    for required in config.required() {
        if !plan.iter().any(|p| p.spec.name == required) {
            return Err(Error::BadTensor {
                name: required,
                reason: "missing from the safetensors files (the vision tower or projector is incomplete)".into(),
            });
        }
    }
    plan.sort_by_key(|p| order(&p.spec.name));
    let mut header = Header::default();
    config.write_metadata(&mut header, name);
    header.tensors = plan.iter().map(|p| p.spec.clone()).collect();
    write_gguf(&header, &plan, &mut sources, out, progress)
}

/// Output order: embeddings, blocks in numeric order, then the rest.
fn order(name: &str) -> (u64, String) {
    match name.strip_prefix("v.blk.").and_then(|r| r.split_once('.')) {
        Some((n, rest)) => (
            n.parse::<u64>().map_or(u64::MAX - 1, |n| n + 1),
            rest.to_string(),
        ),
        None if name.starts_with("v.patch") || name.starts_with("v.position") => {
            (0, name.to_string())
        }
        None => (u64::MAX, name.to_string()),
    }
}
