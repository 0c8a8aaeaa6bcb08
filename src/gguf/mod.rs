//! The GGUF header reader: the metadata key/value table and the tensor table
//! at the front of a GGUF model file. It never reads tensor data.
//!
//! The input is treated as hostile. Every length and count is checked against
//! the bytes that remain before anything is allocated, so a count of 2^60
//! fails with [`Error::Truncated`] instead of allocating; key and tensor names
//! are capped at [`MAX_NAME_LEN`]; arrays nest at most [`MAX_DEPTH`] deep.
//!
//! UTF-8 policy: keys and tensor names must be valid UTF-8 ([`Error::BadUtf8`]
//! otherwise) because they are identifiers we look things up by. String
//! values are decoded lossily (invalid bytes become U+FFFD), which is what
//! Ollama ends up sending too: Go keeps the raw bytes and its JSON encoder
//! replaces invalid sequences. Strings inside arrays that are skipped rather
//! than kept are not decoded at all.
//!
//! Arrays always keep their element type and length. Their elements are kept
//! only when the caller asks (`keep_arrays`) or the array is short
//! ([`ALWAYS_KEEP`] elements or fewer): token lists in real models hold
//! ~260k strings, and `/api/show` without `verbose` never needs them.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use memmap2::Mmap;
use serde_json::Value as Json;

/// The longest key or tensor name accepted. Real keys are under 100 bytes.
pub const MAX_NAME_LEN: u64 = 1 << 20;
/// The longest string value accepted. Chat templates run to tens of KiB; a
/// string beyond this is corruption, not a template.
pub const MAX_STRING_LEN: u64 = 256 << 20;
/// How deep arrays of arrays may nest. Real files use at most one level.
pub const MAX_DEPTH: u32 = 8;
/// The most tensor dimensions accepted. ggml uses 4; a little slack is kept.
pub const MAX_DIMS: u32 = 8;
/// Arrays this short are always kept, so small metadata arrays (layer
/// patterns, rope sections) are there even without `keep_arrays`.
pub const ALWAYS_KEEP: u64 = 64;
/// The most elements a kept array may have; it bounds memory use with
/// `keep_arrays` (each element costs ~32 bytes however small it is on disk).
pub const MAX_KEPT_ELEMENTS: u64 = 1 << 26;
/// The most array elements kept in one header, all arrays together: each
/// becomes a ~48-byte value however small it is on disk, so a file of many
/// small arrays would otherwise cost gigabytes. The largest real vocabulary
/// (262k tokens with scores and types, plus merges) is under 1.5 million.
pub const MAX_TOTAL_KEPT: u64 = 1 << 22;
/// Ollama's `/api/show` blanks arrays longer than this unless `verbose`.
const MODEL_INFO_SHORT: u64 = 5;

const MAGIC: &[u8; 4] = b"GGUF";

// GGUF value type codes.
const T_U8: u32 = 0;
const T_I8: u32 = 1;
const T_U16: u32 = 2;
const T_I16: u32 = 3;
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;
const T_U64: u32 = 10;
const T_I64: u32 = 11;
const T_F64: u32 = 12;

/// The smallest possible encoding of one KV: an empty key (8-byte length),
/// the type (4) and a one-byte value.
const MIN_KV_SIZE: u64 = 8 + 4 + 1;
/// The smallest possible tensor info: an empty name (8), n_dims (4), no
/// dims, the ggml type (4) and the offset (8).
const MIN_TENSOR_SIZE: u64 = 8 + 4 + 4 + 8;

/// What can go wrong reading a GGUF header.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading GGUF file: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a GGUF file (bad magic)")]
    NotGguf,
    #[error("unsupported GGUF version {0} (only 2 and 3 are read)")]
    UnsupportedVersion(u32),
    #[error("GGUF file truncated: {need} bytes needed at offset {offset}")]
    Truncated { offset: u64, need: u64 },
    #[error("GGUF {what} is {value}, above the limit of {limit}")]
    TooLarge {
        what: &'static str,
        value: u64,
        limit: u64,
    },
    #[error("GGUF {what} at offset {offset} is not valid UTF-8")]
    BadUtf8 { what: &'static str, offset: u64 },
    #[error("unknown GGUF value type {0}")]
    BadType(u32),
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    String(String),
    Array(ArrayValue),
}

