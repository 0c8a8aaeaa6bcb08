//! The conversion steps that decoder families share once they know their
//! own names and shapes: mapping every source tensor to its GGUF entry,
//! checking the result against the config, and writing the file with the
//! right vocabulary. A family module (`gemma.rs`, `phi3.rs`) describes
//! itself through [`Spec`]; this module knows no family.

use std::collections::HashMap;
use std::io::Write;

use serde_json::Value as Json;

use super::bert::Mapping;
use super::gguf_writer::{GgmlType, Header, TensorSpec};
use super::source::SourceFile;
use super::{
    bpe, check_plan, gguf_dims, open_sources, spm, tensor_order, write_gguf, Error, Expected,
    Files, Planned,
};

/// What a decoder family tells the shared steps.
pub trait Spec {
    /// The llama.cpp architecture name, for messages.
    fn arch_name(&self) -> &'static str;
    /// `num_hidden_layers`.
    fn layers(&self) -> u64;
    /// `vocab_size` from the config, 0 when absent.
    fn vocab_size(&self) -> u64;
    /// The GGUF name of a source tensor, `Drop`, or `None` for a name the
    /// architecture does not know.
    fn map_name(&self, name: &str) -> Option<Mapping>;
    /// The ggml dims a GGUF tensor must have, when the family knows them.
    fn expected_shape(&self, n_vocab: u64, gguf_name: &str) -> Option<Vec<u64>>;
    /// The GGUF names llama.cpp requires.
    fn required(&self) -> Vec<String>;
    /// What to add to every element of a tensor (see [`Planned::shift`]).
    fn shift(&self, _gguf_name: &str) -> f32 {
        0.0
    }
    /// Adds `general.*` and `<arch>.*` metadata.
    fn write_metadata(&self, h: &mut Header, n_vocab: u64);
}

/// How a family wants its tokenizer written.
pub struct TokenizerChoice {
    /// Whether a byte-level BPE `tokenizer.json` is acceptable (Phi-3's
    /// successors ship one; Gemma never does).
    pub allow_bpe: bool,
    /// The `add_space_prefix` to force for SentencePiece vocabularies.
    pub space_prefix: Option<bool>,
}

/// Converts a decoder whose config is already read into `spec`.
pub fn convert(
    spec: &dyn Spec,
    tokenizer: TokenizerChoice,
    files: &Files,
    config_json: &Json,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, Error> {
    // Refuse unsupported tokenizers before touching the weights.
    let kind = spm::kind(files)?;
    if kind == spm::Kind::ByteLevelBpe && !tokenizer.allow_bpe {
        return Err(Error::Tokenizer(format!(
            "{} models need a SentencePiece tokenizer (tokenizer.model, or a tokenizer.json BPE with byte_fallback)",
            spec.arch_name()
        )));
    }
    let mut sources = open_sources(files, progress)?;
    let mut plan = plan_tensors(spec, &sources)?;
    let n_vocab = plan
        .iter()
        .find(|p| p.spec.name == "token_embd.weight")
        .and_then(|p| p.spec.dims.get(1).copied())
        .ok_or_else(|| Error::BadTensor {
            name: "token_embd.weight".into(),
            reason: "missing (model.embed_tokens.weight)".into(),
        })?;
    check_plan(
        &Expected {
            required: spec.required(),
            layers: spec.layers(),
            vocab_size: spec.vocab_size(),
            shape: &|name| spec.expected_shape(n_vocab, name),
        },
        n_vocab,
        &plan,
    )?;

    progress("reading tokenizer");
    let mut header = Header::default();
    spec.write_metadata(&mut header, n_vocab);
    write_vocab(
        kind,
        files,
        config_json,
        n_vocab,
        tokenizer.space_prefix,
        &mut header,
    )?;
    plan.sort_by_key(|p| tensor_order(&p.spec.name));
    header.tensors = plan.iter().map(|p| p.spec.clone()).collect();
    write_gguf(&header, &plan, &mut sources, out, progress)
}

/// Reads the tokenizer of `kind`, padded to `n_vocab` entries, and adds
/// its `tokenizer.*` metadata to `header`.
pub fn write_vocab(
    kind: spm::Kind,
    files: &Files,
    config_json: &Json,
    n_vocab: u64,
    space_prefix: Option<bool>,
    header: &mut Header,
) -> Result<(), Error> {
    match kind {
        spm::Kind::SentencePiece => {
            spm::Vocab::load(files, config_json, n_vocab as usize, space_prefix)?
                .write_metadata(header)
        }
        spm::Kind::ByteLevelBpe => {
            bpe::Vocab::load(files, config_json, n_vocab as usize)?.write_metadata(header)
        }
    }
    Ok(())
}

/// The element type in an F16 file: matrices F16, norms and other vectors
/// F32, as llama.cpp's converter writes them.
pub fn target_type(gguf_name: &str, n_dims: usize) -> GgmlType {
    if n_dims < 2 || gguf_name.ends_with("norm.weight") {
        GgmlType::F32
    } else {
        GgmlType::F16
    }
}

/// Maps every source tensor to its output entry, refusing names the
/// architecture does not know (they would signal a variant llama.cpp
/// computes differently).
fn plan_tensors(spec: &dyn Spec, sources: &[SourceFile]) -> Result<Vec<Planned>, Error> {
    let mut plan = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (file, src) in sources.iter().enumerate() {
        for (name, info) in &src.tensors {
            let gguf_name = match spec.map_name(name) {
                Some(Mapping::Keep(n)) => n,
                Some(Mapping::Drop) => continue,
                None => {
                    return Err(Error::BadTensor {
                        name: name.clone(),
                        reason: format!(
                            "not a tensor of a {} model that llama.cpp knows",
                            spec.arch_name()
                        ),
                    })
                }
            };
            let dims = gguf_dims(name, &gguf_name, &info.shape, 2, &mut seen)?;
            let ggml_type = target_type(&gguf_name, dims.len());
            let shift = spec.shift(&gguf_name);
            plan.push(Planned {
                spec: TensorSpec {
                    name: gguf_name,
                    dims,
                    ggml_type,
                },
                file,
                info: info.clone(),
                source_name: name.clone(),
                permute_heads: None,
                shift,
                computed: None,
            });
        }
    }
    Ok(plan)
}

/// The part of a tensor name after `blk.N.`, or the whole name.
pub fn block_tail(gguf_name: &str) -> &str {
    gguf_name
        .strip_prefix("blk.")
        .and_then(|r| r.split_once('.'))
        .map_or(gguf_name, |(_, t)| t)
}

/// Splits `model.layers.N.rest` into (N, rest).
pub fn layer_part(name: &str) -> Option<(u32, &str)> {
    let rest = name.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    Some((layer.parse().ok()?, part))
}

/// Reads a positive integer field of config.json.
pub fn num(json: &Json, key: &str) -> Result<u64, Error> {
    json.get(key)
        .and_then(Json::as_u64)
        .filter(|&n| n > 0 && n <= u64::from(u32::MAX))
        .ok_or_else(|| Error::BadConfig(format!("{key} is missing or not a positive integer")))
}
