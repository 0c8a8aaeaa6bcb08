//! The executor: walks the syntax tree against JSON data, mirroring Go's
//! `text/template/exec.go` (variable stack, `range` variable binding,
//! `break`/`continue`, `template` calls) with limits on nesting, steps and
//! output size so hostile templates fail cleanly instead of exhausting the
//! stack or memory.

use std::collections::HashMap;

use serde_json::Value;

use super::funcs::{call, check_arity};
use super::parse::{Arg, Branch, Cmd, Node, Parsed, Pipe};
use super::value::{print_val, truth, type_name, Val, View};
use super::{Error, MAX_EXEC_DEPTH, MAX_OUTPUT_BYTES, MAX_STEPS, MAX_TEMPLATE_DEPTH};

/// How a list of nodes finished: normally, or by `{{break}}`/`{{continue}}`
/// travelling up to the enclosing `range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    Normal,
    Break,
    Continue,
}

type EResult<T> = Result<T, Error>;

fn exec_err(line: usize, message: impl Into<String>) -> Error {
    Error::Exec {
        line,
        message: message.into(),
    }
}

/// Renders the main template of `parsed` with `data` as dot and `$`.
pub(crate) fn execute(parsed: &Parsed, data: &Value) -> EResult<String> {
    let root = Val::Ref(data);
    let mut st = State {
        defs: &parsed.defs,
        vars: vec![("$", root.clone())],
        out: String::new(),
        template_depth: 0,
        depth: 0,
        steps: 0,
    };
    st.walk(&root, &parsed.root)?;
    Ok(st.out)
}

struct State<'a> {
    defs: &'a HashMap<String, Vec<Node>>,
    /// The variable stack, innermost last; `$` is at the bottom.
    vars: Vec<(&'a str, Val<'a>)>,
    out: String,
    template_depth: usize,
    /// Nesting of control bodies and template calls, bounding recursion.
    depth: usize,
    steps: u64,
}

