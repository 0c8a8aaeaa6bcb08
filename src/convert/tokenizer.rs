//! Turns a Hugging Face WordPiece tokenizer (`tokenizer.json`, or a bare
//! `vocab.txt`) into the GGUF `tokenizer.ggml.*` metadata that llama.cpp's
//! WPM tokenizer reads, spelled the way llama.cpp's own converter spells it.

use std::collections::{HashMap, HashSet};

use serde_json::Value as Json;

use super::gguf_writer::{Header, MetaValue};
use super::{read_json, Error, Files};

/// llama.cpp's token types (`llama_token_type` / gguf-py `TokenType`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// The special tokens a BERT tokenizer names, with the GGUF key each id goes
/// to. `bos` and `eos` are derived from `cls` and `sep` afterwards.
const SPECIALS: [(&str, &str); 5] = [
    ("unk", "tokenizer.ggml.unknown_token_id"),
    ("sep", "tokenizer.ggml.seperator_token_id"),
    ("pad", "tokenizer.ggml.padding_token_id"),
    ("cls", "tokenizer.ggml.cls_token_id"),
    ("mask", "tokenizer.ggml.mask_token_id"),
];

/// A vocabulary ready to be written.
#[derive(Debug)]
pub struct Vocab {
    /// Tokens in id order, already in llama.cpp's phantom-space spelling.
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    /// (GGUF key, token id) for each special token found.
    pub specials: Vec<(&'static str, u32)>,
    /// Whether the tokenizer wraps a single sequence as `[CLS] … [SEP]`.
    pub wraps_single: bool,
    /// The BertNormalizer's lowercase flag, when the tokenizer states it.
    pub lowercase: Option<bool>,
    /// The BertNormalizer's strip_accents flag, when stated (not null).
    pub strip_accents: Option<bool>,
}

impl Vocab {
    /// Loads the vocabulary, padded with unused `[PAD{i}]` entries up to
    /// `min_size` (the embedding matrix's row count), as llama.cpp's
    /// converter pads to the config's `vocab_size`.
    pub fn load(files: &Files, min_size: usize) -> Result<Vocab, Error> {
        let config = match files.get("tokenizer_config.json") {
            Some(p) => Some(read_json(p, "tokenizer_config.json")?),
            None => None,
        };
        let special_map = match files.get("special_tokens_map.json") {
            Some(p) => Some(read_json(p, "special_tokens_map.json")?),
            None => None,
        };
        let mut vocab = if let Some(path) = files.get("tokenizer.json") {
            let json = read_json(path, "tokenizer.json")?;
            from_tokenizer_json(&json)?
        } else if let Some(path) = files.get("vocab.txt") {
            from_vocab_txt(path, config.as_ref(), special_map.as_ref())?
        } else {
            return Err(Error::MissingFile("tokenizer.json (or vocab.txt)".into()));
        };
        vocab.finish(min_size, config.as_ref(), special_map.as_ref())?;
        Ok(vocab)
    }

    /// Pads, rewrites the spelling, checks for collisions and resolves the
    /// special token ids.
    fn finish(
        &mut self,
        min_size: usize,
        config: Option<&Json>,
        special_map: Option<&Json>,
    ) -> Result<(), Error> {
        while self.tokens.len() < min_size {
            self.tokens.push(format!("[PAD{}]", self.tokens.len()));
            self.types.push(UNUSED);
        }
        // Look special tokens up by their original spelling, before the
        // phantom-space rewrite changes it.
        let by_text: HashMap<&str, u32> = self
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.as_str(), i as u32))
            .collect();
        let mut ids: HashMap<&str, u32> = HashMap::new();
        for (kind, _) in SPECIALS {
            let field = format!("{kind}_token");
            let text = [config, special_map]
                .into_iter()
                .flatten()
                .find_map(|j| token_text(j.get(&field)?));
            if let Some(id) = text.and_then(|t| by_text.get(t)) {
                ids.insert(kind, *id);
            }
        }
        for (kind, key) in SPECIALS {
            if let Some(&id) = ids.get(kind) {
                self.specials.push((key, id));
            }
        }
        // BERT has no BOS/EOS of its own; llama.cpp's converter (gguf-py
        // SpecialVocab) uses CLS and SEP for them, and llama.cpp's WPM
        // tokenizer adds the BOS id at the start of every input.
        if let Some(&cls) = ids.get("cls") {
            self.specials.push(("tokenizer.ggml.bos_token_id", cls));
        }
        if let Some(&sep) = ids.get("sep") {
            self.specials.push(("tokenizer.ggml.eos_token_id", sep));
        }

