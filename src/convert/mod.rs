//! Converts a Hugging Face Safetensors model directory into a GGUF file that
//! llama.cpp loads. BERT encoders (sentence-transformers embedding models
//! such as all-MiniLM-L6-v2) and decoders (`LlamaForCausalLM`,
//! `MistralForCausalLM`, `Qwen2ForCausalLM`, `Qwen3ForCausalLM`,
//! `GemmaForCausalLM`, `Gemma2ForCausalLM`, `Gemma3ForCausalLM`, the text
//! model of `Gemma3ForConditionalGeneration`, `Phi3ForCausalLM`) with
//! byte-level BPE or SentencePiece tokenizers are supported; the output
//! follows what llama.cpp's `convert_hf_to_gguf.py` writes for them in its
//! default F16 mode.
//!
//! The conversion streams: the GGUF header is computed from the Safetensors
//! headers alone, then each tensor is read, converted and written in small
//! chunks, so memory use does not grow with the model. This module reads
//! the files it is given and writes to the `Write` it is given; it knows
//! nothing of the store, HTTP or llama.cpp.
//!
//! - `gguf_writer.rs`: the GGUF v3 header and data layout.
//! - `source.rs`: Safetensors headers and chunked, converting reads.
//! - `bert.rs`: BERT hyperparameters, pooling, tensor names and types.
//! - `tokenizer.rs`: the WordPiece vocabulary in llama.cpp's spelling.
//! - `llama.rs`: Llama and Qwen hyperparameters, tensor names and the q/k
//!   permutation (Llama only; Qwen keeps the Hugging Face layout).
//! - `decoder.rs`: the steps decoder families share (tensor plan, checks,
//!   vocabulary choice), driven by a family's `Spec`.
//! - `gemma.rs`: Gemma 1–3 hyperparameters, names and the +1 on norms,
//!   and Gemma 3's multimodal layout (its text model).
//! - `siglip.rs`: Gemma 3's SigLIP vision tower and projector, written as
//!   llama.cpp's clip GGUF (projector type `gemma3`).
//! - `phi3.rs`: Phi-3 hyperparameters and its fused projections.
//! - `bpe.rs`: byte-level BPE vocabularies (`tokenizer.ggml.model` gpt2).
//! - `spm.rs`: SentencePiece vocabularies (`tokenizer.ggml.model` llama),
//!   from `tokenizer.model` or a byte-fallback `tokenizer.json`.
//! - `sentencepiece.rs`: the bounded `tokenizer.model` protobuf reader.

mod bert;
mod bpe;
mod decoder;
mod gemma;
mod gguf_writer;
mod llama;
mod phi3;
mod sentencepiece;
mod siglip;
mod source;
mod spm;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_spm;
mod tokenizer;

use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use gguf_writer::{CountingWriter, Header, TensorSpec};
use source::SourceFile;

/// Files of a model directory: name relative to the directory (`/`
/// separated, e.g. `1_Pooling/config.json`) to its path on disk.
pub type Files = HashMap<String, PathBuf>;

/// The most tokens a converted vocabulary may have.
const MAX_VOCAB: u64 = 1 << 20;

/// The largest JSON file read (tokenizer.json of big vocabularies is tens
/// of MiB); anything larger is refused rather than loaded into memory.
const MAX_JSON: u64 = 64 << 20;
/// Output buffer size; tensor chunks are larger and pass straight through.
const OUT_BUFFER: usize = 256 * 1024;

/// The model families this module converts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// A BERT encoder, written as llama.cpp's `bert` architecture.
    Bert,
    /// A Llama-family decoder, written as llama.cpp's `llama` architecture.
    Llama,
    /// A Qwen2 decoder (Llama with q/k/v biases and NEOX RoPE), written as
    /// llama.cpp's `qwen2` architecture.
    Qwen2,
    /// A Qwen3 decoder (Qwen2 without the biases but with per-head q/k
    /// RMS norms), written as llama.cpp's `qwen3` architecture.
    Qwen3,
    /// Gemma (1), written as llama.cpp's `gemma` architecture.
    Gemma,
    /// Gemma 2 (soft-capping, sliding window, sandwich norms), `gemma2`.
    Gemma2,
    /// Gemma 3's text model (q/k norms, 5:1 local:global layers), `gemma3`.
    Gemma3,
    /// Phi-3 (fused qkv and gate/up projections), `phi3`.
    Phi3,
}

