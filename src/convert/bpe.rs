//! Turns a Hugging Face byte-level BPE tokenizer (`tokenizer.json` with a
//! `BPE` model, as Llama 3, Qwen and many Mistral releases ship) into the GGUF
//! `tokenizer.ggml.*` metadata of llama.cpp's `gpt2` tokenizer, following
//! `get_vocab_base` and `SpecialVocab` in llama.cpp's converter.
//! SentencePiece vocabularies are `spm.rs`'s job; Unigram and WordPiece
//! decoder tokenizers are refused for now.

use serde_json::Value as Json;

use super::gguf_writer::{Header, MetaValue};
use super::{read_json, Error, Files};

/// llama.cpp's token types (`llama_token_type` / gguf-py `TokenType`).
const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const UNUSED: i32 = 5;

/// Fragments of the Llama 3 pre-tokenizer regex; a tokenizer whose split
/// pattern holds both gets llama.cpp's `llama-bpe` pre-tokenizer.
const LLAMA3_REGEX_PARTS: [&str; 2] = ["(?i:'s|'t|'re|'ve|'m|'ll|'d)", "\\p{N}{1,3}"];

/// Fragments of the Qwen2 pre-tokenizer regex (also Qwen2.5's and Qwen3's):
/// like Llama 3's but splitting digits one by one, which llama.cpp's `qwen2`
/// pre-tokenizer does.
const QWEN2_REGEX_PARTS: [&str; 2] = [
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)",
    "\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*",
];

/// A vocabulary ready to be written.
#[derive(Debug)]
pub struct Vocab {
    pub tokens: Vec<String>,
    pub types: Vec<i32>,
    pub merges: Vec<String>,
    pub pre: &'static str,
    /// (GGUF key, token id) for each special token found.
    pub specials: Vec<(&'static str, u32)>,
    /// (GGUF key, flag) for `add_bos_token` / `add_eos_token`.
    pub flags: Vec<(&'static str, bool)>,
    pub chat_template: Option<String>,
}

/// The `model` object of a tokenizer.json, checked to be byte-level BPE.
fn model_of(json: &Json) -> Result<&Json, Error> {
    let model = json
        .get("model")
        .ok_or_else(|| Error::Tokenizer("tokenizer.json has no model".into()))?;
    match model.get("type").and_then(Json::as_str) {
        Some("BPE") => {}
        Some(other) => {
            return Err(Error::Tokenizer(format!(
                "{other} tokenizers are not supported yet (only byte-level BPE)"
            )))
        }
        None => {
            return Err(Error::Tokenizer(
                "tokenizer.json names no model type".into(),
            ))
        }
    }
    // A BPE with byte fallback is a SentencePiece vocabulary in disguise
    // (tokens spelled with U+2581); writing it as gpt2 would tokenize wrong.
    if model.get("byte_fallback").and_then(Json::as_bool) == Some(true) {
        return Err(Error::Tokenizer(
            "SentencePiece-style BPE tokenizers (byte_fallback) are not supported yet".into(),
        ));
    }
    Ok(model)
}

/// The chat template: `chat_template.jinja` when the model has one, else
/// the `chat_template` of `tokenizer_config.json` (a string, or a list of
/// named templates of which the default one is what llama.cpp uses).
pub(super) fn chat_template(
    files: &Files,
    tok_config: Option<&Json>,
) -> Result<Option<String>, Error> {
    if let Some(p) = files.get("chat_template.jinja") {
        return Ok(Some(std::fs::read_to_string(p)?));
    }
    Ok(tok_config
        .and_then(|c| c.get("chat_template"))
        .and_then(|t| {
            t.as_str().map(str::to_string).or_else(|| {
                t.as_array()?
                    .iter()
                    .find(|e| e.get("name").and_then(Json::as_str) == Some("default"))?
                    .get("template")?
                    .as_str()
                    .map(str::to_string)
            })
        }))
}

/// The text of a special token entry: a plain string or `{"content": ...}`.
pub(super) fn token_text(v: &Json) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Json::as_str))
}

