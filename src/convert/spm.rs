//! Turns a SentencePiece tokenizer into the GGUF `tokenizer.ggml.*`
//! metadata of llama.cpp's `llama` (SPM) tokenizer: tokens, scores and
//! token types, special token ids, the BOS/EOS/space-prefix flags and the
//! chat template, following `_create_vocab_sentencepiece`, `LlamaHfVocab`
//! and `SpecialVocab` in llama.cpp's converter.
//!
//! Two sources are read: `tokenizer.model` (the SentencePiece protobuf,
//! parsed by `sentencepiece.rs`), and, when only
//! `tokenizer.json` exists, a Hugging Face BPE model with `byte_fallback`
//! (how Gemma and Llama 2 ship a SentencePiece vocabulary in that format).
//! Byte-level BPE (`gpt2`) vocabularies are `bpe.rs`'s job.

use std::collections::HashMap;

use serde_json::Value as Json;

use super::gguf_writer::{Header, MetaValue};
use super::sentencepiece as proto;
use super::{bpe, read_json, Error, Files};

// llama.cpp's token types (`llama_token_type`), which are also
// SentencePiece's `SentencePiece.Type` numbers.
const NORMAL: i32 = 1;
const UNKNOWN: i32 = 2;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;
const BYTE: i32 = 6;

/// The largest `tokenizer.model` read; real ones are a few MiB (Gemma's
/// 262k pieces take 4.5 MiB).
const MAX_MODEL: u64 = 64 << 20;
/// The score llama.cpp's converter gives added and padding tokens.
const ADDED_SCORE: f32 = -1000.0;
const PAD_SCORE: f32 = -10000.0;

/// Which kind of tokenizer a model directory has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `tokenizer.model`, or a `tokenizer.json` BPE with byte fallback.
    SentencePiece,
    /// A byte-level BPE `tokenizer.json` (see `bpe.rs`).
    ByteLevelBpe,
}

/// Says which tokenizer the model has, refusing the ones no module
/// converts, before any weights are read. `tokenizer.model` wins when both
/// files exist, as in llama.cpp's converter.
pub fn kind(files: &Files) -> Result<Kind, Error> {
    if files.contains_key("tokenizer.model") {
        return Ok(Kind::SentencePiece);
    }
    let path = files
        .get("tokenizer.json")
        .ok_or_else(|| Error::MissingFile("tokenizer.json (or tokenizer.model)".into()))?;
    let json = read_json(path, "tokenizer.json")?;
    let model = json
        .get("model")
        .ok_or_else(|| Error::Tokenizer("tokenizer.json has no model".into()))?;
    match model.get("type").and_then(Json::as_str) {
        Some("BPE") if model.get("byte_fallback").and_then(Json::as_bool) == Some(true) => {
            Ok(Kind::SentencePiece)
        }
        Some("BPE") => Ok(Kind::ByteLevelBpe),
        Some(other) => Err(Error::Tokenizer(format!(
            "{other} tokenizers are not supported yet (only BPE and SentencePiece BPE)"
        ))),
        None => Err(Error::Tokenizer(
            "tokenizer.json names no model type".into(),
        )),
    }
}

