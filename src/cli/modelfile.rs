//! The Modelfile parser: text in, a list of [`Instruction`]s out, with
//! Ollama's grammar and error wording (`parser/parser.go`). Typing
//! `PARAMETER` values and turning instructions into a create request is
//! `cli::create`'s job; the server never sees a Modelfile.

use serde_json::{Map, Value};

/// One instruction of a Modelfile, with its argument unquoted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Instruction {
    /// `FROM <model name | path>`.
    From(String),
    /// `PARAMETER <key> <value>`, the value still text.
    Parameter {
        /// The option name, as written (option names are case-sensitive).
        key: String,
        /// The value as written.
        value: String,
    },
    /// `TEMPLATE`.
    Template(String),
    /// `SYSTEM`.
    System(String),
    /// `ADAPTER <path>`.
    Adapter(String),
    /// `LICENSE`; repeatable.
    License(String),
    /// `MESSAGE <role> <content>`; repeatable.
    Message {
        /// `system`, `user` or `assistant`.
        role: String,
        /// The message text.
        content: String,
    },
    /// `REQUIRES <version>`, `DRAFT`, `RENDERER`, `PARSER`: upstream
    /// extensions hearth accepts and ignores; the lower-case name and argument.
    Other(String, String),
}

/// Why a Modelfile was refused, worded as Ollama words it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An instruction that is not one of the known ones.
    #[error(
        "(line {0}): command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"draft\", \"renderer\", \"parser\", \"parameter\", \"message\", or \"requires\""
    )]
    InvalidCommand(usize),
    /// A `MESSAGE` whose role is not a chat role.
    #[error("(line {0}): message role must be one of \"system\", \"user\", or \"assistant\"")]
    InvalidRole(usize),
    /// The text ended inside an instruction or a quoted value, or a
    /// parameter name holds a character names cannot have.
    #[error("unexpected EOF")]
    UnexpectedEof,
    /// No `FROM` instruction.
    #[error("no FROM line")]
    NoFrom,
    /// A `PARAMETER` that is not an option.
    #[error("unknown parameter '{0}'")]
    UnknownParameter(String),
    /// A `PARAMETER` value that does not parse as its option's type.
    #[error("invalid {kind} value [{value}]")]
    InvalidValue {
        /// `int`, `float` or `bool`.
        kind: &'static str,
        /// The value as written.
        value: String,
    },
}

const COMMANDS: &[&str] = &[
    "from",
    "license",
    "template",
    "system",
    "adapter",
    "draft",
    "renderer",
    "parser",
    "parameter",
    "message",
    "requires",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Nil,
    Name,
    Value,
    Parameter,
    Message,
    Comment,
}

/// What the instruction being read will become once its value ends.
#[derive(Debug, Default)]
struct Pending {
    command: String,
    key: String,
    role: String,
}

/// Parses a Modelfile. Instructions are case-insensitive, `#` starts a
/// comment line, values run to the end of the line unless quoted with `"`
/// or `"""` (which may span lines), and exactly the one rule Ollama keeps:
/// at least one `FROM`.
pub fn parse(text: &str) -> Result<Vec<Instruction>, Error> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    let mut state = State::Nil;
    let mut line = 1;
    let mut buf = String::new();
    let mut pending = Pending::default();
    for c in text.chars() {
        if c == '\n' {
            line += 1;
        }
        // A line break has already moved `line` on; errors name the line
        // the offending instruction is on.
        let at = if c == '\n' { line - 1 } else { line };
        let (next, keep) = next_state(state, c, at)?;
        if next != state {
            match state {
                State::Name => {
                    let name = buf.to_ascii_lowercase();
                    if !COMMANDS.contains(&name.as_str()) {
                        return Err(Error::InvalidCommand(line));
                    }
                    pending = Pending {
                        command: name,
                        ..Pending::default()
                    };
                    state = match pending.command.as_str() {
                        "parameter" => State::Parameter,
                        "message" => State::Message,
                        _ => next,
                    };
                    buf.clear();
                    continue;
                }
                State::Parameter => pending.key = std::mem::take(&mut buf),
                State::Message => {
                    if !matches!(buf.as_str(), "system" | "user" | "assistant") {
                        return Err(Error::InvalidRole(line));
                    }
                    pending.role = std::mem::take(&mut buf);
                }
                State::Value => {
                    // A space, or a line break inside an open quote, belongs
                    // to the value: only a line break after a complete value
                    // ends it.
                    let Some(value) = unquote(buf.trim()).filter(|_| !is_space(c)) else {
                        buf.push(c);
                        continue;
                    };
                    out.push(instruction(&mut pending, value));
                }
                State::Nil | State::Comment => {}
            }
            buf.clear();
            state = next;
        }
        if keep && !c.is_control() {
            buf.push(c);
        }
    }
    match state {
        State::Nil | State::Comment => {}
        State::Value => {
            let value = unquote(buf.trim()).ok_or(Error::UnexpectedEof)?;
            out.push(instruction(&mut pending, value));
        }
        State::Name | State::Parameter | State::Message => return Err(Error::UnexpectedEof),
    }
    if !out.iter().any(|i| matches!(i, Instruction::From(_))) {
        return Err(Error::NoFrom);
    }
    Ok(out)
}