impl Vocab {
    /// Loads the vocabulary, padded with unused `[PAD{i}]` entries up to
    /// `n_vocab` (the embedding matrix's row count) as llama.cpp's converter
    /// pads to the config's `vocab_size`.
    pub fn load(files: &Files, config: &Json, n_vocab: usize) -> Result<Vocab, Error> {
        let path = files
            .get("tokenizer.json")
            .ok_or_else(|| Error::MissingFile("tokenizer.json".into()))?;
        let json = read_json(path, "tokenizer.json")?;
        let tok_config = match files.get("tokenizer_config.json") {
            Some(p) => Some(read_json(p, "tokenizer_config.json")?),
            None => None,
        };
        let model = model_of(&json)?;

        let mut tokens: Vec<Option<String>> = vec![None; n_vocab];
        let mut types = vec![NORMAL; n_vocab];
        let mut place = |id: u64, text: &str, ty: i32| -> Result<(), Error> {
            let slot = tokens.get_mut(id as usize).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "token {text:?} has id {id}, beyond the {n_vocab} rows of the embedding matrix"
                ))
            })?;
            *slot = Some(text.to_string());
            types[id as usize] = ty;
            Ok(())
        };
        let vocab = model
            .get("vocab")
            .and_then(Json::as_object)
            .ok_or_else(|| Error::Tokenizer("the BPE model has no vocab".into()))?;
        for (text, id) in vocab {
            let id = id
                .as_u64()
                .ok_or_else(|| Error::Tokenizer(format!("token {text:?} has no integer id")))?;
            place(id, text, NORMAL)?;
        }
        // Added tokens are spelled as their literal content; special ones are
        // control tokens llama.cpp never produces from plain text.
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
                return Err(Error::Tokenizer(format!("bad added token {added}")));
            };
            let special = added.get("special").and_then(Json::as_bool) == Some(true);
            place(id, text, if special { CONTROL } else { USER_DEFINED })?;
        }
        // Ids the tokenizer leaves out become unused padding entries.
        let tokens: Vec<String> = tokens
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                t.unwrap_or_else(|| {
                    types[i] = UNUSED;
                    format!("[PAD{i}]")
                })
            })
            .collect();

        let merges = model
            .get("merges")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .map(|m| match m {
                // Newer tokenizers store each merge as a pair.
                Json::Array(pair) => match pair.as_slice() {
                    [Json::String(a), Json::String(b)] => Ok(format!("{a} {b}")),
                    _ => Err(Error::Tokenizer(format!("bad merge {m}"))),
                },
                Json::String(s) => Ok(s.clone()),
                _ => Err(Error::Tokenizer(format!("bad merge {m}"))),
            })
            .collect::<Result<Vec<_>, _>>()?;

        let pre_text = json
            .get("pre_tokenizer")
            .map(Json::to_string)
            .unwrap_or_default();
        let has_all = |parts: &[&str]| {
            parts.iter().all(|p| {
                // The pattern sits JSON-escaped inside the serialised text.
                let escaped = Json::String(p.to_string()).to_string();
                pre_text.contains(escaped.trim_matches('"'))
            })
        };
        let pre = if has_all(&LLAMA3_REGEX_PARTS) {
            "llama-bpe"
        } else if has_all(&QWEN2_REGEX_PARTS) {
            "qwen2"
        } else {
            "default"
        };

        let id_of = |text: &str| tokens.iter().position(|t| t == text).map(|i| i as u32);
        let mut specials = Vec::new();
        for (kind, key) in [
            ("bos", "tokenizer.ggml.bos_token_id"),
            ("eos", "tokenizer.ggml.eos_token_id"),
            ("unk", "tokenizer.ggml.unknown_token_id"),
            ("pad", "tokenizer.ggml.padding_token_id"),
        ] {
            let field = format!("{kind}_token");
            let by_text = tok_config
                .as_ref()
                .and_then(|c| token_text(c.get(&field)?))
                .and_then(id_of);
            // config.json gives ids directly; eos may be a list of them.
            let by_id = || {
                let v = config.get(format!("{kind}_token_id"))?;
                let id = v.as_u64().or_else(|| v.as_array()?.first()?.as_u64())?;
                u32::try_from(id).ok().filter(|&id| (id as usize) < n_vocab)
            };
            if let Some(id) = by_text.or_else(by_id) {
                specials.push((key, id));
            }
        }

        let mut flags = Vec::new();
        for (field, key) in [
            ("add_bos_token", "tokenizer.ggml.add_bos_token"),
            ("add_eos_token", "tokenizer.ggml.add_eos_token"),
        ] {
            if let Some(b) = tok_config.as_ref().and_then(|c| c.get(field)?.as_bool()) {
                flags.push((key, b));
            }
        }
        // Without an explicit flag, the post-processor's template says
        // whether a BOS is prepended (Llama 3 states it only there).
        if !flags.iter().any(|(k, _)| k.ends_with("add_bos_token")) {
            let bos = specials
                .iter()
                .find(|(k, _)| k.ends_with("bos_token_id"))
                .map(|(_, id)| tokens[*id as usize].as_str());
            if let Some(bos) = bos {
                flags.push((
                    "tokenizer.ggml.add_bos_token",
                    template_starts_with(json.get("post_processor"), bos),
                ));
            }
        }

        let chat_template = chat_template(files, tok_config.as_ref())?;

        Ok(Vocab {
            tokens,
            types,
            merges,
            pre,
            specials,
            flags,
            chat_template,
        })
    }

    /// Adds the `tokenizer.*` entries.
    pub fn write_metadata(&self, h: &mut Header) {
        h.push("tokenizer.ggml.model", MetaValue::String("gpt2".into()));
        h.push("tokenizer.ggml.pre", MetaValue::String(self.pre.into()));
        h.push(
            "tokenizer.ggml.tokens",
            MetaValue::StringArray(self.tokens.clone()),
        );
        h.push(
            "tokenizer.ggml.token_type",
            MetaValue::I32Array(self.types.clone()),
        );
        h.push(
            "tokenizer.ggml.merges",
            MetaValue::StringArray(self.merges.clone()),
        );
        push_specials(
            h,
            &self.specials,
            &self.flags,
            self.chat_template.as_deref(),
        );
    }
}