/// A SentencePiece vocabulary ready to be written.
#[derive(Debug)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub scores: Vec<f32>,
    pub types: Vec<i32>,
    /// (GGUF key, token id) for each special token found.
    pub specials: Vec<(&'static str, u32)>,
    /// (GGUF key, flag): add BOS/EOS, and whether a space is prepended.
    pub flags: Vec<(&'static str, bool)>,
    pub chat_template: Option<String>,
}

/// What the protobuf says besides the pieces.
#[derive(Debug, Default)]
struct ModelFacts {
    unk: Option<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    pad: Option<u32>,
    add_dummy_prefix: bool,
}

impl Vocab {
    /// Loads the vocabulary, padded with unused `[PAD{i}]` entries up to
    /// `n_vocab` (the embedding matrix's row count). `space_prefix`
    /// overrides whether llama.cpp prepends a space (Gemma's converter
    /// always writes false); `None` takes it from the tokenizer.
    pub fn load(
        files: &Files,
        config: &Json,
        n_vocab: usize,
        space_prefix: Option<bool>,
    ) -> Result<Vocab, Error> {
        let tok_config = match files.get("tokenizer_config.json") {
            Some(p) => Some(read_json(p, "tokenizer_config.json")?),
            None => None,
        };
        // With a tokenizer.model, tokenizer.json (tens of MiB for Gemma)
        // is not needed: its added tokens are also in tokenizer_config.json,
        // which is where llama.cpp's converter reads them from.
        let tok_json = match files.get("tokenizer.json") {
            Some(p) if !files.contains_key("tokenizer.model") => {
                Some(read_json(p, "tokenizer.json")?)
            }
            _ => None,
        };
        let added_json = match files.get("added_tokens.json") {
            Some(p) => Some(read_json(p, "added_tokens.json")?),
            None => None,
        };
        let mut v = Vocab {
            tokens: Vec::new(),
            scores: Vec::new(),
            types: Vec::new(),
            specials: Vec::new(),
            flags: Vec::new(),
            chat_template: bpe::chat_template(files, tok_config.as_ref())?,
        };
        let facts = match files.get("tokenizer.model") {
            Some(path) => {
                let len = std::fs::metadata(path)?.len();
                if len > MAX_MODEL {
                    return Err(Error::Tokenizer(format!(
                        "tokenizer.model is {len} bytes, over the {MAX_MODEL}-byte limit"
                    )));
                }
                let bytes = std::fs::read(path)?;
                v.read_model(&bytes, n_vocab)?
            }
            None => {
                let json = tok_json
                    .as_ref()
                    .ok_or_else(|| Error::MissingFile("tokenizer.model".into()))?;
                v.read_hf(json, n_vocab)?
            }
        };
        // Ids the tokenizer leaves out become unused padding entries, which
        // added tokens may then fill.
        for i in v.tokens.len()..n_vocab {
            v.tokens.push(format!("[PAD{i}]"));
            v.scores.push(PAD_SCORE);
            v.types.push(UNUSED);
        }
        v.add_added_tokens(added_json.as_ref(), tok_json.as_ref(), tok_config.as_ref())?;
        v.find_specials(config, tok_config.as_ref(), &facts);
        for (field, key) in [
            ("add_bos_token", "tokenizer.ggml.add_bos_token"),
            ("add_eos_token", "tokenizer.ggml.add_eos_token"),
        ] {
            if let Some(b) = tok_config.as_ref().and_then(|c| c.get(field)?.as_bool()) {
                v.flags.push((key, b));
            }
        }
        v.flags.push((
            "tokenizer.ggml.add_space_prefix",
            space_prefix.unwrap_or(facts.add_dummy_prefix),
        ));
        Ok(v)
    }

    /// Reads the pieces of a `tokenizer.model`.
    fn read_model(&mut self, bytes: &[u8], n_vocab: usize) -> Result<ModelFacts, Error> {
        let model = proto::parse_model(bytes)
            .map_err(|e| Error::Tokenizer(format!("tokenizer.model: {e}")))?;
        if model.model_type != proto::MODEL_TYPE_BPE {
            return Err(Error::Tokenizer(format!(
                "tokenizer.model is a SentencePiece {} model; only BPE models are supported yet",
                match model.model_type {
                    1 => "Unigram".to_string(),
                    3 => "word".to_string(),
                    4 => "char".to_string(),
                    n => format!("type-{n}"),
                }
            )));
        }
        if model.pieces.len() > n_vocab {
            return Err(Error::Tokenizer(format!(
                "tokenizer.model has {} pieces but the embedding matrix has {n_vocab} rows",
                model.pieces.len()
            )));
        }
        for p in model.pieces {
            self.tokens.push(p.piece);
            self.scores.push(p.score);
            self.types.push(match p.kind {
                UNKNOWN | CONTROL | USER_DEFINED | UNUSED | BYTE => p.kind,
                _ => NORMAL,
            });
        }
        let id = |n: i64| u32::try_from(n).ok().filter(|&i| (i as usize) < n_vocab);
        Ok(ModelFacts {
            unk: id(model.unk_id),
            bos: id(model.bos_id),
            eos: id(model.eos_id),
            pad: id(model.pad_id),
            add_dummy_prefix: model.add_dummy_prefix,
        })
    }

    /// Builds the vocabulary from a `tokenizer.json` BPE with byte
    /// fallback. The scores that llama.cpp's merge-by-score tokenizer needs
    /// come from the merge list: a token made by the merge of rank `r`
    /// scores `-r`, so earlier merges win as in Hugging Face's BPE.
    /// (llama.cpp's `LlamaHfVocab` writes -1000 for every token, which
    /// leaves the merge order to chance.)
    fn read_hf(&mut self, json: &Json, n_vocab: usize) -> Result<ModelFacts, Error> {
        let model = json
            .get("model")
            .ok_or_else(|| Error::Tokenizer("tokenizer.json has no model".into()))?;
        let vocab = model
            .get("vocab")
            .and_then(Json::as_object)
            .ok_or_else(|| Error::Tokenizer("the BPE model has no vocab".into()))?;
        let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
        for (text, id) in vocab {
            let slot = id
                .as_u64()
                .and_then(|id| tokens.get_mut(usize::try_from(id).ok()?))
                .ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "token {text:?} has id {id}, not one of the {n_vocab} rows of the embedding matrix"
                    ))
                })?;
            *slot = Some(text.clone());
        }
        let merges = model
            .get("merges")
            .and_then(Json::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        let mut rank_of: HashMap<String, usize> = HashMap::with_capacity(merges.len());
        for (rank, m) in merges.iter().enumerate() {
            let merged = match m {
                Json::Array(pair) => match pair.as_slice() {
                    [Json::String(a), Json::String(b)] => format!("{a}{b}"),
                    _ => return Err(Error::Tokenizer(format!("bad merge {m}"))),
                },
                Json::String(s) => s
                    .split_once(' ')
                    .map(|(a, b)| format!("{a}{b}"))
                    .ok_or_else(|| Error::Tokenizer(format!("bad merge {m}")))?,
                _ => return Err(Error::Tokenizer(format!("bad merge {m}"))),
            };
            rank_of.entry(merged).or_insert(rank);
        }
        let unk = model.get("unk_token").and_then(Json::as_str);
        let last = tokens
            .iter()
            .rposition(Option::is_some)
            .map_or(0, |i| i + 1);
        for (i, t) in tokens.into_iter().take(last).enumerate() {
            let Some(text) = t else {
                self.tokens.push(format!("[PAD{i}]"));
                self.scores.push(PAD_SCORE);
                self.types.push(UNUSED);
                continue;
            };
            let (score, ty) = if Some(text.as_str()) == unk {
                (0.0, UNKNOWN)
            } else if is_byte_token(&text) {
                (0.0, BYTE)
            } else if let Some(&rank) = rank_of.get(&text) {
                (-(rank as f32), NORMAL)
            } else if text.chars().nth(1).is_none() {
                // Single characters are never the result of a merge.
                (0.0, NORMAL)
            } else {
                // A longer token no merge makes: after every real merge.
                (-(merges.len() as f32) - 1.0, NORMAL)
            };
            self.tokens.push(text);
            self.scores.push(score);
            self.types.push(ty);
        }
        let id_of = |key: &str| -> Option<u32> {
            let text = model.get(key).and_then(Json::as_str)?;
            vocab
                .get(text)?
                .as_u64()
                .and_then(|i| u32::try_from(i).ok())
        };
        // The Prepend("▁") normalizer or a Metaspace pre-tokenizer that
        // prepends is how tokenizer.json spells SentencePiece's dummy prefix.
        let normalizer = json
            .get("normalizer")
            .map(Json::to_string)
            .unwrap_or_default();
        let pre = json
            .get("pre_tokenizer")
            .map(Json::to_string)
            .unwrap_or_default();
        let add_dummy_prefix = normalizer.contains("\"Prepend\"")
            || (pre.contains("\"Metaspace\"")
                && !pre.contains("\"prepend_scheme\":\"never\"")
                && !pre.contains("\"add_prefix_space\":false"));
        Ok(ModelFacts {
            unk: id_of("unk_token"),
            add_dummy_prefix,
            ..ModelFacts::default()
        })
    }

    /// Applies the added tokens of added_tokens.json (Phi-3 ships one),
    /// tokenizer_config.json and tokenizer.json, later ones winning: special
    /// ones become control tokens, the rest user-defined, spelled as their
    /// literal content, as llama.cpp's converter does.
    fn add_added_tokens(
        &mut self,
        added_json: Option<&Json>,
        tok_json: Option<&Json>,
        tok_config: Option<&Json>,
    ) -> Result<(), Error> {
        let mut added: Vec<(u64, String, bool)> = Vec::new();
        if let Some(map) = added_json.and_then(Json::as_object) {
            for (text, id) in map {
                let id = id
                    .as_u64()
                    .ok_or_else(|| Error::Tokenizer(format!("added token {text:?} has no id")))?;
                added.push((id, text.clone(), false));
            }
        }
        if let Some(decoder) = tok_config
            .and_then(|c| c.get("added_tokens_decoder"))
            .and_then(Json::as_object)
        {
            for (id, entry) in decoder {
                let (Ok(id), Some(text)) = (
                    id.parse::<u64>(),
                    entry.get("content").and_then(Json::as_str),
                ) else {
                    return Err(Error::Tokenizer(format!("bad added token {id}: {entry}")));
                };
                let special = entry.get("special").and_then(Json::as_bool) == Some(true);
                added.push((id, text.to_string(), special));
            }
        }
        for entry in tok_json
            .and_then(|j| j.get("added_tokens"))
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(id), Some(text)) = (
                entry.get("id").and_then(Json::as_u64),
                entry.get("content").and_then(Json::as_str),
            ) else {
                return Err(Error::Tokenizer(format!("bad added token {entry}")));
            };
            let special = entry.get("special").and_then(Json::as_bool) == Some(true);
            added.push((id, text.to_string(), special));
        }
        for (id, text, special) in added {
            let Some(i) = usize::try_from(id).ok().filter(|&i| i < self.tokens.len()) else {
                // llama.cpp's converter skips added tokens past the
                // vocabulary; the embedding matrix has no row for them.
                continue;
            };
            self.tokens[i] = text;
            self.scores[i] = ADDED_SCORE;
            self.types[i] = if special { CONTROL } else { USER_DEFINED };
        }
        Ok(())
    }

    /// Finds the BOS, EOS, unknown and padding ids: from the token texts of
    /// tokenizer_config.json, else config.json's ids, else the protobuf's.
    fn find_specials(&mut self, config: &Json, tok_config: Option<&Json>, facts: &ModelFacts) {
        let n_vocab = self.tokens.len();
        let index: HashMap<&str, u32> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let mut specials = Vec::new();
        for (kind, key, fallback) in [
            ("bos", "tokenizer.ggml.bos_token_id", facts.bos),
            ("eos", "tokenizer.ggml.eos_token_id", facts.eos),
            ("unk", "tokenizer.ggml.unknown_token_id", facts.unk),
            ("pad", "tokenizer.ggml.padding_token_id", facts.pad),
        ] {
            let field = format!("{kind}_token");
            let by_text = tok_config
                .and_then(|c| bpe::token_text(c.get(&field)?))
                .and_then(|t| index.get(t).copied());
            let by_id = || {
                let v = config.get(format!("{kind}_token_id"))?;
                let id = v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())?;
                u32::try_from(id).ok().filter(|&id| (id as usize) < n_vocab)
            };
            if let Some(id) = by_text.or_else(by_id).or(fallback) {
                specials.push((key, id));
            }
        }
        self.specials = specials;
    }

    /// Adds the `tokenizer.*` entries.
    pub fn write_metadata(&self, h: &mut Header) {
        h.push("tokenizer.ggml.model", MetaValue::String("llama".into()));
        h.push("tokenizer.ggml.pre", MetaValue::String("default".into()));
        h.push(
            "tokenizer.ggml.tokens",
            MetaValue::StringArray(self.tokens.clone()),
        );
        h.push(
            "tokenizer.ggml.scores",
            MetaValue::F32Array(self.scores.clone()),
        );
        h.push(
            "tokenizer.ggml.token_type",
            MetaValue::I32Array(self.types.clone()),
        );
        bpe::push_specials(
            h,
            &self.specials,
            &self.flags,
            self.chat_template.as_deref(),
        );
    }
}