/// An array value. `elem_type` and `len` are always known; `values` is
/// `None` when the elements were skipped (a long array read without
/// `keep_arrays`).
#[derive(Debug, Clone, PartialEq)]
pub struct ArrayValue {
    /// The GGUF type code of the elements (0 u8 ... 12 f64).
    pub elem_type: u32,
    pub len: u64,
    pub values: Option<Vec<Value>>,
}

impl Value {
    /// The value as an unsigned integer, for any integer type holding a
    /// non-negative number. Writers disagree on u32 versus u64 (and even
    /// i32) for the same key, so lookups accept all of them.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&ArrayValue> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions as stored, innermost (ggml `ne[0]`) first.
    pub shape: Vec<u64>,
    /// The ggml tensor type code (0 F32, 1 F16, 12 Q4_K, ...).
    pub ggml_type: u32,
    /// Offset of the data relative to the start of the aligned data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The number of elements (the product of the shape), saturating so a
    /// hostile shape cannot overflow.
    pub fn elements(&self) -> u64 {
        self.shape
            .iter()
            .fold(1u64, |acc, &d| acc.saturating_mul(d))
    }
}

/// A parsed GGUF header.
#[derive(Debug, Clone, PartialEq)]
pub struct Gguf {
    pub version: u32,
    /// Metadata in file order.
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
}

impl Gguf {
    /// Memory-maps the file at `path` and parses its header.
    pub fn open(path: &Path, keep_arrays: bool) -> Result<Gguf, Error> {
        let file = File::open(path)?;
        // SAFETY: the file is a content-addressed blob that the store never
        // modifies in place (a new digest is a new file), so the mapping does
        // not change under us. A mapping shorter than the header claims is
        // caught by the bounds checks in `Reader`, which never read past the
        // slice.
        let map = unsafe { Mmap::map(&file)? };
        Gguf::parse(&map, keep_arrays)
    }