        let mut seen: HashMap<String, usize> = HashMap::with_capacity(self.tokens.len());
        for (i, (tok, ty)) in self.tokens.iter_mut().zip(&self.types).enumerate() {
            let spelled = phantom(tok, *ty);
            // llama.cpp asserts (aborting the process) when two ids share a
            // spelling, so a collision must stop the conversion here.
            if let Some(j) = seen.insert(spelled.clone(), i) {
                return Err(Error::Tokenizer(format!(
                    "tokens {j} and {i} are both spelled {spelled:?} in llama.cpp's WordPiece form"
                )));
            }
            *tok = spelled;
        }
        Ok(())
    }

    /// Adds the `tokenizer.ggml.*` entries (and `token_type_count`).
    pub fn write_metadata(&self, h: &mut Header, token_type_count: u32) {
        h.push("tokenizer.ggml.model", MetaValue::String("bert".into()));
        // llama.cpp ignores the pre-tokenizer name for WPM vocabularies; the
        // converter names uncased BERT vocabularies (bge-small's hash)
        // "bert-bge", which all-MiniLM and bert-base-uncased share.
        let pre = if self.lowercase.unwrap_or(true) {
            "bert-bge"
        } else {
            "default"
        };
        h.push("tokenizer.ggml.pre", MetaValue::String(pre.into()));
        h.push(
            "tokenizer.ggml.tokens",
            MetaValue::StringArray(self.tokens.clone()),
        );
        h.push(
            "tokenizer.ggml.token_type",
            MetaValue::I32Array(self.types.clone()),
        );
        h.push(
            "tokenizer.ggml.token_type_count",
            MetaValue::U32(token_type_count),
        );
        for (key, id) in &self.specials {
            h.push(key, MetaValue::U32(*id));
        }
        if self.wraps_single {
            h.push("tokenizer.ggml.add_bos_token", MetaValue::Bool(true));
            h.push("tokenizer.ggml.add_eos_token", MetaValue::Bool(true));
        }
        if let Some(lower) = self.lowercase {
            h.push(
                "tokenizer.ggml.normalizer.lowercase",
                MetaValue::Bool(lower),
            );
        }
        if let Some(strip) = self.strip_accents {
            h.push(
                "tokenizer.ggml.normalizer.strip_accents",
                MetaValue::Bool(strip),
            );
        }
    }
}

/// llama.cpp's WordPiece spelling: control tokens stay as they are,
/// continuations lose their `##`, every other token gains U+2581 (the
/// tokenizer prepends one to each word before matching). A bare `##` would
/// become empty, which llama.cpp renames with a warning; it stays `##`.
fn phantom(tok: &str, ty: i32) -> String {
    if ty == CONTROL {
        return tok.to_string();
    }
    match tok.strip_prefix("##") {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => format!("\u{2581}{tok}"),
    }
}

/// A special token's text from `tokenizer_config.json` or
/// `special_tokens_map.json`: a string or an AddedToken object.
fn token_text(v: &Json) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Json::as_str))
}