/// Whether a token is SentencePiece's spelling of a raw byte, `<0xAB>`.
fn is_byte_token(t: &str) -> bool {
    let b = t.as_bytes();
    b.len() == 6
        && b.starts_with(b"<0x")
        && b[5] == b'>'
        && b[3].is_ascii_hexdigit()
        && b[4].is_ascii_hexdigit()
}

#[cfg(test)]
mod tests {
    use super::proto::encode_model;
    use super::*;

    fn pieces() -> Vec<(String, f32, i32)> {
        vec![
            ("<unk>".into(), 0.0, UNKNOWN),
            ("<s>".into(), 0.0, CONTROL),
            ("</s>".into(), 0.0, CONTROL),
            ("<0x0A>".into(), 0.0, BYTE),
            ("\u{2581}a".into(), -1.5, NORMAL),
            ("<tool>".into(), 0.0, USER_DEFINED),
        ]
    }

    #[test]
    fn added_tokens_get_their_types() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Files::new();
        let mut put = |name: &str, bytes: Vec<u8>| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            files.insert(name.to_string(), path);
        };
        put(
            "tokenizer.model",
            encode_model(&pieces(), [0, 1, 2, -1], true),
        );
        put(
            "added_tokens.json",
            br#"{"<|user|>": 6, "<|end|>": 7, "<far>": 99}"#.to_vec(),
        );
        put(
            "tokenizer_config.json",
            br#"{"bos_token": "<s>", "eos_token": "<|end|>", "add_bos_token": true,
                 "added_tokens_decoder": {"7": {"content": "<|end|>", "special": true}},
                 "chat_template": "{{ messages }}"}"#
                .to_vec(),
        );
        let v = Vocab::load(&files, &serde_json::json!({}), 9, None).unwrap();
        assert_eq!(v.tokens[5], "<tool>");
        assert_eq!(v.types[5], USER_DEFINED);
        assert_eq!(
            (v.tokens[6].as_str(), v.types[6]),
            ("<|user|>", USER_DEFINED)
        );
        assert_eq!((v.tokens[7].as_str(), v.types[7]), ("<|end|>", CONTROL));
        assert_eq!(v.scores[7], ADDED_SCORE);
        assert_eq!((v.tokens[8].as_str(), v.types[8]), ("[PAD8]", UNUSED));
        assert_eq!(
            v.specials,
            [
                ("tokenizer.ggml.bos_token_id", 1),
                ("tokenizer.ggml.eos_token_id", 7),
                ("tokenizer.ggml.unknown_token_id", 0)
            ]
        );
        assert_eq!(
            v.flags,
            [
                ("tokenizer.ggml.add_bos_token", true),
                ("tokenizer.ggml.add_space_prefix", true)
            ]
        );
        assert_eq!(v.chat_template.as_deref(), Some("{{ messages }}"));
    }

    #[test]
    fn recognises_byte_tokens() {
        assert!(is_byte_token("<0x0A>"));
        assert!(is_byte_token("<0xff>"));
        assert!(!is_byte_token("<0xG0>"));
        assert!(!is_byte_token("<0x0A"));
        assert!(!is_byte_token("a<0x0A>"));
    }
}
