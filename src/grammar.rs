//! Structured outputs: JSON and JSON Schema constraints as GBNF grammars for
//! llama.cpp's grammar sampler.
//!
//! Supported schema constructs: `type` object (with `properties`, `required`),
//! array (with `items`, `minItems`, `maxItems`), string, number, integer,
//! boolean, null, a list of types, `enum`, `const`, nested objects. Anything
//! else (`$ref`, `anyOf`, `pattern`, ...) is refused with an error naming it,
//! never silently ignored. All listed properties are emitted, in the order
//! the schema gives them: an answer with every property present is valid
//! for the schema, and a fixed order keeps the grammar small.

use std::fmt::Write as _;

use serde_json::Value;

/// A GBNF grammar for any JSON object, used for `format: "json"`.
pub const JSON_OBJECT: &str = r#"root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt/] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,15})? ws
ws     ::= | " " | "\n" [ \t]{0,20}
"#;

/// Shared rules every schema grammar uses.
const BASE: &str = r#"value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::= "[" ws ( value ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\bfnrt/] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9]{1,15})? ws
integer ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ws
boolean ::= ("true" | "false") ws
null   ::= "null" ws
ws     ::= | " " | "\n" [ \t]{0,20}
"#;

/// Keys that change what a value may be and that this converter cannot
/// express; a schema using one is refused.
const UNSUPPORTED: &[&str] = &[
    "$ref",
    "anyOf",
    "oneOf",
    "allOf",
    "not",
    "if",
    "then",
    "else",
    "pattern",
    "patternProperties",
    "additionalItems",
    "prefixItems",
    "contains",
    "dependentRequired",
    "dependentSchemas",
    "minLength",
    "maxLength",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "multipleOf",
    "minProperties",
    "maxProperties",
    "uniqueItems",
    "format",
];

/// Why a schema cannot become a grammar.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// A construct the converter does not support.
    #[error("unsupported JSON schema construct \"{0}\" in format")]
    Unsupported(String),
    /// Something that is not a valid schema.
    #[error("invalid JSON schema in format: {0}")]
    Invalid(String),
    /// Nesting beyond what a prompt format needs.
    #[error("JSON schema in format is nested too deeply")]
    TooDeep,
    /// A schema whose grammar would be larger than the limits: a type list
    /// at every level multiplies the rules, a huge `enum` the bytes.
    #[error("JSON schema in format is too large: its grammar would exceed {0}")]
    TooLarge(&'static str),
}

/// Schema nodes visited at most for one grammar.
pub const MAX_STEPS: usize = 10_000;
/// Rules at most in one grammar.
pub const MAX_RULES: usize = 2_000;
/// Bytes at most of one grammar.
pub const MAX_GRAMMAR_BYTES: usize = 256 << 10;

/// Converts a JSON Schema object into a GBNF grammar with root rule `root`.
pub fn from_schema(schema: &Value) -> Result<String, Error> {
    let mut g = Builder {
        rules: Vec::new(),
        steps: 0,
        bytes: 0,
    };
    let root = g.value(schema, "root-v", 0)?;
    g.count_bytes(root.len())?;
    let mut out = format!("root ::= {root}\n");
    for (name, body) in &g.rules {
        let _ = writeln!(out, "{name} ::= {body}");
    }
    out.push_str(BASE);
    Ok(out)
}

/// Builds the rules of one grammar within the limits: every schema node
/// visited and every byte written counts, so a small hostile schema is
/// refused in bounded time and memory instead of expanding without end.
struct Builder {
    rules: Vec<(String, String)>,
    steps: usize,
    bytes: usize,
}