/// The state after reading `c` in `state`, and whether `c` is part of the
/// token being read.
fn next_state(state: State, c: char, line: usize) -> Result<(State, bool), Error> {
    Ok(match state {
        State::Nil => match c {
            '#' => (State::Comment, false),
            c if is_space(c) || is_newline(c) => (State::Nil, false),
            _ => (State::Name, true),
        },
        State::Name => match c {
            c if c.is_alphabetic() => (State::Name, true),
            c if is_space(c) => (State::Value, false),
            // An instruction with no argument: Ollama reports it as an
            // unknown command; we add the line number its message lacks.
            _ => return Err(Error::InvalidCommand(line)),
        },
        State::Value => match c {
            c if is_newline(c) || is_space(c) => (State::Nil, true),
            _ => (State::Value, true),
        },
        State::Parameter => match c {
            c if c.is_alphanumeric() || c == '_' => (State::Parameter, true),
            c if is_space(c) => (State::Value, false),
            _ => return Err(Error::UnexpectedEof),
        },
        State::Message => match c {
            c if c.is_alphabetic() => (State::Message, true),
            c if is_space(c) => (State::Value, false),
            _ => return Err(Error::UnexpectedEof),
        },
        State::Comment => (
            if is_newline(c) {
                State::Nil
            } else {
                State::Comment
            },
            false,
        ),
    })
}

fn is_space(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn is_newline(c: char) -> bool {
    c == '\n' || c == '\r'
}

/// Strips `"""…"""` or `"…"`; `None` while a quote is still open.
fn unquote(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix("\"\"\"") {
        return (inner.len() >= 3 && inner.ends_with("\"\"\""))
            .then(|| inner[..inner.len() - 3].to_string());
    }
    if let Some(inner) = s.strip_prefix('"') {
        return inner.strip_suffix('"').map(str::to_string);
    }
    Some(s.to_string())
}

fn instruction(pending: &mut Pending, value: String) -> Instruction {
    let p = std::mem::take(pending);
    match p.command.as_str() {
        "from" => Instruction::From(value),
        "parameter" => Instruction::Parameter { key: p.key, value },
        "template" => Instruction::Template(value),
        "system" => Instruction::System(value),
        "adapter" => Instruction::Adapter(value),
        "license" => Instruction::License(value),
        "message" => Instruction::Message {
            role: p.role,
            content: value,
        },
        _ => Instruction::Other(p.command, value),
    }
}

/// Types `PARAMETER` values as their options are typed and collects them
/// into a create request's `parameters`; repeated list options (`stop`)
/// accumulate. Deprecated options are dropped, with their names returned
/// so the caller can warn.
pub fn parameters(pairs: &[(String, String)]) -> Result<(Map<String, Value>, Vec<String>), Error> {
    let mut out = Map::new();
    let mut dropped = Vec::new();
    for (key, value) in pairs {
        let Some(kind) = option_kind(key)? else {
            dropped.push(key.clone());
            continue;
        };
        let invalid = |kind| Error::InvalidValue {
            kind,
            value: value.clone(),
        };
        let typed = match kind {
            Kind::Int => Value::from(value.parse::<i64>().map_err(|_| invalid("int"))?),
            // Parsed as f64 so `0.7` stays `0.7` in JSON, which is what
            // Go's encoder prints for Ollama's float32.
            Kind::Float => value
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite())
                .and_then(serde_json::Number::from_f64)
                .map(Value::Number)
                .ok_or_else(|| invalid("float"))?,
            Kind::Bool => Value::Bool(parse_go_bool(value).ok_or_else(|| invalid("bool"))?),
            Kind::List => {
                if let Some(Value::Array(list)) = out.get_mut(key) {
                    list.push(Value::String(value.clone()));
                    continue;
                }
                Value::Array(vec![Value::String(value.clone())])
            }
        };
        out.insert(key.clone(), typed);
    }
    Ok((out, dropped))
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Int,
    Float,
    Bool,
    List,
}

