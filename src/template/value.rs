//! Runtime values: a borrowed-or-owned view of JSON data, plus Go's notions
//! of truth, type names, `%v` printing and `json.Marshal` encoding.

use serde_json::{Map, Value};

/// A value during execution. Data from the caller is borrowed, so walking
/// `.Messages` or slicing it never copies the messages.
#[derive(Debug, Clone)]
pub(crate) enum Val<'a> {
    /// Part of the caller's data.
    Ref(&'a Value),
    /// A sub-slice of an array in the caller's data (from `slice`).
    Slice(&'a [Value]),
    /// A value computed during execution.
    Owned(Value),
}

/// A uniform look at a [`Val`], with numbers split the way Go types them.
#[derive(Debug, Clone, Copy)]
pub(crate) enum View<'v> {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'v str),
    Arr(&'v [Value]),
    Obj(&'v Map<String, Value>),
}

/// Views a JSON value.
pub(crate) fn view_of(v: &Value) -> View<'_> {
    match v {
        Value::Null => View::Null,
        Value::Bool(b) => View::Bool(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                View::Int(i)
            } else if let Some(u) = n.as_u64() {
                View::Uint(u)
            } else {
                View::Float(n.as_f64().unwrap_or(0.0))
            }
        }
        Value::String(s) => View::Str(s),
        Value::Array(a) => View::Arr(a),
        Value::Object(m) => View::Obj(m),
    }
}

impl<'a> Val<'a> {
    pub fn null() -> Self {
        Val::Owned(Value::Null)
    }

    pub fn str(s: String) -> Self {
        Val::Owned(Value::String(s))
    }

    pub fn int(i: i64) -> Self {
        Val::Owned(Value::from(i))
    }

    pub fn bool(b: bool) -> Self {
        Val::Owned(Value::Bool(b))
    }

    pub fn view(&self) -> View<'_> {
        match self {
            Val::Ref(v) => view_of(v),
            Val::Slice(s) => View::Arr(s),
            Val::Owned(v) => view_of(v),
        }
    }

    /// Field access `.name`. A missing key or a null receiver yields null,
    /// standing in for the zero value of Ollama's struct fields. When the
    /// exact key is absent, a key equal ignoring ASCII case is used, so data
    /// in its JSON wire form (`"function": {"name": ..}`) answers Go-style
    /// field names (`.Function.Name`) the way Ollama's tagged structs do.
    pub fn field(self, name: &str) -> Result<Val<'a>, String> {
        match self {
            Val::Ref(v) => match v {
                Value::Object(m) => Ok(lookup(m, name).map_or_else(Val::null, Val::Ref)),
                Value::Null => Ok(Val::null()),
                other => Err(field_error(name, view_of(other))),
            },
            Val::Owned(Value::Object(mut m)) => {
                let key = lookup_key(&m, name).map(str::to_string);
                Ok(Val::Owned(
                    key.and_then(|k| m.remove(&k)).unwrap_or(Value::Null),
                ))
            }
            Val::Owned(Value::Null) => Ok(Val::null()),
            other => Err(field_error(name, other.view())),
        }
    }

    /// The `i`th element of an array value.
    pub fn elem(&self, i: usize) -> Option<Val<'a>> {
        match self {
            Val::Ref(v) => match *v {
                Value::Array(a) => a.get(i).map(Val::Ref),
                _ => None,
            },
            Val::Slice(s) => s.get(i).map(Val::Ref),
            Val::Owned(Value::Array(a)) => a.get(i).cloned().map(Val::Owned),
            Val::Owned(_) => None,
        }
    }

    /// The value under `key` in an object value.
    pub fn key(&self, key: &str) -> Option<Val<'a>> {
        match self {
            Val::Ref(Value::Object(m)) => m.get(key).map(Val::Ref),
            Val::Owned(Value::Object(m)) => m.get(key).cloned().map(Val::Owned),
            _ => None,
        }
    }

    /// The sub-array `[lo..hi]`, borrowing when the array is borrowed.
    pub fn sub_array(&self, lo: usize, hi: usize) -> Option<Val<'a>> {
        match self {
            Val::Ref(v) => match *v {
                Value::Array(a) => a.get(lo..hi).map(Val::Slice),
                _ => None,
            },
            Val::Slice(s) => s.get(lo..hi).map(Val::Slice),
            Val::Owned(Value::Array(a)) => {
                a.get(lo..hi).map(|s| Val::Owned(Value::Array(s.to_vec())))
            }
            Val::Owned(_) => None,
        }
    }
}

