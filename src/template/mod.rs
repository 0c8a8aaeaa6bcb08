//! A Go `text/template` engine for Ollama prompt templates.
//!
//! Templates are parsed once with [`Template::parse`] and rendered with a
//! JSON value as dot via [`Template::render`]. The aim is byte-for-byte the
//! output Go's `text/template` gives for Ollama's templates: the same
//! lexing (trim markers `{{-`/`-}}`, comments), the same parse-time checks,
//! and the same execution rules (truthiness, variable scoping that ends at
//! `{{end}}`, `range` over sorted map keys, `break`/`continue`,
//! `define`/`template`/`block`, the builtin functions, and Ollama's `json`,
//! `currentDate`, `yesterdayDate` and `toTypeScriptType`).
//!
//! Deliberate differences from plain Go, chosen to match what Ollama's
//! templates produce with Ollama's Go types:
//!
//! - A missing key, or a field of null, yields null, and null prints as the
//!   empty string rather than `<no value>`: Ollama renders struct fields,
//!   whose zero values print as nothing. `len` of null is 0 (a nil slice).
//! - Objects and arrays print as compact JSON (keys in the data's order),
//!   because Ollama's tool and argument types implement `String()` as JSON.
//!   Go marshals real maps with sorted keys, so callers that want Ollama's
//!   exact bytes should build map-like objects (tool-call arguments, schema
//!   properties) with sorted keys.
//! - When a key is absent, `.Name` falls back to a key equal ignoring ASCII
//!   case, so data in JSON wire form (`{"function": {"name": ..}}`) answers
//!   `.Function.Name` the way Ollama's JSON-tagged Go structs do, and still
//!   prints with the wire keys.
//! - Integers and floats compare by value (`eq 1 1.0` is true) instead of
//!   failing with "incompatible types".
//! - `currentDate` (and `yesterdayDate`) return YYYY-MM-DD, as Ollama's
//!   do, but in UTC, as the crate has no time-zone database.
//! - `call` is a known name but fails at render time, since data holds no
//!   functions.
//!
//! Hostile templates are bounded: parse nesting, `template` call depth,
//! execution steps and output size all have limits that produce errors.

mod exec;
mod fmt;
mod funcs;
mod lex;
mod lit;
mod parse;
mod value;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_semantics;

use std::sync::Arc;

/// The deepest nesting of control structures and parentheses accepted.
pub const MAX_PARSE_DEPTH: usize = 100;
/// The deepest chain of `{{template}}` calls executed.
pub const MAX_TEMPLATE_DEPTH: usize = 100;
/// The deepest nesting of control bodies plus template calls at run time.
const MAX_EXEC_DEPTH: usize = 250;
/// The most nodes and function calls one render may execute.
const MAX_STEPS: u64 = 10_000_000;
/// The largest output (and largest computed string) one render may make.
const MAX_OUTPUT_BYTES: usize = 64 << 20;

/// Why a template failed to parse or render. Messages follow Go's
/// `template: :LINE: ...` form.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// Malformed template text.
    #[error("template: :{line}: {message}")]
    Syntax { line: usize, message: String },
    /// A call to a function that does not exist.
    #[error("template: :{line}: function {name:?} not defined")]
    UndefinedFunction { line: usize, name: String },
    /// A use of a variable that was never declared.
    #[error("template: :{line}: undefined variable {name:?}")]
    UndefinedVariable { line: usize, name: String },
    /// Control structures or parentheses nested beyond [`MAX_PARSE_DEPTH`].
    #[error("template: :{line}: nesting deeper than {limit}")]
    NestingTooDeep { line: usize, limit: usize },
    /// `{{template "name"}}` for a name never defined.
    #[error("template: :{line}: no such template {name:?}")]
    NoSuchTemplate { line: usize, name: String },
    /// `{{template}}` calls nested beyond [`MAX_TEMPLATE_DEPTH`].
    #[error("template: :{line}: exceeded maximum template depth ({limit})")]
    TemplateDepth { line: usize, limit: usize },
    /// A known function this engine cannot run (`call`).
    #[error("template: :{line}: function {name:?} is not supported")]
    UnsupportedFunction { line: usize, name: String },
    /// Any other failure while rendering.
    #[error("template: :{line}: executing: {message}")]
    Exec { line: usize, message: String },
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    inner: Arc<parse::Parsed>,
}

impl Template {
    /// Parses template text, reporting the first error with its line.
    pub fn parse(text: &str) -> Result<Template, Error> {
        Ok(Template {
            inner: Arc::new(parse::parse(text)?),
        })
    }

    /// Renders with `data` as dot. Field access `.Foo` looks up key "Foo" in
    /// a JSON object.
    pub fn render(&self, data: &serde_json::Value) -> Result<String, Error> {
        exec::execute(&self.inner, data)
    }

    /// True if the template source mentions the given field name anywhere as
    /// a field access (`.Tools`, `$.Tools`, `$m.Tools`, `(x).Tools`), in the
    /// main template or any defined one; used for capability detection.
    pub fn uses_field(&self, name: &str) -> bool {
        self.inner.fields.contains(name)
    }
}