/// Reads the WordPiece model, added tokens, normalizer and post-processor.
fn from_tokenizer_json(json: &Json) -> Result<Vocab, Error> {
    let model = json
        .get("model")
        .ok_or_else(|| Error::Tokenizer("tokenizer.json has no model".into()))?;
    let kind = model.get("type").and_then(Json::as_str).unwrap_or("?");
    if kind != "WordPiece" {
        return Err(Error::Tokenizer(format!(
            "tokenizer model is {kind}; only WordPiece BERT tokenizers are supported"
        )));
    }
    if let Some(prefix) = model
        .get("continuing_subword_prefix")
        .and_then(Json::as_str)
    {
        if prefix != "##" {
            return Err(Error::Tokenizer(format!(
                "continuation prefix {prefix:?} is not \"##\", which llama.cpp assumes"
            )));
        }
    }
    let map = model
        .get("vocab")
        .and_then(Json::as_object)
        .ok_or_else(|| Error::Tokenizer("tokenizer.json model.vocab is not a map".into()))?;
    let mut slots: Vec<Option<(String, i32)>> = Vec::new();
    // Ids index a dense array, padded where a gap is: an id far past the
    // number of entries (an 85-byte file with the id 6,736,736 grew the
    // converter past 1 GB, found by fuzzing) is refused, not padded to.
    let entries = map.len().saturating_add(
        json.get("added_tokens")
            .and_then(Json::as_array)
            .map_or(0, Vec::len),
    );
    let most = (entries as u64).saturating_mul(2).saturating_add(1024);
    let mut put = |id: u64, text: &str, ty: i32| -> Result<(), Error> {
        if id >= most {
            return Err(Error::Tokenizer(format!(
                "token id {id} is implausibly large for {entries} tokens"
            )));
        }
        let id = id as usize;
        if slots.len() <= id {
            slots.resize(id + 1, None);
        }
        slots[id] = Some((text.to_string(), ty));
        Ok(())
    };
    for (text, id) in map {
        let id = id
            .as_u64()
            .ok_or_else(|| Error::Tokenizer(format!("token {text:?} has no numeric id")))?;
        put(id, text, NORMAL)?;
    }
    for added in json
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(text)) = (
            added.get("id").and_then(Json::as_u64),
            added.get("content").and_then(Json::as_str),
        ) else {
            return Err(Error::Tokenizer("added token without id or content".into()));
        };
        let special = added
            .get("special")
            .and_then(Json::as_bool)
            .unwrap_or(false);
        put(id, text, if special { CONTROL } else { USER_DEFINED })?;
    }
    let mut tokens = Vec::with_capacity(slots.len());
    let mut types = Vec::with_capacity(slots.len());
    for (i, slot) in slots.into_iter().enumerate() {
        let (text, ty) = slot.unwrap_or_else(|| (format!("[PAD{i}]"), UNUSED));
        tokens.push(text);
        types.push(ty);
    }

    let normalizer = json
        .get("normalizer")
        .filter(|n| n.get("type").and_then(Json::as_str) == Some("BertNormalizer"));
    let lowercase = normalizer.and_then(|n| n.get("lowercase")?.as_bool());
    let strip_accents = normalizer.and_then(|n| n.get("strip_accents")?.as_bool());
    Ok(Vocab {
        tokens,
        types,
        specials: Vec::new(),
        wraps_single: wraps_single(json.get("post_processor")),
        lowercase,
        strip_accents,
    })
}

/// Whether the post-processor's single-sequence template starts and ends
/// with a special token (BERT's `[CLS] $A [SEP]`), which gguf-py records as
/// `add_bos_token` and `add_eos_token`.
fn wraps_single(post: Option<&Json>) -> bool {
    let Some(post) = post else { return false };
    let processors = match post.get("processors").and_then(Json::as_array) {
        Some(list) => list.iter().collect::<Vec<_>>(),
        None => vec![post],
    };
    processors
        .into_iter()
        .any(|p| match p.get("type").and_then(Json::as_str) {
            Some("BertProcessing") => true,
            Some("TemplateProcessing") => {
                let single = p.get("single").and_then(Json::as_array);
                let is_special = |v: Option<&Json>| v.and_then(|v| v.get("SpecialToken")).is_some();
                single.is_some_and(|s| s.len() > 1 && is_special(s.first()) && is_special(s.last()))
            }
            _ => false,
        })
}