    /// Parses a GGUF header from bytes (the whole file or any prefix that
    /// holds the header).
    pub fn parse(bytes: &[u8], keep_arrays: bool) -> Result<Gguf, Error> {
        if !bytes.starts_with(MAGIC) {
            // A prefix of the magic is a truncated file, not a foreign one.
            return Err(if MAGIC.starts_with(bytes) {
                Error::Truncated {
                    offset: 0,
                    need: MAGIC.len() as u64,
                }
            } else {
                Error::NotGguf
            });
        }
        let mut r = Reader {
            buf: bytes,
            pos: MAGIC.len(),
            kept: 0,
        };
        let version = r.u32()?;
        // Version 1 used 32-bit counts and lengths; nothing still in use
        // writes it, so it is refused rather than parsed a second way. A
        // big-endian file also lands here, its version reading as 2^25+.
        if version != 2 && version != 3 {
            return Err(Error::UnsupportedVersion(version));
        }
        let tensor_count = r.u64()?;
        let kv_count = r.u64()?;

        r.ensure(kv_count, MIN_KV_SIZE)?;
        let mut kv = Vec::with_capacity(capacity(kv_count));
        for _ in 0..kv_count {
            let key = r.name("key")?;
            let ty = r.u32()?;
            let value = read_value(&mut r, ty, 0, keep_arrays)?;
            kv.push((key, value));
        }

        r.ensure(tensor_count, MIN_TENSOR_SIZE)?;
        let mut tensors = Vec::with_capacity(capacity(tensor_count));
        for _ in 0..tensor_count {
            let name = r.name("tensor name")?;
            let n_dims = r.u32()?;
            at_most("tensor dimension count", n_dims.into(), MAX_DIMS.into())?;
            let mut shape = Vec::with_capacity(capacity(n_dims.into()));
            for _ in 0..n_dims {
                shape.push(r.u64()?);
            }
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                shape,
                ggml_type,
                offset,
            });
        }

        Ok(Gguf {
            version,
            kv,
            tensors,
        })
    }

    /// The value of `key`. With duplicate keys the last one wins, as it does
    /// in Ollama (which reads the table into a map).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn get_str(&self, key: &str) -> Option<&str> {
        self.get(key).and_then(Value::as_str)
    }

    fn get_arch_u64(&self, suffix: &str) -> Option<u64> {
        let arch = self.architecture()?;
        self.get(&format!("{arch}.{suffix}"))?.as_u64()
    }

    /// `general.architecture`, e.g. "llama" or "gemma3".
    pub fn architecture(&self) -> Option<&str> {
        self.get_str("general.architecture")
    }

    /// The parameter count the way Ollama reports it: the sum of the element
    /// counts of all tensors. Ollama overwrites `general.parameter_count`
    /// with this sum when it decodes a file, so a stored value is used only
    /// when the file has no tensor table to sum.
    pub fn parameter_count(&self) -> u64 {
        if self.tensors.is_empty() {
            return self
                .get("general.parameter_count")
                .and_then(Value::as_u64)
                .unwrap_or(0);
        }
        self.tensors
            .iter()
            .fold(0u64, |acc, t| acc.saturating_add(t.elements()))
    }

    /// `general.file_type` (llama.cpp's `llama_ftype`); see [`file_type_name`].
    pub fn file_type(&self) -> Option<u32> {
        self.get("general.file_type")?
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
    }

    /// `<arch>.context_length`: the context the model was trained for.
    pub fn context_length(&self) -> Option<u64> {
        self.get_arch_u64("context_length")
    }

    /// `<arch>.embedding_length`: the hidden size.
    pub fn embedding_length(&self) -> Option<u64> {
        self.get_arch_u64("embedding_length")
    }

    /// `tokenizer.chat_template`, the Jinja template shipped in the file.
    pub fn chat_template(&self) -> Option<&str> {
        self.get_str("tokenizer.chat_template")
    }

    /// `general.type`: "model", "adapter", "mmproj", ... (absent in many
    /// older files, which are models).
    pub fn general_type(&self) -> Option<&str> {
        self.get_str("general.type")
    }

    /// Ollama's `model_info` map for `/api/show`: every KV except
    /// `general.name` and `tokenizer.chat_template`, plus
    /// `general.parameter_count` set to [`Gguf::parameter_count`] as Ollama
    /// patches it in. Keys are sorted, as Go's encoder writes maps. Arrays
    /// longer than 5 elements become `[]` unless `verbose`; with `verbose`,
    /// arrays whose elements were not kept (file read without
    /// `keep_arrays`) also come out as `[]`.
    pub fn model_info(&self, verbose: bool) -> serde_json::Map<String, Json> {
        let mut sorted: BTreeMap<&str, Json> = BTreeMap::new();
        for (key, value) in &self.kv {
            if key == "general.name" || key == "tokenizer.chat_template" {
                continue;
            }
            let json = match value {
                Value::Array(a) if !verbose && a.len > MODEL_INFO_SHORT => Json::Array(Vec::new()),
                v => value_json(v),
            };
            sorted.insert(key, json);
        }
        sorted.insert(
            "general.parameter_count",
            Json::from(self.parameter_count()),
        );
        sorted.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
    }
}