impl Arch {
    /// The GGUF `general.architecture` value.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
            Arch::Gemma => "gemma",
            Arch::Gemma2 => "gemma2",
            Arch::Gemma3 => "gemma3",
            Arch::Phi3 => "phi3",
        }
    }
}

/// What can go wrong converting a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("converting model: {0}")]
    Io(#[from] std::io::Error),
    #[error("the model has no {0}")]
    MissingFile(String),
    #[error("bad model config: {0}")]
    BadConfig(String),
    #[error("unsupported architecture {0}; only BERT embedding models (BertModel) and decoders (LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM, GemmaForCausalLM, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3ForConditionalGeneration, Phi3ForCausalLM) can be converted from safetensors")]
    UnsupportedArchitecture(String),
    #[error("bad safetensors file {file}: {reason}")]
    BadSafetensors { file: String, reason: String },
    #[error("tensor {name}: {reason}")]
    BadTensor { name: String, reason: String },
    #[error("tokenizer: {0}")]
    Tokenizer(String),
}

/// Reads a JSON file of the model, refusing files over [`MAX_JSON`].
fn read_json(path: &Path, label: &str) -> Result<Json, Error> {
    let len = std::fs::metadata(path)?.len();
    if len > MAX_JSON {
        return Err(Error::BadConfig(format!(
            "{label} is {len} bytes, over the limit"
        )));
    }
    let bytes = std::fs::read(path)?;
    serde_json::from_slice(&bytes).map_err(|e| Error::BadConfig(format!("{label}: {e}")))
}

/// What a safetensors directory holds, read from `config.json`.
pub fn detect(dir_files: &HashMap<String, PathBuf>) -> Result<Arch, Error> {
    let path = dir_files
        .get("config.json")
        .ok_or_else(|| Error::MissingFile("config.json".into()))?;
    detect_json(&read_json(path, "config.json")?)
}

fn detect_json(config: &Json) -> Result<Arch, Error> {
    let named = config
        .get("architectures")
        .and_then(Json::as_array)
        .and_then(|a| a.first())
        .and_then(Json::as_str);
    match named {
        Some(name) if bert::ARCHITECTURES.contains(&name) => Ok(Arch::Bert),
        Some(name) if llama::ARCHITECTURES.contains(&name) => Ok(Arch::Llama),
        Some("Qwen2ForCausalLM") => Ok(Arch::Qwen2),
        Some("Qwen3ForCausalLM") => Ok(Arch::Qwen3),
        Some("GemmaForCausalLM") => Ok(Arch::Gemma),
        Some("Gemma2ForCausalLM") => Ok(Arch::Gemma2),
        // The multimodal wrapper is converted as its text model.
        Some("Gemma3ForCausalLM" | "Gemma3ForConditionalGeneration") => Ok(Arch::Gemma3),
        Some("Phi3ForCausalLM") => Ok(Arch::Phi3),
        Some(name) => Err(Error::UnsupportedArchitecture(name.to_string())),
        // Without `architectures`, the model type alone decides.
        None => match config.get("model_type").and_then(Json::as_str) {
            Some("bert") => Ok(Arch::Bert),
            Some("llama" | "mistral") => Ok(Arch::Llama),
            Some("qwen2") => Ok(Arch::Qwen2),
            Some("qwen3") => Ok(Arch::Qwen3),
            Some("gemma") => Ok(Arch::Gemma),
            Some("gemma2") => Ok(Arch::Gemma2),
            Some("gemma3_text" | "gemma3") => Ok(Arch::Gemma3),
            Some("phi3") => Ok(Arch::Phi3),
            Some(other) => Err(Error::UnsupportedArchitecture(other.to_string())),
            None => Err(Error::BadConfig(
                "config.json names neither architectures nor model_type".into(),
            )),
        },
    }
}

/// One tensor of the output, with where its data comes from.
struct Planned {
    spec: TensorSpec,
    file: usize,
    info: safetensors::tensor::TensorInfo,
    source_name: String,
    /// For query and key weights of Llama: the head count to permute the
    /// rows for (see [`source::permuted_row`]).
    permute_heads: Option<usize>,
    /// A constant added to every element: 1 for Gemma's RMS norm weights,
    /// which Hugging Face stores as `w` and applies as `1 + w`, while
    /// llama.cpp multiplies by the stored weight.
    shift: f32,
    /// Values the converter computed rather than read (Llama 3.1's
    /// `rope_freqs`), written as F32; `file`, `info` and the fields above
    /// are then unused.
    computed: Option<Vec<f32>>,
}