/// A GBNF string literal for JSON text `s`.
fn literal(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl Builder {
    fn add(&mut self, name: &str, body: String) -> Result<String, Error> {
        if self.rules.len() >= MAX_RULES {
            return Err(Error::TooLarge("2000 rules"));
        }
        let name = format!("{name}-{}", self.rules.len());
        self.count_bytes(name.len() + body.len())?;
        self.rules.push((name.clone(), body));
        Ok(name)
    }

    fn count_bytes(&mut self, n: usize) -> Result<(), Error> {
        self.bytes = self.bytes.saturating_add(n);
        if self.bytes > MAX_GRAMMAR_BYTES {
            return Err(Error::TooLarge("256 KiB"));
        }
        Ok(())
    }

    /// Returns a GBNF expression matching values of `schema`.
    fn value(&mut self, schema: &Value, name: &str, depth: usize) -> Result<String, Error> {
        if depth > 32 {
            return Err(Error::TooDeep);
        }
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(Error::TooLarge("10000 schema nodes"));
        }
        let obj = match schema {
            Value::Bool(true) => return Ok("value".into()),
            Value::Object(o) => o,
            other => return Err(Error::Invalid(format!("expected an object, got {other}"))),
        };
        if let Some(k) = UNSUPPORTED.iter().find(|k| obj.contains_key(**k)) {
            return Err(Error::Unsupported((*k).to_string()));
        }
        if let Some(c) = obj.get("const") {
            return Ok(format!("{} ws", literal(&c.to_string())));
        }
        if let Some(e) = obj.get("enum") {
            let items = e
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| Error::Invalid("enum must be a non-empty array".into()))?;
            let mut alts = Vec::with_capacity(items.len().min(1024));
            for v in items {
                let alt = literal(&v.to_string());
                self.count_bytes(alt.len() + 3)?;
                alts.push(alt);
            }
            return Ok(format!("({}) ws", alts.join(" | ")));
        }
        match obj.get("type") {
            None => {
                if obj.contains_key("properties") {
                    self.object(obj, name, depth)
                } else {
                    Ok("value".into())
                }
            }
            Some(Value::String(t)) => self.typed(t, obj, name, depth),
            Some(Value::Array(types)) => {
                let mut alts = Vec::new();
                for t in types {
                    let t = t
                        .as_str()
                        .ok_or_else(|| Error::Invalid("type list must hold strings".into()))?;
                    alts.push(self.typed(t, obj, name, depth)?);
                }
                Ok(format!("({})", alts.join(" | ")))
            }
            Some(other) => Err(Error::Invalid(format!(
                "type must be a string or list, got {other}"
            ))),
        }
    }

    fn typed(
        &mut self,
        t: &str,
        obj: &serde_json::Map<String, Value>,
        name: &str,
        depth: usize,
    ) -> Result<String, Error> {
        match t {
            "object" => self.object(obj, name, depth),
            "array" => self.array(obj, name, depth),
            "string" => Ok("string".into()),
            "number" => Ok("number".into()),
            "integer" => Ok("integer".into()),
            "boolean" => Ok("boolean".into()),
            "null" => Ok("null".into()),
            other => Err(Error::Invalid(format!("unknown type \"{other}\""))),
        }
    }

    fn object(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        name: &str,
        depth: usize,
    ) -> Result<String, Error> {
        let Some(props) = obj.get("properties").and_then(Value::as_object) else {
            return Ok("object".into());
        };
        if props.is_empty() {
            return Ok(r#""{" ws "}" ws"#.into());
        }
        let mut parts = Vec::new();
        for (key, sub) in props {
            let v = self.value(sub, &format!("{name}-{}", sanitize(key)), depth + 1)?;
            parts.push(format!(
                "{} ws \":\" ws {v}",
                literal(&format!("\"{key}\""))
            ));
        }
        let body = format!("\"{{\" ws {} \"}}\" ws", parts.join(" \",\" ws "));
        self.add(name, body)
    }

    fn array(
        &mut self,
        obj: &serde_json::Map<String, Value>,
        name: &str,
        depth: usize,
    ) -> Result<String, Error> {
        let item = match obj.get("items") {
            None => "value".to_string(),
            Some(items) => self.value(items, &format!("{name}-item"), depth + 1)?,
        };
        let min = obj
            .get("minItems")
            .and_then(Value::as_u64)
            .unwrap_or(0)
            .min(64);
        let max = obj
            .get("maxItems")
            .and_then(Value::as_u64)
            .map(|m| m.min(64));
        let body = match (min, max) {
            (0, None) => format!("\"[\" ws ( {item} (\",\" ws {item})* )? \"]\" ws"),
            (min, None) => {
                let mut req = vec![item.clone(); min as usize].join(" \",\" ws ");
                req.push_str(&format!(" (\",\" ws {item})*"));
                format!("\"[\" ws {req} \"]\" ws")
            }
            (min, Some(max)) => {
                let max = max.max(min);
                let mut alts = Vec::new();
                for n in min..=max {
                    alts.push(if n == 0 {
                        String::new()
                    } else {
                        vec![item.clone(); n as usize].join(" \",\" ws ")
                    });
                }
                let alts: Vec<String> = alts.into_iter().map(|a| format!("( {a} )")).collect();
                format!("\"[\" ws ({}) \"]\" ws", alts.join(" | "))
            }
        };
        self.add(name, body)
    }
}

/// Rule names allow letters, digits and `-` only.
fn sanitize(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn refuses_what_it_cannot_express() {
        assert_eq!(
            from_schema(&json!({"anyOf": []})),
            Err(Error::Unsupported("anyOf".into()))
        );
        assert_eq!(
            from_schema(
                &json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "x"}}})
            ),
            Err(Error::Unsupported("pattern".into()))
        );
        assert!(matches!(
            from_schema(&json!({"type": "widget"})),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(from_schema(&json!(3)), Err(Error::Invalid(_))));
    }

    #[test]
    fn builds_rules_for_nested_schemas() {
        let g = from_schema(&json!({"type": "object", "properties": {
            "name": {"type": "string"}, "age": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
            "kind": {"enum": ["cat", "dog"]},
            "home": {"type": "object", "properties": {"city": {"type": "string"}}}},
            "required": ["name"]}))
        .expect("grammar");
        assert!(g.starts_with("root ::= root-v-"), "{g}");
        assert!(g.contains(r#""\"name\"" ws ":" ws string"#), "{g}");
        assert!(g.contains(r#"("\"cat\"" | "\"dog\"") ws"#), "{g}");
        assert!(g.contains("integer ::="));
    }

    #[test]
    fn hostile_schemas_are_refused_within_the_limits() {
        // Eight types at each of twelve levels: 8^12 rules if expanded.
        let mut schema = json!({"type": "string"});
        for _ in 0..12 {
            schema = json!({
                "type": ["object", "array", "string", "number", "integer", "boolean", "null", "object"],
                "properties": {"a": schema.clone()},
                "items": schema,
            });
        }
        let started = std::time::Instant::now();
        let e = from_schema(&schema).unwrap_err();
        assert!(matches!(e, Error::TooLarge(_)), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // A huge enum: refused by size, not copied without end.
        let big: Vec<String> = (0..50_000).map(|i| format!("value number {i}")).collect();
        let e = from_schema(&json!({"type": "string", "enum": big})).unwrap_err();
        assert_eq!(e, Error::TooLarge("256 KiB"));
        assert!(e.to_string().contains("too large"));
    }
}