/// The type of an option, asked of `hearth::options` so the list of options
/// and their types stays in one place: each probe value is one the
/// validator accepts for exactly one kind (a string only for lists, `true`
/// only for booleans; a fraction comes back whole for integers). `None`
/// means a deprecated option.
fn option_kind(key: &str) -> Result<Option<Kind>, Error> {
    let probe = |v: Value| {
        let mut m = Map::new();
        m.insert(key.to_string(), v);
        crate::options::validate_parameters(&m)
    };
    let fraction = match probe(Value::from(0.5)) {
        Err(crate::options::Error::Unknown(_)) => {
            return Err(Error::UnknownParameter(key.to_string()))
        }
        Ok(m) if m.is_empty() => return Ok(None),
        other => other.ok().and_then(|m| m.get(key).cloned()),
    };
    Ok(Some(match fraction {
        Some(v) if v.is_i64() || v.is_u64() => Kind::Int,
        Some(_) => Kind::Float,
        None if probe(Value::Bool(true)).is_ok() => Kind::Bool,
        None => Kind::List,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(input: &str, expected: Result<Vec<Instruction>, &str>) {
        let got = parse(input).map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "input: {input:?}");
    }

    fn from(s: &str) -> Instruction {
        Instruction::From(s.into())
    }

    fn param(k: &str, v: &str) -> Instruction {
        Instruction::Parameter {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn simple_instructions() {
        check("FROM llama3.2", Ok(vec![from("llama3.2")]));
        check(
            "# a comment\nfrom ./model.gguf\n\nparameter temperature 0.7\nSYSTEM You are terse.\n",
            Ok(vec![
                from("./model.gguf"),
                param("temperature", "0.7"),
                Instruction::System("You are terse.".into()),
            ]),
        );
        check(
            "\u{feff}FROM x\r\nPARAMETER stop <eos>\r\nPARAMETER stop \"<end of turn>\"\r\n",
            Ok(vec![
                from("x"),
                param("stop", "<eos>"),
                param("stop", "<end of turn>"),
            ]),
        );
        check(
            "FROM x\nMESSAGE user Hi there\nMESSAGE assistant Hello!\nLICENSE MIT\nREQUIRES 0.5.0",
            Ok(vec![
                from("x"),
                Instruction::Message {
                    role: "user".into(),
                    content: "Hi there".into(),
                },
                Instruction::Message {
                    role: "assistant".into(),
                    content: "Hello!".into(),
                },
                Instruction::License("MIT".into()),
                Instruction::Other("requires".into(), "0.5.0".into()),
            ]),
        );
    }

    #[test]
    fn multiline_values() {
        check(
            "FROM x\nTEMPLATE \"\"\"{{ .System }}\n\tUSER: {{ .Prompt }}\n\"\"\"\nSYSTEM \"\"\"one line\"\"\"",
            Ok(vec![
                from("x"),
                Instruction::Template("{{ .System }}\n\tUSER: {{ .Prompt }}\n".into()),
                Instruction::System("one line".into()),
            ]),
        );
        check("FROM x\nSYSTEM \"\"\"never closed\n", Err("unexpected EOF"));
    }

    #[test]
    fn errors() {
        check("PARAMETER temperature 1", Err("no FROM line"));
        check("", Err("no FROM line"));
        check(
            "FROM x\n\nBOGUS y",
            Err("(line 3): command must be one of \"from\", \"license\", \"template\", \"system\", \"adapter\", \"draft\", \"renderer\", \"parser\", \"parameter\", \"message\", or \"requires\""),
        );
        check(
            "FROM x\nMESSAGE robot hi",
            Err("(line 2): message role must be one of \"system\", \"user\", or \"assistant\""),
        );
        check("FROM", Err("unexpected EOF"));
    }

    fn check_params(pairs: &[(&str, &str)], expected: Result<Value, &str>) {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got = parameters(&pairs)
            .map(|(m, _)| Value::Object(m))
            .map_err(|e| e.to_string());
        assert_eq!(got, expected.map_err(str::to_string), "{pairs:?}");
    }

    #[test]
    fn typed_parameters() {
        check_params(
            &[
                ("num_ctx", "2048"),
                ("temperature", "0.7"),
                ("use_mmap", "false"),
                ("stop", "<a>"),
                ("stop", "<b>"),
                ("mirostat", "1"),
            ],
            Ok(
                json!({"num_ctx": 2048, "temperature": 0.7, "use_mmap": false, "stop": ["<a>", "<b>"]}),
            ),
        );
        check_params(&[("bogus", "1")], Err("unknown parameter 'bogus'"));
        check_params(&[("num_ctx", "1.5")], Err("invalid int value [1.5]"));
        check_params(&[("top_p", "high")], Err("invalid float value [high]"));
        check_params(&[("use_mmap", "yes")], Err("invalid bool value [yes]"));
    }
}