/// Writes the GGUF into `out`, streaming tensor by tensor; returns bytes
/// written. `progress` gets a short line per step.
pub fn convert(
    files: &HashMap<String, PathBuf>,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, Error> {
    let config_path = files
        .get("config.json")
        .ok_or_else(|| Error::MissingFile("config.json".into()))?;
    let config_json = read_json(config_path, "config.json")?;
    match detect_json(&config_json)? {
        Arch::Bert => {}
        arch @ (Arch::Llama | Arch::Qwen2 | Arch::Qwen3) => {
            return llama::convert(arch, files, &config_json, out, progress)
        }
        arch @ (Arch::Gemma | Arch::Gemma2 | Arch::Gemma3) => {
            // Gemma 3's multimodal checkpoints: the text model only.
            if let Some(text_json) = gemma::multimodal_config(&config_json)? {
                let mut config = gemma::HfConfig::read(arch, &text_json)?;
                config.multimodal = true;
                progress("Gemma3ForConditionalGeneration: converting the text model; the vision tower and projector go to the projector file");
                let tokenizer = decoder::TokenizerChoice {
                    allow_bpe: false,
                    space_prefix: Some(false),
                };
                return decoder::convert(&config, tokenizer, files, &text_json, out, progress);
            }
            let config = gemma::HfConfig::read(arch, &config_json)?;
            // Gemma's converter always writes add_space_prefix false.
            let tokenizer = decoder::TokenizerChoice {
                allow_bpe: false,
                space_prefix: Some(false),
            };
            return decoder::convert(&config, tokenizer, files, &config_json, out, progress);
        }
        Arch::Phi3 => {
            let config = phi3::HfConfig::read(&config_json)?;
            // Phi-4 ships a byte-level BPE under the same architecture.
            let tokenizer = decoder::TokenizerChoice {
                allow_bpe: true,
                space_prefix: None,
            };
            return decoder::convert(&config, tokenizer, files, &config_json, out, progress);
        }
    }
    let config = bert::HfConfig::read(&config_json)?;
    let pooling = bert::pooling(files)?;
    let mut sources = open_sources(files, progress)?;

    let mut plan = plan_tensors(&sources)?;
    let n_vocab = plan
        .iter()
        .find(|p| p.spec.name == "token_embd.weight")
        .and_then(|p| p.spec.dims.get(1).copied())
        .ok_or_else(|| Error::BadTensor {
            name: "token_embd.weight".into(),
            reason: "missing (embeddings.word_embeddings.weight)".into(),
        })?;
    check_plan(
        &Expected {
            required: bert::required(&config),
            layers: config.layers,
            vocab_size: config.vocab_size,
            shape: &|name| bert::expected_shape(&config, n_vocab, name),
        },
        n_vocab,
        &plan,
    )?;

    progress("reading tokenizer");
    let vocab = tokenizer::Vocab::load(files, n_vocab as usize)?;
    if vocab.tokens.len() as u64 != n_vocab {
        return Err(Error::Tokenizer(format!(
            "the tokenizer has {} tokens but the embedding matrix has {n_vocab} rows",
            vocab.tokens.len()
        )));
    }

    let mut header = Header::default();
    config.write_metadata(&mut header, pooling);
    vocab.write_metadata(&mut header, config.type_vocab as u32);
    plan.sort_by_key(|p| tensor_order(&p.spec.name));
    header.tensors = plan.iter().map(|p| p.spec.clone()).collect();
    write_gguf(&header, &plan, &mut sources, out, progress)
}

/// What [`convert_projector`] would write from these files: the vision
/// config of a multimodal Gemma 3 whose checkpoint holds the vision tensors,
/// and the model's name. `None` for every other model, and for a multimodal
/// one whose vision tensors were left out.
fn projector_plan(files: &Files) -> Result<Option<(siglip::HfConfig, String)>, Error> {
    let config_path = files
        .get("config.json")
        .ok_or_else(|| Error::MissingFile("config.json".into()))?;
    let config_json = read_json(config_path, "config.json")?;
    if detect_json(&config_json)? != Arch::Gemma3 {
        return Ok(None);
    }
    let Some(text_json) = gemma::multimodal_config(&config_json)? else {
        return Ok(None);
    };
    let text = gemma::HfConfig::read(Arch::Gemma3, &text_json)?;
    let Some(vision) = siglip::HfConfig::read(&config_json, files, text.hidden)? else {
        return Ok(None);
    };
    if !siglip::has_vision_tensors(&open_sources(files, &mut |_| {})?) {
        return Ok(None);
    }
    Ok(Some((vision, text.name)))
}

/// Whether the files hold a vision projector to convert besides the text
/// model (a `Gemma3ForConditionalGeneration` with its vision tower).
/// Reads the header of one Safetensors file as a conversion does, and
/// nothing more (the fuzz targets in `fuzz/` feed it hostile bytes).
/// Returns the tensor count.
pub fn read_safetensors_header(path: &Path) -> Result<usize, Error> {
    Ok(SourceFile::open(path, "model.safetensors")?.tensors.len())
}

/// Reads the tokenizer files in `files` with each reader a conversion picks
/// from (WordPiece, byte-level BPE, SentencePiece), as the fuzz targets in
/// `fuzz/` do with hostile bytes. Returns each reader's token count.
pub fn read_tokenizers(files: &Files) -> [Result<usize, Error>; 3] {
    let none = serde_json::json!({});
    [
        tokenizer::Vocab::load(files, 0).map(|v| v.tokens.len()),
        bpe::Vocab::load(files, &none, 0).map(|v| v.tokens.len()),
        spm::Vocab::load(files, &none, 0, None).map(|v| v.tokens.len()),
    ]
}

pub fn has_projector(files: &Files) -> Result<bool, Error> {
    Ok(projector_plan(files)?.is_some())
}

/// Writes the vision projector's clip GGUF into `out`, streaming; returns
/// bytes written. Fails when [`has_projector`] would say false.
pub fn convert_projector(
    files: &Files,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, Error> {
    let (config, name) = projector_plan(files)?.ok_or_else(|| {
        Error::BadConfig(
            "the model has no vision tower to convert (only Gemma3ForConditionalGeneration's is supported)"
                .into(),
        )
    })?;
    siglip::convert(&config, &name, files, out, progress)
}

/// Opens every top-level .safetensors file of the model as a shard, in
/// sorted order so that the output is deterministic.
fn open_sources(files: &Files, progress: &mut dyn FnMut(&str)) -> Result<Vec<SourceFile>, Error> {
    let mut shard_names: Vec<&String> = files
        .keys()
        .filter(|k| k.ends_with(".safetensors") && !k.contains('/'))
        .collect();
    shard_names.sort();
    if shard_names.is_empty() {
        return Err(Error::MissingFile("model.safetensors".into()));
    }
    progress("reading safetensors headers");
    let mut sources = Vec::with_capacity(shard_names.len());
    for name in shard_names {
        sources.push(SourceFile::open(&files[name], name)?);
    }
    Ok(sources)
}

/// Writes the header, then each planned tensor's data in header order,
/// checking that each produced exactly the bytes the header promised.
fn write_gguf(
    header: &Header,
    plan: &[Planned],
    sources: &mut [SourceFile],
    out: &mut dyn Write,
    progress: &mut dyn FnMut(&str),
) -> Result<u64, Error> {
    let mut w = CountingWriter::new(BufWriter::with_capacity(OUT_BUFFER, out));
    header.write(&mut w)?;
    let total = plan.len();
    for (i, p) in plan.iter().enumerate() {
        progress(&format!(
            "converting tensor {}/{total} {}",
            i + 1,
            p.spec.name
        ));
        let want = p.spec.byte_size().unwrap_or(0);
        let start = w.written();
        let mut sink = |bytes: &[u8]| w.write_all(bytes);
        match (&p.computed, p.permute_heads) {
            (Some(values), _) => {
                let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
                sink(&bytes)?;
            }
            (None, Some(n_head)) => sources[p.file].stream_permuted(
                &p.source_name,
                &p.info,
                p.spec.ggml_type,
                n_head,
                &mut sink,
            )?,
            (None, None) => sources[p.file].stream(
                &p.source_name,
                &p.info,
                p.spec.ggml_type,
                p.shift,
                &mut sink,
            )?,
        }
        let got = w.written() - start;
        if got != want {
            return Err(Error::BadTensor {
                name: p.source_name.clone(),
                reason: format!("wrote {got} bytes, expected {want}"),
            });
        }
        gguf_writer::pad(&mut w)?;
    }
    w.flush()?;
    Ok(w.written())
}

/// Checks a source tensor about to be written as `gguf_name` (no other
/// tensor maps there; 1 to `max_dims` dimensions) and returns its GGUF
/// dimensions: fastest-varying first, the reverse of PyTorch's row-major
/// shape.
fn gguf_dims(
    name: &str,
    gguf_name: &str,
    shape: &[usize],
    max_dims: usize,
    seen: &mut HashMap<String, String>,
) -> Result<Vec<u64>, Error> {
    if let Some(other) = seen.insert(gguf_name.to_string(), name.to_string()) {
        return Err(Error::BadTensor {
            name: name.to_string(),
            reason: format!("maps to {gguf_name}, as {other} does"),
        });
    }
    if shape.is_empty() || shape.len() > max_dims {
        return Err(Error::BadTensor {
            name: name.to_string(),
            reason: format!(
                "has {} dimensions; 1 to {max_dims} are supported",
                shape.len()
            ),
        });
    }
    Ok(shape.iter().rev().map(|&d| d as u64).collect())
}

/// Maps every source tensor to its output entry, dropping the ones llama.cpp
/// does not use and refusing names it does not know (they would signal a
/// variant of BERT that llama.cpp would compute differently).
fn plan_tensors(sources: &[SourceFile]) -> Result<Vec<Planned>, Error> {
    let mut plan: Vec<Planned> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (file, src) in sources.iter().enumerate() {
        for (name, info) in &src.tensors {
            let gguf_name = match bert::map_name(name) {
                Some(bert::Mapping::Keep(n)) => n,
                Some(bert::Mapping::Drop) => continue,
                None => {
                    return Err(Error::BadTensor {
                        name: name.clone(),
                        reason: "not a tensor of a BERT encoder that llama.cpp knows".into(),
                    })
                }
            };
            let dims = gguf_dims(name, &gguf_name, &info.shape, 4, &mut seen)?;
            let ggml_type = bert::target_type(&gguf_name, dims.len());
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
                shift: 0.0,
                computed: None,
            });
        }
    }
    Ok(plan)
}

