//! Model options (`num_ctx`, `temperature`, `stop` ...): their types, their
//! defaults, and the merge built-in defaults ← model params ← request.

use serde_json::{Map, Value};

/// The JSON type an option must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Integers (JSON floats are truncated).
    Int,
    /// Floats.
    Float,
    /// Booleans.
    Bool,
    /// A list of strings.
    StrList,
}

/// Every option Ollama knows, with its type.
const KNOWN: &[(&str, Kind)] = &[
    ("num_ctx", Kind::Int),
    ("num_batch", Kind::Int),
    ("num_gpu", Kind::Int),
    ("main_gpu", Kind::Int),
    ("use_mmap", Kind::Bool),
    ("num_thread", Kind::Int),
    ("draft_num_predict", Kind::Int),
    ("num_keep", Kind::Int),
    ("seed", Kind::Int),
    ("num_predict", Kind::Int),
    ("top_k", Kind::Int),
    ("top_p", Kind::Float),
    ("min_p", Kind::Float),
    ("typical_p", Kind::Float),
    ("repeat_last_n", Kind::Int),
    ("temperature", Kind::Float),
    ("repeat_penalty", Kind::Float),
    ("presence_penalty", Kind::Float),
    ("frequency_penalty", Kind::Float),
    ("stop", Kind::StrList),
];

/// Options old clients still send; accepted and dropped.
const LEGACY: &[&str] = &[
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "penalize_newline",
    "numa",
    "low_vram",
    "f16_kv",
    "logits_all",
    "vocab_only",
    "use_mlock",
    "tfs_z",
    "num_gqa",
    "rope_frequency_base",
    "rope_frequency_scale",
];

/// Why an option was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// Not an option Ollama knows (create only; requests ignore unknown keys).
    #[error("unknown parameter '{0}'")]
    Unknown(String),
    /// The value has the wrong JSON type.
    #[error("option \"{key}\" must be of type {kind}")]
    WrongType {
        /// The option.
        key: String,
        /// What it must be.
        kind: &'static str,
    },
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Int => "integer",
        Kind::Float => "float32",
        Kind::Bool => "boolean",
        Kind::StrList => "array",
    }
}

/// Checks one value against its kind and normalises it (floats for ints are
/// truncated; a single string for `stop` becomes a list, as the Modelfile allows).
fn normalise(key: &str, kind: Kind, v: &Value, lenient_stop: bool) -> Result<Value, Error> {
    let wrong = || Error::WrongType {
        key: key.to_string(),
        kind: kind_name(kind),
    };
    match kind {
        Kind::Int => v
            .as_i64()
            .or_else(|| v.as_f64().map(|f| f as i64))
            .map(Value::from)
            .ok_or_else(wrong),
        Kind::Float => v.as_f64().map(Value::from).ok_or_else(wrong),
        Kind::Bool => v.as_bool().map(Value::from).ok_or_else(wrong),
        Kind::StrList => match v {
            Value::Array(items) if items.iter().all(Value::is_string) => Ok(v.clone()),
            Value::String(s) if lenient_stop => Ok(Value::Array(vec![Value::String(s.clone())])),
            _ => Err(wrong()),
        },
    }
}

/// Validates `parameters` of a create request: unknown keys are errors,
/// legacy ones are dropped with a warning.
pub fn validate_parameters(params: &Map<String, Value>) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    for (k, v) in params {
        if LEGACY.contains(&k.as_str()) {
            log::warn!("parameter '{k}' is deprecated and ignored");
            continue;
        }
        let kind = KNOWN
            .iter()
            .find(|(name, _)| name == k)
            .map(|(_, kind)| *kind)
            .ok_or_else(|| Error::Unknown(k.clone()))?;
        out.insert(k.clone(), normalise(k, kind, v, true)?);
    }
    Ok(out)
}

/// Options as inference uses them, after merging.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// Context length per sequence.
    pub num_ctx: u32,
    /// Prompt batch size.
    pub num_batch: u32,
    /// Threads (0 = the process budget decides).
    pub num_thread: u32,
    /// Whether to memory-map weights.
    pub use_mmap: Option<bool>,
    /// Tokens kept on a context shift.
    pub num_keep: u32,
    /// Sampling seed (`None` = random).
    pub seed: Option<u32>,
    /// Maximum new tokens (-1 = unlimited).
    pub num_predict: i32,
    /// Top-k.
    pub top_k: i32,
    /// Top-p.
    pub top_p: f32,
    /// Min-p.
    pub min_p: f32,
    /// Typical-p.
    pub typical_p: f32,
    /// Penalty window (-1 = num_ctx).
    pub repeat_last_n: i32,
    /// Temperature.
    pub temperature: f32,
    /// Repeat penalty.
    pub repeat_penalty: f32,
    /// Presence penalty.
    pub presence_penalty: f32,
    /// Frequency penalty.
    pub frequency_penalty: f32,
    /// Stop sequences.
    pub stop: Vec<String>,
}