/// Reads a bare `vocab.txt` (one token per line, the id is the line
/// number). Tokens named as special in the tokenizer configs are control
/// tokens; everything else is normal.
fn from_vocab_txt(
    path: &std::path::Path,
    config: Option<&Json>,
    special_map: Option<&Json>,
) -> Result<Vocab, Error> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > 64 << 20 {
        return Err(Error::Tokenizer("vocab.txt is over 64 MiB".into()));
    }
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Tokenizer(format!("vocab.txt: {e}")))?;
    let specials: HashSet<&str> = SPECIALS
        .iter()
        .flat_map(|(kind, _)| {
            let field = format!("{kind}_token");
            [config, special_map]
                .into_iter()
                .flatten()
                .filter_map(move |j| token_text(j.get(&field)?))
        })
        .collect();
    let tokens: Vec<String> = text
        .lines()
        .map(|l| l.trim_end_matches('\r').to_string())
        .collect();
    let types = tokens
        .iter()
        .map(|t| {
            if specials.contains(t.as_str()) {
                CONTROL
            } else {
                NORMAL
            }
        })
        .collect();
    let lowercase = config.and_then(|c| c.get("do_lower_case")?.as_bool());
    Ok(Vocab {
        tokens,
        types,
        specials: Vec::new(),
        wraps_single: true,
        lowercase,
        strip_accents: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by fuzzing (`fuzz/corpus/tokenizer/regression-huge-id`): an
    /// 85-byte tokenizer.json whose one id is 6,736,736 was padded to that
    /// many tokens, past 1 GB.
    #[test]
    fn an_id_far_past_the_entries_is_refused() {
        let hostile =
            json!({"model": {"type": "WordPiece", "vocab": {"[PAD]": 6_736_736, "a": 0}}});
        let e = from_tokenizer_json(&hostile)
            .map(|v| v.tokens.len())
            .unwrap_err();
        assert!(e.to_string().contains("implausibly large"), "{e}");
        // Gaps a real tokenizer has are padded.
        let gappy = json!({"model": {"type": "WordPiece", "vocab": {"[PAD]": 0, "a": 5}}});
        let v = from_tokenizer_json(&gappy).expect("a small gap");
        assert_eq!(v.tokens.len(), 6);
    }

    #[test]
    fn spells_tokens_like_llama_cpp() {
        assert_eq!(phantom("[CLS]", CONTROL), "[CLS]");
        assert_eq!(phantom("##ing", NORMAL), "ing");
        assert_eq!(phantom("the", NORMAL), "\u{2581}the");
        assert_eq!(phantom("##", NORMAL), "\u{2581}##");
        assert_eq!(phantom("[unused0]", NORMAL), "\u{2581}[unused0]");
    }

    #[test]
    fn reads_a_small_tokenizer() {
        let json = json!({
            "normalizer": {"type": "BertNormalizer", "lowercase": true, "strip_accents": null},
            "post_processor": {"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": "[CLS]"}}, {"Sequence": {"id": "A"}},
                           {"SpecialToken": {"id": "[SEP]"}}]},
            "model": {"type": "WordPiece", "continuing_subword_prefix": "##",
                      "vocab": {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "hi": 4, "##s": 6}},
            "added_tokens": [
                {"id": 0, "content": "[PAD]", "special": true},
                {"id": 1, "content": "[UNK]", "special": true},
                {"id": 2, "content": "[CLS]", "special": true},
                {"id": 3, "content": "[SEP]", "special": true}
            ]
        });
        let config = json!({"cls_token": "[CLS]", "sep_token": {"content": "[SEP]"},
                            "unk_token": "[UNK]", "pad_token": "[PAD]"});
        let mut v = from_tokenizer_json(&json).unwrap();
        v.finish(8, Some(&config), None).unwrap();
        assert_eq!(
            v.tokens,
            [
                "[PAD]",
                "[UNK]",
                "[CLS]",
                "[SEP]",
                "\u{2581}hi",
                "\u{2581}[PAD5]",
                "s",
                "\u{2581}[PAD7]"
            ]
        );
        assert_eq!(v.types, [3, 3, 3, 3, 1, 5, 1, 5]);
        assert!(v.wraps_single);
        assert_eq!(v.lowercase, Some(true));
        assert_eq!(v.strip_accents, None);
        let specials: HashMap<_, _> = v.specials.iter().copied().collect();
        assert_eq!(specials["tokenizer.ggml.bos_token_id"], 2);
        assert_eq!(specials["tokenizer.ggml.eos_token_id"], 3);
        assert_eq!(specials["tokenizer.ggml.seperator_token_id"], 3);
        assert_eq!(specials["tokenizer.ggml.unknown_token_id"], 1);
        assert!(!specials.contains_key("tokenizer.ggml.mask_token_id"));
    }

    #[test]
    fn refuses_colliding_spellings() {
        // A normal "▁a" gains a U+2581 and becomes "▁▁a"; the continuation
        // "##▁▁a" loses its "##" and becomes the same string.
        let json = json!({"model": {"type": "WordPiece",
            "vocab": {"\u{2581}a": 0, "##\u{2581}\u{2581}a": 1, "\u{2581}\u{2581}a": 2}}});
        let mut v = from_tokenizer_json(&json).unwrap();
        let err = v.finish(0, None, None).unwrap_err();
        assert!(matches!(err, Error::Tokenizer(_)), "{err}");
    }

    #[test]
    fn refuses_other_tokenizer_models() {
        let json = json!({"model": {"type": "BPE", "vocab": {}}});
        let err = from_tokenizer_json(&json).unwrap_err();
        assert!(err.to_string().contains("BPE"), "{err}");
    }
}