impl<'a> State<'a> {
    fn step(&mut self, line: usize) -> EResult<()> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err(exec_err(
                line,
                format!("execution exceeded {MAX_STEPS} steps"),
            ));
        }
        Ok(())
    }

    fn enter(&mut self, line: usize) -> EResult<()> {
        self.depth += 1;
        if self.depth > MAX_EXEC_DEPTH {
            return Err(exec_err(
                line,
                format!("execution nested deeper than {MAX_EXEC_DEPTH}"),
            ));
        }
        Ok(())
    }

    fn walk(&mut self, dot: &Val<'a>, nodes: &'a [Node]) -> EResult<Flow> {
        for node in nodes {
            let flow = match node {
                Node::Text(t) => {
                    self.step(0)?;
                    self.write(t, 0)?;
                    Flow::Normal
                }
                Node::Action(pipe) => {
                    self.step(pipe.line)?;
                    let v = self.eval_pipeline(dot, pipe)?;
                    if pipe.decl.is_empty() {
                        let mut s = String::new();
                        print_val(v.view(), &mut s);
                        self.write(&s, pipe.line)?;
                    }
                    Flow::Normal
                }
                Node::If(b) => self.walk_if_or_with(dot, b, false)?,
                Node::With(b) => self.walk_if_or_with(dot, b, true)?,
                Node::Range(b) => self.walk_range(dot, b)?,
                Node::Template { line, name, pipe } => {
                    self.walk_template(dot, *line, name, pipe.as_ref())?;
                    Flow::Normal
                }
                Node::Break => Flow::Break,
                Node::Continue => Flow::Continue,
            };
            if flow != Flow::Normal {
                return Ok(flow);
            }
        }
        Ok(Flow::Normal)
    }

    fn write(&mut self, s: &str, line: usize) -> EResult<()> {
        if self.out.len() + s.len() > MAX_OUTPUT_BYTES {
            return Err(exec_err(
                line,
                format!("output exceeds {MAX_OUTPUT_BYTES} bytes"),
            ));
        }
        self.out.push_str(s);
        Ok(())
    }

    /// Variables declared in the pipeline or body go out of scope at the end.
    fn walk_if_or_with(&mut self, dot: &Val<'a>, b: &'a Branch, is_with: bool) -> EResult<Flow> {
        let line = b.pipe.line;
        self.step(line)?;
        self.enter(line)?;
        let mark = self.vars.len();
        let v = self.eval_pipeline(dot, &b.pipe)?;
        let flow = if truth(v.view()) {
            if is_with {
                self.walk(&v, &b.list)?
            } else {
                self.walk(dot, &b.list)?
            }
        } else if let Some(else_list) = &b.else_list {
            self.walk(dot, else_list)?
        } else {
            Flow::Normal
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(flow)
    }

    fn walk_range(&mut self, dot: &Val<'a>, b: &'a Branch) -> EResult<Flow> {
        let line = b.pipe.line;
        self.step(line)?;
        self.enter(line)?;
        let mark = self.vars.len();
        let val = self.eval_pipeline(dot, &b.pipe)?;
        // Top of the stack before any variables of the body are pushed.
        let inner = self.vars.len();
        let ran = match val.view() {
            View::Arr(a) if !a.is_empty() => {
                for i in 0..a.len() {
                    let elem = val.elem(i).unwrap_or_else(Val::null);
                    if self.iteration(b, inner, Val::int(i as i64), elem)? == Flow::Break {
                        break;
                    }
                }
                true
            }
            View::Obj(m) if !m.is_empty() => {
                // Go visits map entries in sorted key order.
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                for k in keys {
                    let elem = val.key(k).unwrap_or_else(Val::null);
                    if self.iteration(b, inner, Val::str(k.clone()), elem)? == Flow::Break {
                        break;
                    }
                }
                true
            }
            View::Int(n) if n > 0 => {
                // Go 1.22 ranges over an integer as 0..n.
                if b.pipe.decl.len() > 1 {
                    return Err(exec_err(
                        line,
                        format!("can't use {n} to iterate over more than one variable"),
                    ));
                }
                for i in 0..n {
                    if self.iteration(b, inner, Val::int(i), Val::int(i))? == Flow::Break {
                        break;
                    }
                }
                true
            }
            View::Arr(_) | View::Obj(_) | View::Null | View::Int(_) => false,
            other => {
                return Err(exec_err(
                    line,
                    format!(
                        "range can't iterate over value of type {}",
                        type_name(other)
                    ),
                ))
            }
        };
        if !ran {
            if let Some(else_list) = &b.else_list {
                // A break or continue cannot appear here: the parser rejects
                // them in a range's else branch.
                self.walk(dot, else_list)?;
            }
        }
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Flow::Normal)
    }

    /// Binds the range variables the way Go does and runs the body once.
    fn iteration(
        &mut self,
        b: &'a Branch,
        inner: usize,
        index: Val<'a>,
        elem: Val<'a>,
    ) -> EResult<Flow> {
        self.step(b.pipe.line)?;
        let decl = &b.pipe.decl;
        let line = b.pipe.line;
        if !decl.is_empty() {
            if b.pipe.is_assign {
                // With two variables the index comes first; with one, the element.
                let first = if decl.len() > 1 {
                    index.clone()
                } else {
                    elem.clone()
                };
                self.set_var(&decl[0], first, line)?;
            } else {
                self.set_top_var(1, elem.clone());
            }
        }
        if decl.len() > 1 {
            if b.pipe.is_assign {
                self.set_var(&decl[1], elem.clone(), line)?;
            } else {
                self.set_top_var(2, index);
            }
        }
        let flow = self.walk(&elem, &b.list)?;
        self.vars.truncate(inner);
        Ok(flow)
    }

    fn walk_template(
        &mut self,
        dot: &Val<'a>,
        line: usize,
        name: &str,
        pipe: Option<&'a Pipe>,
    ) -> EResult<()> {
        self.step(line)?;
        let Some(body) = self.defs.get(name) else {
            return Err(Error::NoSuchTemplate {
                line,
                name: name.to_string(),
            });
        };
        let new_dot = match pipe {
            Some(p) => self.eval_pipeline(dot, p)?,
            None => Val::null(),
        };
        if self.template_depth >= MAX_TEMPLATE_DEPTH {
            return Err(Error::TemplateDepth {
                line,
                limit: MAX_TEMPLATE_DEPTH,
            });
        }
        self.enter(line)?;
        self.template_depth += 1;
        // A called template sees only its own `$`, set to its dot.
        let saved = std::mem::replace(&mut self.vars, vec![("$", new_dot.clone())]);
        let result = self.walk(&new_dot, body);
        self.vars = saved;
        self.template_depth -= 1;
        self.depth -= 1;
        result.map(|_| ())
    }

    fn set_top_var(&mut self, n: usize, v: Val<'a>) {
        let len = self.vars.len();
        if let Some(slot) = len.checked_sub(n).and_then(|i| self.vars.get_mut(i)) {
            slot.1 = v;
        }
    }

    fn set_var(&mut self, name: &str, v: Val<'a>, line: usize) -> EResult<()> {
        match self.vars.iter_mut().rev().find(|(n, _)| *n == name) {
            Some(slot) => {
                slot.1 = v;
                Ok(())
            }
            None => Err(exec_err(line, format!("undefined variable: {name}"))),
        }
    }

    fn var_value(&self, name: &str, line: usize) -> EResult<Val<'a>> {
        match self.vars.iter().rev().find(|(n, _)| *n == name) {
            Some((_, v)) => Ok(v.clone()),
            None => Err(exec_err(line, format!("undefined variable: {name}"))),
        }
    }

    fn eval_pipeline(&mut self, dot: &Val<'a>, pipe: &'a Pipe) -> EResult<Val<'a>> {
        let mut value: Option<Val<'a>> = None;
        for cmd in &pipe.cmds {
            value = Some(self.eval_command(dot, cmd, value, pipe.line)?);
        }
        let value = value.unwrap_or_else(Val::null);
        for name in &pipe.decl {
            if pipe.is_assign {
                self.set_var(name, value.clone(), pipe.line)?;
            } else {
                self.vars.push((name, value.clone()));
            }
        }
        Ok(value)
    }

    fn not_a_function(&self, cmd: &Cmd, has_final: bool, line: usize) -> EResult<()> {
        if cmd.args.len() > 1 || has_final {
            return Err(exec_err(line, "can't give argument to non-function"));
        }
        Ok(())
    }

    fn eval_command(
        &mut self,
        dot: &Val<'a>,
        cmd: &'a Cmd,
        fin: Option<Val<'a>>,
        line: usize,
    ) -> EResult<Val<'a>> {
        let has_args = cmd.args.len() > 1 || fin.is_some();
        let Some(first) = cmd.args.first() else {
            return Err(exec_err(line, "empty command"));
        };
        match first {
            Arg::Field(idents) => self.field_chain(dot.clone(), idents, has_args, line),
            Arg::Chain(node, fields) => {
                if let Arg::Nil = **node {
                    return Err(exec_err(line, "indirection through explicit nil"));
                }
                let v = self.eval_arg(dot, node, line)?;
                self.field_chain(v, fields, has_args, line)
            }
            Arg::Func(name) => self.eval_function(dot, name, &cmd.args[1..], fin, line),
            Arg::Variable(idents) => {
                let v = self.var_value(&idents[0], line)?;
                if idents.len() == 1 {
                    self.not_a_function(cmd, fin.is_some(), line)?;
                    return Ok(v);
                }
                self.field_chain(v, &idents[1..], has_args, line)
            }
            Arg::Nil => Err(exec_err(line, "nil is not a command")),
            other => {
                self.not_a_function(cmd, fin.is_some(), line)?;
                self.eval_arg(dot, other, line)
            }
        }
    }

    /// Applies `.A.B...` to `receiver`. Data fields take no arguments, so
    /// arguments on the last one are an error, as for a Go map.
    fn field_chain(
        &mut self,
        mut receiver: Val<'a>,
        idents: &[String],
        has_args: bool,
        line: usize,
    ) -> EResult<Val<'a>> {
        for (i, name) in idents.iter().enumerate() {
            if i + 1 == idents.len() && has_args && matches!(receiver.view(), View::Obj(_)) {
                return Err(exec_err(
                    line,
                    format!("{name} is not a method but has arguments"),
                ));
            }
            receiver = receiver.field(name).map_err(|m| exec_err(line, m))?;
        }
        Ok(receiver)
    }

    fn eval_arg(&mut self, dot: &Val<'a>, arg: &'a Arg, line: usize) -> EResult<Val<'a>> {
        Ok(match arg {
            Arg::Dot => dot.clone(),
            Arg::Nil => Val::null(),
            Arg::Field(idents) => self.field_chain(dot.clone(), idents, false, line)?,
            Arg::Variable(idents) => {
                let v = self.var_value(&idents[0], line)?;
                self.field_chain(v, &idents[1..], false, line)?
            }
            Arg::Pipe(p) => self.eval_pipeline(dot, p)?,
            Arg::Func(name) => self.eval_function(dot, name, &[], None, line)?,
            Arg::Chain(node, fields) => {
                if let Arg::Nil = **node {
                    return Err(exec_err(line, "indirection through explicit nil"));
                }
                let v = self.eval_arg(dot, node, line)?;
                self.field_chain(v, fields, false, line)?
            }
            Arg::Bool(b) => Val::bool(*b),
            Arg::Int(i) => Val::int(*i),
            Arg::Float(f) => Val::Owned(Value::from(*f)),
            Arg::Str(s) => Val::str(s.clone()),
        })
    }

    fn eval_function(
        &mut self,
        dot: &Val<'a>,
        name: &str,
        args: &'a [Arg],
        fin: Option<Val<'a>>,
        line: usize,
    ) -> EResult<Val<'a>> {
        self.step(line)?;
        let count = args.len() + usize::from(fin.is_some());
        check_arity(name, count).map_err(|m| exec_err(line, m))?;
        if name == "and" || name == "or" {
            // Short-circuit: return the first deciding value, else the last.
            let want = name == "or";
            let mut v = Val::null();
            for a in args {
                v = self.eval_arg(dot, a, line)?;
                if truth(v.view()) == want {
                    return Ok(v);
                }
            }
            return Ok(fin.unwrap_or(v));
        }
        if name == "call" {
            return Err(Error::UnsupportedFunction {
                line,
                name: name.to_string(),
            });
        }
        let mut vals = Vec::with_capacity(count);
        for a in args {
            vals.push(self.eval_arg(dot, a, line)?);
        }
        vals.extend(fin);
        let v =
            call(name, vals).map_err(|m| exec_err(line, format!("error calling {name}: {m}")))?;
        if let View::Str(s) = v.view() {
            if s.len() > MAX_OUTPUT_BYTES {
                return Err(exec_err(
                    line,
                    format!("{name} result exceeds {MAX_OUTPUT_BYTES} bytes"),
                ));
            }
        }
        Ok(v)
    }
}