impl Options {
    /// Built-in defaults, with the server's default context length.
    pub fn defaults(num_ctx: u32) -> Options {
        Options {
            num_ctx,
            num_batch: 512,
            num_thread: 0,
            use_mmap: None,
            num_keep: 4,
            seed: None,
            num_predict: -1,
            top_k: 40,
            top_p: 0.9,
            min_p: 0.0,
            typical_p: 1.0,
            repeat_last_n: 64,
            temperature: 0.8,
            repeat_penalty: 1.0,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            stop: Vec::new(),
        }
    }

    /// Applies one layer of options (model params, then request options).
    /// Unknown keys are ignored with a warning; wrong types are errors.
    pub fn apply(&mut self, map: &Map<String, Value>) -> Result<(), Error> {
        for (k, v) in map {
            if v.is_null() {
                continue;
            }
            let Some((_, kind)) = KNOWN.iter().find(|(name, _)| name == k) else {
                if !LEGACY.contains(&k.as_str()) {
                    log::warn!("invalid option provided: {k}");
                }
                continue;
            };
            let v = normalise(k, *kind, v, false)?;
            let int = || v.as_i64().unwrap_or(0);
            let float = || v.as_f64().unwrap_or(0.0) as f32;
            match k.as_str() {
                "num_ctx" => self.num_ctx = int().clamp(4, i64::from(u32::MAX)) as u32,
                "num_batch" => self.num_batch = int().clamp(1, 1 << 16) as u32,
                "num_thread" => self.num_thread = int().clamp(0, 1024) as u32,
                "use_mmap" => self.use_mmap = v.as_bool(),
                "num_keep" => self.num_keep = int().clamp(0, i64::from(u32::MAX)) as u32,
                "seed" => self.seed = u32::try_from(int()).ok(),
                "num_predict" => self.num_predict = int().clamp(-2, i64::from(i32::MAX)) as i32,
                "top_k" => self.top_k = int().clamp(0, i64::from(i32::MAX)) as i32,
                "top_p" => self.top_p = float(),
                "min_p" => self.min_p = float(),
                "typical_p" => self.typical_p = float(),
                "repeat_last_n" => self.repeat_last_n = int().clamp(-1, i64::from(i32::MAX)) as i32,
                "temperature" => self.temperature = float(),
                "repeat_penalty" => self.repeat_penalty = float(),
                "presence_penalty" => self.presence_penalty = float(),
                "frequency_penalty" => self.frequency_penalty = float(),
                "stop" => {
                    self.stop = v
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|s| s.as_str().map(str::to_string))
                                .collect()
                        })
                        .unwrap_or_default()
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// Formats a params map as `/api/show` does: key padded to 30 columns, then
/// the value in Go syntax; list values repeat the key.
pub fn show_parameters(params: &Map<String, Value>) -> String {
    let mut lines = Vec::new();
    for (k, v) in params {
        let values: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for v in values {
            lines.push(format!("{k:<30} {}", go_value(v)));
        }
    }
    lines.join("\n")
}

/// A value as Go's `%v`/`%q` would print it in a Modelfile.
pub fn go_value(v: &Value) -> String {
    match v {
        Value::String(s) => Value::String(s.clone()).to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn validates_parameters() {
        let ok = validate_parameters(&obj(
            json!({"temperature": 1, "stop": "<eos>", "num_ctx": 2048.7, "mirostat": 1}),
        ));
        assert_eq!(
            ok.map(Value::Object),
            Ok(json!({"temperature": 1.0, "stop": ["<eos>"], "num_ctx": 2048}))
        );
        assert_eq!(
            validate_parameters(&obj(json!({"bogus": 1}))),
            Err(Error::Unknown("bogus".into()))
        );
        assert_eq!(
            validate_parameters(&obj(json!({"top_k": "many"}))).map_err(|e| e.to_string()),
            Err("option \"top_k\" must be of type integer".into())
        );
    }

    #[test]
    fn merges_layers() {
        let mut o = Options::defaults(4096);
        o.apply(&obj(
            json!({"temperature": 0.2, "stop": ["a"], "unknown": 3}),
        ))
        .expect("params");
        o.apply(&obj(
            json!({"temperature": 0.5, "seed": 42, "num_predict": 3}),
        ))
        .expect("request");
        assert_eq!(
            (o.temperature, o.seed, o.num_predict, o.stop.clone()),
            (0.5, Some(42), 3, vec!["a".to_string()])
        );
        assert!(o.apply(&obj(json!({"stop": "x"}))).is_err());
    }

    #[test]
    fn show_format() {
        let s = show_parameters(&obj(json!({"stop": ["<a>", "<b>"], "temperature": 0.7})));
        assert_eq!(
            s,
            format!(
                "{:<30} \"<a>\"\n{:<30} \"<b>\"\n{:<30} 0.7",
                "stop", "stop", "temperature"
            )
        );
    }
}