/// The `tokenizer.*` entries both vocabulary kinds share: special token
/// ids, add-BOS/EOS style flags and the chat template.
pub(super) fn push_specials(
    h: &mut Header,
    specials: &[(&'static str, u32)],
    flags: &[(&'static str, bool)],
    chat_template: Option<&str>,
) {
    for (key, id) in specials {
        h.push(key, MetaValue::U32(*id));
    }
    for (key, b) in flags {
        h.push(key, MetaValue::Bool(*b));
    }
    if let Some(t) = chat_template {
        h.push("tokenizer.chat_template", MetaValue::String(t.to_string()));
    }
}

/// Whether a `TemplateProcessing` post-processor (alone or inside a
/// `Sequence`) starts a single sequence with the special token `bos`.
fn template_starts_with(post: Option<&Json>, bos: &str) -> bool {
    let Some(post) = post else {
        return false;
    };
    match post.get("type").and_then(Json::as_str) {
        Some("Sequence") => post
            .get("processors")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .any(|p| template_starts_with(Some(p), bos)),
        Some("TemplateProcessing") => {
            post.get("single")
                .and_then(Json::as_array)
                .and_then(|s| s.first())
                .and_then(|first| first.get("SpecialToken")?.get("id")?.as_str())
                == Some(bos)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_a_llama3_style_tokenizer() {
        let dir = tempfile::tempdir().unwrap();
        let regex = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
        let bos = "<|begin_of_text|>";
        let tokenizer = json!({
            "added_tokens": [{"id": 3, "content": bos, "special": true},
                             {"id": 5, "content": "<tool>", "special": false}],
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated"},
                {"type": "ByteLevel", "add_prefix_space": false}]},
            "post_processor": {"type": "Sequence", "processors": [
                {"type": "ByteLevel"},
                {"type": "TemplateProcessing", "single": [
                    {"SpecialToken": {"id": bos, "type_id": 0}},
                    {"Sequence": {"id": "A", "type_id": 0}}]}]},
            "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2},
                      "merges": [["a", "b"]]}
        });
        let mut files = Files::new();
        for (name, value) in [
            ("tokenizer.json", tokenizer),
            ("tokenizer_config.json", json!({"bos_token": bos})),
        ] {
            let path = dir.path().join(name);
            std::fs::write(&path, value.to_string()).unwrap();
            files.insert(name.to_string(), path);
        }
        let vocab = Vocab::load(&files, &json!({"eos_token_id": [1, 2]}), 6).unwrap();
        assert_eq!(vocab.pre, "llama-bpe");
        assert_eq!(vocab.merges, ["a b"]);
        assert_eq!(vocab.tokens, ["a", "b", "ab", bos, "[PAD4]", "<tool>"]);
        assert_eq!(
            vocab.types,
            [NORMAL, NORMAL, NORMAL, CONTROL, UNUSED, USER_DEFINED]
        );
        assert_eq!(
            vocab.specials,
            [
                ("tokenizer.ggml.bos_token_id", 3),
                ("tokenizer.ggml.eos_token_id", 1)
            ]
        );
        assert_eq!(vocab.flags, [("tokenizer.ggml.add_bos_token", true)]);
        assert_eq!(vocab.chat_template, None);
    }
}