/// What a tensor plan must match: the tensors the config requires, its
/// layer count and vocabulary size, and the shape it implies per tensor.
struct Expected<'a> {
    required: Vec<String>,
    layers: u64,
    /// 0 when the config does not say.
    vocab_size: u64,
    shape: &'a dyn Fn(&str) -> Option<Vec<u64>>,
}

/// Checks presence, layer numbers and shapes against the config, so that a
/// mismatched checkpoint fails here with a clear message rather than at
/// load time.
fn check_plan(expected: &Expected<'_>, n_vocab: u64, plan: &[Planned]) -> Result<(), Error> {
    // Every vocabulary entry becomes strings and table rows in the
    // converter and in llama.cpp: a small file with a tall, thin embedding
    // matrix must not make them allocate gigabytes. The largest real
    // vocabularies are about 262,144 entries (Gemma 3).
    if n_vocab > MAX_VOCAB {
        return Err(Error::BadTensor {
            name: "token_embd.weight".into(),
            reason: format!(
                "{n_vocab} rows; a vocabulary of more than {MAX_VOCAB} tokens is not one"
            ),
        });
    }
    let names: HashMap<&str, &Planned> = plan.iter().map(|p| (p.spec.name.as_str(), p)).collect();
    for name in &expected.required {
        if !names.contains_key(name.as_str()) {
            return Err(Error::BadTensor {
                name: name.clone(),
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
            if n >= expected.layers {
                return Err(Error::BadTensor {
                    name: p.source_name.clone(),
                    reason: format!("layer {n} is beyond num_hidden_layers {}", expected.layers),
                });
            }
        }
        if let Some(want) = (expected.shape)(&p.spec.name) {
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
    if expected.vocab_size != 0 && expected.vocab_size != n_vocab {
        return Err(Error::BadConfig(format!(
            "vocab_size is {} but the embedding matrix has {n_vocab} rows",
            expected.vocab_size
        )));
    }
    Ok(())
}

/// Output order: embeddings first, then blocks in numeric order, names
/// alphabetical within a block.
fn tensor_order(name: &str) -> (u64, String) {
    match name.strip_prefix("blk.").and_then(|r| r.split_once('.')) {
        Some((n, rest)) => (
            n.parse::<u64>().map_or(u64::MAX, |n| n + 1),
            rest.to_string(),
        ),
        None => (0, name.to_string()),
    }
}