/// A value as JSON, the way Go's encoder writes the decoded value.
fn value_json(value: &Value) -> Json {
    match value {
        Value::U8(v) => Json::from(*v),
        Value::I8(v) => Json::from(*v),
        Value::U16(v) => Json::from(*v),
        Value::I16(v) => Json::from(*v),
        Value::U32(v) => Json::from(*v),
        Value::I32(v) => Json::from(*v),
        Value::U64(v) => Json::from(*v),
        Value::I64(v) => Json::from(*v),
        // Go formats a float32 with its shortest 32-bit representation, so
        // 1e-6f32 is written 1e-06, not 9.99999997e-07. Going through the
        // shortest decimal string gives the same number. NaN and infinities
        // have no JSON form and become null.
        Value::F32(v) => {
            let shortest = format!("{v}").parse::<f64>().unwrap_or(f64::NAN);
            serde_json::Number::from_f64(shortest).map_or(Json::Null, Json::Number)
        }
        Value::F64(v) => serde_json::Number::from_f64(*v).map_or(Json::Null, Json::Number),
        Value::Bool(v) => Json::Bool(*v),
        Value::String(s) => Json::String(s.clone()),
        Value::Array(a) => Json::Array(
            a.values
                .as_deref()
                .unwrap_or_default()
                .iter()
                .map(value_json)
                .collect(),
        ),
    }
}

/// Ollama's name for a `general.file_type` value, "unknown" when it has none.
///
/// The numbering is llama.cpp's `llama_ftype`. Ollama's `FileType.String()`
/// names F32..Q6_K, Q2_K_S and BF16, and also calls 4 "MXFP4" (it reuses the
/// retired Q4_1_F16 slot for gpt-oss); llama.cpp's own MXFP4 type is 38
/// (`MOSTLY_MXFP4_MOE`). The IQ and TQ names come from llama.cpp; current
/// Ollama prints "unknown" for them. 5, 6 and 33..35 are retired.
pub fn file_type_name(ft: u32) -> &'static str {
    // Indexed by llama_ftype; "" marks retired numbers.
    const NAMES: [&str; 39] = [
        "F32", "F16", "Q4_0", "Q4_1", "MXFP4", "", "", "Q8_0", "Q5_0", "Q5_1", "Q2_K", "Q3_K_S",
        "Q3_K_M", "Q3_K_L", "Q4_K_S", "Q4_K_M", "Q5_K_S", "Q5_K_M", "Q6_K", "IQ2_XXS", "IQ2_XS",
        "Q2_K_S", "IQ3_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S", "IQ3_M", "IQ2_S", "IQ2_M",
        "IQ4_XS", "IQ1_M", "BF16", "", "", "", "TQ1_0", "TQ2_0", "MXFP4",
    ];
    let name = usize::try_from(ft).ok().and_then(|i| NAMES.get(i));
    name.copied().filter(|n| !n.is_empty()).unwrap_or("unknown")
}

/// ggml's name for a tensor type (`ggml_type`), as `/api/show` lists tensors.
pub fn ggml_type_name(t: u32) -> &'static str {
    const NAMES: &[(u32, &str)] = &[
        (0, "F32"),
        (1, "F16"),
        (2, "Q4_0"),
        (3, "Q4_1"),
        (6, "Q5_0"),
        (7, "Q5_1"),
        (8, "Q8_0"),
        (9, "Q8_1"),
        (10, "Q2_K"),
        (11, "Q3_K"),
        (12, "Q4_K"),
        (13, "Q5_K"),
        (14, "Q6_K"),
        (15, "Q8_K"),
        (16, "IQ2_XXS"),
        (17, "IQ2_XS"),
        (18, "IQ3_XXS"),
        (19, "IQ1_S"),
        (20, "IQ4_NL"),
        (21, "IQ3_S"),
        (22, "IQ2_S"),
        (23, "IQ4_XS"),
        (24, "I8"),
        (25, "I16"),
        (26, "I32"),
        (27, "I64"),
        (28, "F64"),
        (29, "IQ1_M"),
        (30, "BF16"),
        (34, "TQ1_0"),
        (35, "TQ2_0"),
        (39, "MXFP4"),
    ];
    NAMES
        .iter()
        .find(|(n, _)| *n == t)
        .map_or("unknown", |(_, name)| name)
}