/// Finds `name` in an object: the exact key, else one equal ignoring ASCII case.
fn lookup<'m>(m: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    m.get(name).or_else(|| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

/// The key [`lookup`] would use.
fn lookup_key<'m>(m: &'m Map<String, Value>, name: &str) -> Option<&'m str> {
    if let Some((k, _)) = m.get_key_value(name) {
        return Some(k.as_str());
    }
    m.keys()
        .find(|k| k.eq_ignore_ascii_case(name))
        .map(String::as_str)
}

fn field_error(name: &str, v: View<'_>) -> String {
    format!("can't evaluate field {name} in type {}", type_name(v))
}

/// Go's truth: false, 0, nil, "" and empty collections are false.
pub(crate) fn truth(v: View<'_>) -> bool {
    match v {
        View::Null => false,
        View::Bool(b) => b,
        View::Int(i) => i != 0,
        View::Uint(u) => u != 0,
        View::Float(f) => f != 0.0,
        View::Str(s) => !s.is_empty(),
        View::Arr(a) => !a.is_empty(),
        View::Obj(m) => !m.is_empty(),
    }
}

/// The Go type a JSON value decodes to, for error messages.
pub(crate) fn type_name(v: View<'_>) -> &'static str {
    match v {
        View::Null => "nil",
        View::Bool(_) => "bool",
        View::Int(_) => "int",
        View::Uint(_) => "uint64",
        View::Float(_) => "float64",
        View::Str(_) => "string",
        View::Arr(_) => "[]interface {}",
        View::Obj(_) => "map[string]interface {}",
    }
}

/// Prints a value the way an action `{{ x }}` does. Null prints as the
/// empty string (the zero value Ollama's struct fields would have), and
/// arrays and objects print as compact JSON, because Ollama's types for
/// tools and tool-call arguments implement `String()` as JSON.
pub(crate) fn print_val(v: View<'_>, out: &mut String) {
    match v {
        View::Null => {}
        View::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        View::Int(i) => out.push_str(&i.to_string()),
        View::Uint(u) => out.push_str(&u.to_string()),
        View::Float(f) => out.push_str(&go_float(f, false)),
        View::Str(s) => out.push_str(s),
        View::Arr(_) | View::Obj(_) => json_view(v, out),
    }
}

/// Formats a float like Go's `strconv.FormatFloat(f, 'g', -1, 64)`, which is
/// what `%v` uses: shortest digits, in exponent form when the decimal
/// exponent is below -4 or at least 6 (so 1e6 prints as `1e+06`).
/// `json_mode` switches to `encoding/json`'s rules instead: exponent form
/// only below 1e-6 or from 1e21, and `e-7` rather than `e-07`.
pub(crate) fn go_float(f: f64, json_mode: bool) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if f == 0.0 {
        return if f.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{f:e}");
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    let use_exp = if json_mode {
        !(1e-6..1e21).contains(&f.abs())
    } else {
        !(-4..6).contains(&exp)
    };
    if !use_exp {
        return format!("{f}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    let digits = exp.unsigned_abs();
    if json_mode && exp < 0 {
        // encoding/json trims "e-07" to "e-7" but keeps "e+21".
        format!("{mant}e-{digits}")
    } else {
        format!("{mant}e{sign}{digits:02}")
    }
}

/// Encodes compact JSON like Go's `json.Marshal`: object keys in the data's
/// order, `<`, `>`, `&`, U+2028 and U+2029 escaped, floats in Go's form.
pub(crate) fn json_view(v: View<'_>, out: &mut String) {
    match v {
        View::Null => out.push_str("null"),
        View::Str(s) => json_str(s, out),
        View::Float(f) if f.is_finite() => out.push_str(&go_float(f, true)),
        View::Float(_) => out.push_str("null"),
        View::Arr(a) => {
            out.push('[');
            for (i, e) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_view(view_of(e), out);
            }
            out.push(']');
        }
        View::Obj(m) => {
            out.push('{');
            for (i, (k, e)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                json_str(k, out);
                out.push(':');
                json_view(view_of(e), out);
            }
            out.push('}');
        }
        other => print_val(other, out),
    }
}

/// Encodes a JSON string with Go's HTML-safe escaping.
pub(crate) fn json_str(s: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                out.push_str(&format!("\\u{:04x}", c as u32));
            }
            c if (c as u32) < 0x20 => {
                let b = c as usize;
                out.push_str("\\u00");
                out.push(HEX[b >> 4] as char);
                out.push(HEX[b & 15] as char);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