/// Ollama's human parameter size (`format.HumanNumber`), used for
/// `details.parameter_size`. The rule, from Ollama's format/format.go:
/// - n >= 1e9: n/1e9 as "%.0fB" when it is a whole number, else "%.1fB"
///   (8030261248 → "8.0B", 1e9 → "1B", 1e12 → "1000B": there is no T);
/// - n >= 1e6: n/1e6 as "%.0fM" when whole, else "%.2fM"
///   (268098176 → "268.10M", 125000000 → "125M");
/// - n >= 1e3: n/1e3 as "%.0fK" (1001 → "1K");
/// - otherwise the plain integer.
///
/// Rust's `{:.N}` rounds the exact binary value to nearest like Go's `%.Nf`.
pub fn human_parameters(n: u64) -> String {
    const THOUSAND: f64 = 1e3;
    const MILLION: f64 = 1e6;
    const BILLION: f64 = 1e9;
    let x = n as f64;
    let scaled = |div: f64, decimals: usize, unit: &str| {
        let v = x / div;
        if v == v.floor() {
            format!("{v:.0}{unit}")
        } else {
            format!("{v:.decimals$}{unit}")
        }
    };
    if n >= 1_000_000_000 {
        scaled(BILLION, 1, "B")
    } else if n >= 1_000_000 {
        scaled(MILLION, 2, "M")
    } else if n >= 1_000 {
        format!("{:.0}K", x / THOUSAND)
    } else {
        n.to_string()
    }
}

/// Whether `first_bytes` start with the GGUF magic.
pub fn is_gguf(first_bytes: &[u8]) -> bool {
    first_bytes.starts_with(MAGIC)
}

/// `TooLarge` unless `value <= limit`.
fn at_most(what: &'static str, value: u64, limit: u64) -> Result<(), Error> {
    match value <= limit {
        true => Ok(()),
        false => Err(Error::TooLarge { what, value, limit }),
    }
}

/// A `Vec` capacity for `n` items that a caller has already checked against
/// the remaining bytes, so it always fits.
fn capacity(n: u64) -> usize {
    usize::try_from(n).unwrap_or(0)
}

/// The fixed encoded size of a scalar type, `None` for strings and arrays.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        T_U8 | T_I8 | T_BOOL => Some(1),
        T_U16 | T_I16 => Some(2),
        T_U32 | T_I32 | T_F32 => Some(4),
        T_U64 | T_I64 | T_F64 => Some(8),
        _ => None,
    }
}

/// The smallest encoded size of a value of type `ty`, or `BadType`.
fn min_size(ty: u32) -> Result<u64, Error> {
    match ty {
        T_STRING => Ok(8),
        T_ARRAY => Ok(4 + 8),
        _ => fixed_size(ty).ok_or(Error::BadType(ty)),
    }
}

/// Reads one value of type `ty`; `depth` is how many arrays enclose it.
fn read_value(r: &mut Reader<'_>, ty: u32, depth: u32, keep: bool) -> Result<Value, Error> {
    Ok(match ty {
        T_U8 => Value::U8(u8::from_le_bytes(r.array()?)),
        T_I8 => Value::I8(i8::from_le_bytes(r.array()?)),
        T_U16 => Value::U16(u16::from_le_bytes(r.array()?)),
        T_I16 => Value::I16(i16::from_le_bytes(r.array()?)),
        T_U32 => Value::U32(r.u32()?),
        T_I32 => Value::I32(i32::from_le_bytes(r.array()?)),
        T_F32 => Value::F32(f32::from_le_bytes(r.array()?)),
        T_BOOL => Value::Bool(r.array::<1>()?[0] != 0),
        T_STRING => {
            let bytes = r.string_bytes(MAX_STRING_LEN, "string length")?;
            Value::String(String::from_utf8_lossy(bytes).into_owned())
        }
        T_ARRAY => Value::Array(read_array(r, depth + 1, keep)?),
        T_U64 => Value::U64(r.u64()?),
        T_I64 => Value::I64(i64::from_le_bytes(r.array()?)),
        T_F64 => Value::F64(f64::from_le_bytes(r.array()?)),
        _ => return Err(Error::BadType(ty)),
    })
}

/// Reads an array's element type and length, checking the nesting depth and
/// that `len` elements of the smallest possible size fit in what remains.
fn array_header(r: &mut Reader<'_>, depth: u32) -> Result<(u32, u64), Error> {
    at_most("array nesting depth", depth.into(), MAX_DEPTH.into())?;
    let elem_type = r.u32()?;
    let min = min_size(elem_type)?;
    let len = r.u64()?;
    r.ensure(len, min)?;
    Ok((elem_type, len))
}

/// Reads an array at nesting level `depth` (1 for a top-level value),
/// keeping its elements if asked or if it is short.
fn read_array(r: &mut Reader<'_>, depth: u32, keep: bool) -> Result<ArrayValue, Error> {
    let (elem_type, len) = array_header(r, depth)?;
    let values = if keep || len <= ALWAYS_KEEP {
        at_most("kept array length", len, MAX_KEPT_ELEMENTS)?;
        r.kept = r.kept.saturating_add(len);
        at_most("array elements in the header", r.kept, MAX_TOTAL_KEPT)?;
        let mut values = Vec::with_capacity(capacity(len));
        for _ in 0..len {
            values.push(read_value(r, elem_type, depth, keep)?);
        }
        Some(values)
    } else {
        skip_elements(r, elem_type, len, depth)?;
        None
    };
    Ok(ArrayValue {
        elem_type,
        len,
        values,
    })
}

/// Steps over `len` elements of `elem_type` without allocating.
fn skip_elements(r: &mut Reader<'_>, elem_type: u32, len: u64, depth: u32) -> Result<(), Error> {
    if let Some(size) = fixed_size(elem_type) {
        // `array_header` checked len * size against the remaining bytes, so
        // the product cannot overflow here; saturating keeps that local.
        r.take(len.saturating_mul(size))?;
    } else if elem_type == T_STRING {
        for _ in 0..len {
            r.string_bytes(MAX_STRING_LEN, "string length")?;
        }
    } else {
        for _ in 0..len {
            let (inner_type, inner_len) = array_header(r, depth + 1)?;
            skip_elements(r, inner_type, inner_len, depth + 1)?;
        }
    }
    Ok(())
}

/// A bounds-checked little-endian cursor over the header bytes.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    /// Array elements kept so far, against [`MAX_TOTAL_KEPT`].
    kept: u64,
}

impl<'a> Reader<'a> {
    fn offset(&self) -> u64 {
        self.pos as u64
    }

    fn remaining(&self) -> u64 {
        (self.buf.len() - self.pos) as u64
    }

    fn take(&mut self, n: u64) -> Result<&'a [u8], Error> {
        self.ensure(n, 1)?;
        // n fits in usize because it is at most the slice's remaining length.
        let start = self.pos;
        let end = start + capacity(n);
        self.pos = end;
        Ok(&self.buf[start..end])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N as u64)?);
        Ok(out)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Fails unless `count` items of at least `min_each` bytes could fit in
    /// what remains. This is the check that runs before any allocation.
    fn ensure(&self, count: u64, min_each: u64) -> Result<(), Error> {
        let need = count.saturating_mul(min_each);
        if need > self.remaining() {
            return Err(Error::Truncated {
                offset: self.offset(),
                need,
            });
        }
        Ok(())
    }

    /// A length-prefixed string's raw bytes, at most `limit` long.
    fn string_bytes(&mut self, limit: u64, what: &'static str) -> Result<&'a [u8], Error> {
        let len = self.u64()?;
        at_most(what, len, limit)?;
        self.take(len)
    }

    /// A key or tensor name: capped at `MAX_NAME_LEN` and strict UTF-8.
    fn name(&mut self, what: &'static str) -> Result<String, Error> {
        let offset = self.offset();
        let bytes = self.string_bytes(MAX_NAME_LEN, "name length")?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(s.to_owned()),
            Err(_) => Err(Error::BadUtf8 { what, offset }),
        }
    }
}

#[cfg(test)]
mod tests;
