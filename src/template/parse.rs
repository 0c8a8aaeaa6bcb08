//! The parser: builds the syntax tree from tokens, mirroring Go's
//! `text/template/parse/parse.go`, including its parse-time checks
//! (unknown functions, undefined variables, `break` outside `range`,
//! duplicate `define`s) and Go 1.11+ variable scoping.

use std::collections::{BTreeSet, HashMap};

use super::funcs::is_builtin;
use super::lex::{lex, Kind, Token};
use super::lit::{parse_number, unquote};
use super::{Error, MAX_PARSE_DEPTH};

/// A node of a template body.
#[derive(Debug, Clone)]
pub(crate) enum Node {
    Text(String),
    Action(Pipe),
    If(Branch),
    Range(Branch),
    With(Branch),
    Template {
        line: usize,
        name: String,
        pipe: Option<Pipe>,
    },
    Break,
    Continue,
}

/// The shared shape of `if`, `range` and `with`.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    pub pipe: Pipe,
    pub list: Vec<Node>,
    pub else_list: Option<Vec<Node>>,
}

/// A pipeline with optional variable declarations.
#[derive(Debug, Clone)]
pub(crate) struct Pipe {
    pub line: usize,
    pub is_assign: bool,
    pub decl: Vec<String>,
    pub cmds: Vec<Cmd>,
}

/// One stage of a pipeline: a function, field or operand with arguments.
#[derive(Debug, Clone)]
pub(crate) struct Cmd {
    pub args: Vec<Arg>,
}

/// An operand.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    /// `.A.B`.
    Field(Vec<String>),
    /// `$x.A.B`: the first element is the variable name with its `$`.
    Variable(Vec<String>),
    Dot,
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// A function name.
    Func(String),
    /// A parenthesized pipeline.
    Pipe(Box<Pipe>),
    /// Fields applied to some other operand, e.g. `(index . 0).Name`.
    Chain(Box<Arg>, Vec<String>),
}

impl Arg {
    fn describe(&self) -> String {
        match self {
            Arg::Field(f) => format!(".{}", f.join(".")),
            Arg::Variable(v) => v.join("."),
            Arg::Dot => ".".into(),
            Arg::Nil => "nil".into(),
            Arg::Bool(b) => b.to_string(),
            Arg::Int(i) => i.to_string(),
            Arg::Float(f) => f.to_string(),
            Arg::Str(s) => format!("{s:?}"),
            Arg::Func(f) => f.clone(),
            Arg::Pipe(_) => "(...)".into(),
            Arg::Chain(a, f) => format!("{}.{}", a.describe(), f.join(".")),
        }
    }
}

/// Everything a parse produces: the main body, the named templates, and
/// every field name mentioned.
#[derive(Debug, Clone)]
pub(crate) struct Parsed {
    pub root: Vec<Node>,
    pub defs: HashMap<String, Vec<Node>>,
    pub fields: BTreeSet<String>,
}

/// What ended an item list.
enum Stop {
    End,
    Else,
}

/// What `text_or_action` found.
enum Item {
    Node(Node),
    Comment,
    Stop(Stop, usize),
}

pub(crate) fn parse(src: &str) -> Result<Parsed, Error> {
    let mut p = Parser {
        toks: lex(src),
        i: 0,
        vars: vec!["$".to_string()],
        range_depth: 0,
        depth: 0,
        defs: HashMap::new(),
        fields: BTreeSet::new(),
    };
    let root = p.parse_top()?;
    // The main template is registered under "" like any other tree, so a
    // `{{define ""}}` clash is caught the way Go catches it.
    p.add_tree(String::new(), root.clone(), 1)?;
    p.defs.remove("");
    Ok(Parsed {
        root,
        defs: p.defs,
        fields: p.fields,
    })
}

/// Go's `IsEmptyTree`: only whitespace text and comments.
fn is_empty_tree(list: &[Node]) -> bool {
    list.iter()
        .all(|n| matches!(n, Node::Text(t) if t.trim().is_empty()))
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    /// Variables in scope, innermost last.
    vars: Vec<String>,
    range_depth: usize,
    depth: usize,
    defs: HashMap<String, Vec<Node>>,
    fields: BTreeSet<String>,
}

type PResult<T> = Result<T, Error>;

fn syntax(line: usize, message: String) -> Error {
    Error::Syntax { line, message }
}

impl Parser {
    fn peek(&self) -> &Token {
        // The lexer always ends with Eof or Error, so the list is never empty
        // and reads past the end see that last token.
        &self.toks[self.i.min(self.toks.len() - 1)]
    }

    fn next(&mut self) -> PResult<Token> {
        let t = self.peek().clone();
        if t.kind == Kind::Error {
            return Err(syntax(t.line, t.val));
        }
        // Moving past the end is harmless: `peek` keeps returning the final
        // Eof, and `backup` then steps back onto it.
        self.i += 1;
        Ok(t)
    }

    fn backup(&mut self) {
        self.i -= 1;
    }

    fn skip_space(&mut self) {
        while self.peek().kind == Kind::Space {
            self.i += 1;
        }
    }

    fn next_non_space(&mut self) -> PResult<Token> {
        self.skip_space();
        self.next()
    }

    fn unexpected(&self, t: &Token, context: &str) -> Error {
        if t.kind == Kind::Error {
            return syntax(t.line, t.val.clone());
        }
        syntax(t.line, format!("unexpected {} in {context}", t.describe()))
    }

    fn expect(&mut self, kind: Kind, context: &str) -> PResult<Token> {
        let t = self.next_non_space()?;
        if t.kind != kind {
            return Err(self.unexpected(&t, context));
        }
        Ok(t)
    }

    fn enter(&mut self, line: usize) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_PARSE_DEPTH {
            return Err(Error::NestingTooDeep {
                line,
                limit: MAX_PARSE_DEPTH,
            });
        }
        Ok(())
    }

    /// Registers a named tree with Go's redefinition rule: an empty body
    /// never replaces a non-empty one, and two non-empty bodies clash.
    fn add_tree(&mut self, name: String, list: Vec<Node>, line: usize) -> PResult<()> {
        match self.defs.get(&name) {
            Some(old) if !is_empty_tree(old) => {
                if !is_empty_tree(&list) {
                    return Err(syntax(
                        line,
                        format!("template: multiple definition of template {name:?}"),
                    ));
                }
            }
            _ => {
                self.defs.insert(name, list);
            }
        }
        Ok(())
    }

    fn parse_top(&mut self) -> PResult<Vec<Node>> {
        let mut root = Vec::new();
        while self.peek().kind != Kind::Eof {
            if self.peek().kind == Kind::LeftDelim {
                let save = self.i;
                self.next()?;
                if self.next_non_space()?.kind == Kind::Define {
                    self.parse_definition()?;
                    continue;
                }
                self.i = save;
            }
            match self.text_or_action()? {
                Item::Node(n) => root.push(n),
                Item::Comment => {}
                Item::Stop(stop, line) => {
                    let what = match stop {
                        Stop::End => "{{end}}",
                        Stop::Else => "{{else}}",
                    };
                    return Err(syntax(line, format!("unexpected {what}")));
                }
            }
        }
        Ok(root)
    }

    /// Parses `{{define "name"}} ... {{end}}` after the `define` keyword. The
    /// body gets a fresh variable scope, as a separate Go tree would.
    fn parse_definition(&mut self) -> PResult<()> {
        let context = "define clause";
        let t = self.next_non_space()?;
        let name = self.template_name(&t, context)?;
        self.expect(Kind::RightDelim, context)?;
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let saved_range = std::mem::replace(&mut self.range_depth, 0);
        let (list, stop, line) = self.item_list()?;
        self.vars = saved_vars;
        self.range_depth = saved_range;
        if let Stop::Else = stop {
            return Err(syntax(
                line,
                format!("unexpected {{{{else}}}} in {context}"),
            ));
        }
        self.add_tree(name, list, t.line)
    }

    fn template_name(&self, t: &Token, context: &str) -> PResult<String> {
        match t.kind {
            Kind::String | Kind::RawString => unquote(&t.val).map_err(|m| syntax(t.line, m)),
            _ => Err(self.unexpected(t, context)),
        }
    }

    /// Parses nodes until `{{end}}` or `{{else}}`.
    fn item_list(&mut self) -> PResult<(Vec<Node>, Stop, usize)> {
        let mut list = Vec::new();
        loop {
            self.skip_space();
            if self.peek().kind == Kind::Eof {
                return Err(syntax(self.peek().line, "unexpected EOF".to_string()));
            }
            match self.text_or_action()? {
                Item::Node(n) => list.push(n),
                Item::Comment => {}
                Item::Stop(stop, line) => return Ok((list, stop, line)),
            }
        }
    }

    fn text_or_action(&mut self) -> PResult<Item> {
        let t = self.next_non_space()?;
        match t.kind {
            Kind::Text => Ok(Item::Node(Node::Text(t.val))),
            Kind::LeftDelim => self.action(),
            Kind::Comment => Ok(Item::Comment),
            _ => Err(self.unexpected(&t, "input")),
        }
    }

    fn action(&mut self) -> PResult<Item> {
        let t = self.next_non_space()?;
        let node = match t.kind {
            Kind::Block => self.block_control()?,
            Kind::Break | Kind::Continue => {
                let word = if t.kind == Kind::Break {
                    "break"
                } else {
                    "continue"
                };
                let r = self.next_non_space()?;
                if r.kind != Kind::RightDelim {
                    return Err(self.unexpected(&r, &format!("{{{{{word}}}}}")));
                }
                if self.range_depth == 0 {
                    return Err(syntax(
                        t.line,
                        format!("{{{{{word}}}}} outside {{{{range}}}}"),
                    ));
                }
                if t.kind == Kind::Break {
                    Node::Break
                } else {
                    Node::Continue
                }
            }
            Kind::Else => {
                // `{{else if ...}}` and `{{else with ...}}` leave the keyword
                // pending for the enclosing control to pick up.
                self.skip_space();
                if !matches!(self.peek().kind, Kind::If | Kind::With) {
                    self.expect(Kind::RightDelim, "else")?;
                }
                return Ok(Item::Stop(Stop::Else, t.line));
            }
            Kind::End => {
                self.expect(Kind::RightDelim, "end")?;
                return Ok(Item::Stop(Stop::End, t.line));
            }
            Kind::If => Node::If(self.control("if", t.line)?),
            Kind::Range => Node::Range(self.control("range", t.line)?),
            Kind::With => Node::With(self.control("with", t.line)?),
            Kind::Template => self.template_control()?,
            _ => {
                self.backup();
                Node::Action(self.pipeline("command", Kind::RightDelim)?)
            }
        };
        Ok(Item::Node(node))
    }

    /// Parses the rest of an `if`, `range` or `with`. Variables declared in
    /// its pipeline or body go out of scope at its `{{end}}`.
    fn control(&mut self, context: &str, line: usize) -> PResult<Branch> {
        self.enter(line)?;
        let mark = self.vars.len();
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        if context == "range" {
            self.range_depth += 1;
        }
        let listed = self.item_list();
        if context == "range" {
            self.range_depth -= 1;
        }
        let (list, stop, _) = listed?;
        let else_list = match stop {
            Stop::End => None,
            Stop::Else => {
                let k = self.peek().kind;
                let l = self.peek().line;
                if context == "if" && k == Kind::If {
                    self.i += 1;
                    Some(vec![Node::If(self.control("if", l)?)])
                } else if context == "with" && k == Kind::With {
                    self.i += 1;
                    Some(vec![Node::With(self.control("with", l)?)])
                } else {
                    let (list, stop, l) = self.item_list()?;
                    if let Stop::Else = stop {
                        return Err(syntax(l, "expected end; found {{else}}".to_string()));
                    }
                    Some(list)
                }
            }
        };
        self.vars.truncate(mark);
        self.depth -= 1;
        Ok(Branch {
            pipe,
            list,
            else_list,
        })
    }

    fn template_control(&mut self) -> PResult<Node> {
        let context = "template clause";
        let t = self.next_non_space()?;
        let name = self.template_name(&t, context)?;
        let pipe = if self.next_non_space()?.kind == Kind::RightDelim {
            None
        } else {
            self.backup();
            Some(self.pipeline(context, Kind::RightDelim)?)
        };
        Ok(Node::Template {
            line: t.line,
            name,
            pipe,
        })
    }

    /// `{{block "name" pipeline}} body {{end}}` defines "name" and calls it.
    fn block_control(&mut self) -> PResult<Node> {
        let context = "block clause";
        let t = self.next_non_space()?;
        let name = self.template_name(&t, context)?;
        let pipe = self.pipeline(context, Kind::RightDelim)?;
        self.enter(t.line)?;
        let saved_vars = std::mem::replace(&mut self.vars, vec!["$".to_string()]);
        let saved_range = std::mem::replace(&mut self.range_depth, 0);
        let listed = self.item_list();
        self.vars = saved_vars;
        self.range_depth = saved_range;
        self.depth -= 1;
        let (list, stop, line) = listed?;
        if let Stop::Else = stop {
            return Err(syntax(
                line,
                format!("unexpected {{{{else}}}} in {context}"),
            ));
        }
        self.add_tree(name.clone(), list, t.line)?;
        Ok(Node::Template {
            line: t.line,
            name,
            pipe: Some(pipe),
        })
    }

    /// Parses a pipeline up to `end` (a right delimiter or right paren),
    /// including leading `$x :=`, `$x =` or `$i, $v :=` declarations.
    fn pipeline(&mut self, context: &str, end: Kind) -> PResult<Pipe> {
        self.skip_space();
        let line = self.peek().line;
        let mut pipe = Pipe {
            line,
            is_assign: false,
            decl: Vec::new(),
            cmds: Vec::new(),
        };
        'decls: loop {
            self.skip_space();
            if self.peek().kind != Kind::Variable {
                break;
            }
            let var_at = self.i;
            let v = self.next()?;
            self.skip_space();
            let n = self.peek().clone();
            match n.kind {
                Kind::Assign | Kind::Declare => {
                    pipe.is_assign = n.kind == Kind::Assign;
                    self.i += 1;
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                }
                Kind::Char if n.val == "," => {
                    self.i += 1;
                    pipe.decl.push(v.val.clone());
                    self.vars.push(v.val);
                    if context == "range" && pipe.decl.len() < 2 {
                        self.skip_space();
                        match self.peek().kind {
                            Kind::Variable | Kind::RightDelim | Kind::RightParen => continue 'decls,
                            _ => {
                                return Err(syntax(
                                    n.line,
                                    "range can only initialize variables".to_string(),
                                ))
                            }
                        }
                    }
                    return Err(syntax(
                        n.line,
                        format!("too many declarations in {context}"),
                    ));
                }
                _ => self.i = var_at,
            }
            break;
        }
        loop {
            let t = self.next_non_space()?;
            if t.kind == end {
                self.check_pipeline(&pipe, context, t.line)?;
                return Ok(pipe);
            }
            match t.kind {
                Kind::Bool
                | Kind::CharConstant
                | Kind::Dot
                | Kind::Field
                | Kind::Identifier
                | Kind::Number
                | Kind::Nil
                | Kind::RawString
                | Kind::String
                | Kind::Variable
                | Kind::LeftParen => {
                    self.backup();
                    let cmd = self.command()?;
                    pipe.cmds.push(cmd);
                }
                _ => return Err(self.unexpected(&t, context)),
            }
        }
    }

    fn check_pipeline(&self, pipe: &Pipe, context: &str, line: usize) -> PResult<()> {
        if pipe.cmds.is_empty() {
            return Err(syntax(line, format!("missing value for {context}")));
        }
        for (i, c) in pipe.cmds.iter().enumerate().skip(1) {
            if matches!(
                c.args.first(),
                Some(
                    Arg::Bool(_) | Arg::Dot | Arg::Nil | Arg::Int(_) | Arg::Float(_) | Arg::Str(_)
                )
            ) {
                return Err(syntax(
                    line,
                    format!("non executable command in pipeline stage {}", i + 1),
                ));
            }
        }
        Ok(())
    }

    fn command(&mut self) -> PResult<Cmd> {
        let mut args = Vec::new();
        loop {
            self.skip_space();
            if let Some(op) = self.operand()? {
                args.push(op);
            }
            let t = self.next()?;
            match t.kind {
                Kind::Space => continue,
                Kind::RightDelim | Kind::RightParen => self.backup(),
                Kind::Pipe => {}
                _ => return Err(self.unexpected(&t, "operand")),
            }
            if args.is_empty() {
                return Err(syntax(t.line, "empty command".to_string()));
            }
            return Ok(Cmd { args });
        }
    }

    fn operand(&mut self) -> PResult<Option<Arg>> {
        let line = self.peek().line;
        let Some(node) = self.term()? else {
            return Ok(None);
        };
        if self.peek().kind != Kind::Field {
            return Ok(Some(node));
        }
        let mut fields = Vec::new();
        while self.peek().kind == Kind::Field {
            let f = self.next()?.val[1..].to_string();
            self.fields.insert(f.clone());
            fields.push(f);
        }
        Ok(Some(match node {
            Arg::Field(mut idents) => {
                idents.extend(fields);
                Arg::Field(idents)
            }
            Arg::Variable(mut idents) => {
                idents.extend(fields);
                Arg::Variable(idents)
            }
            Arg::Bool(_) | Arg::Str(_) | Arg::Int(_) | Arg::Float(_) | Arg::Nil | Arg::Dot => {
                return Err(syntax(
                    line,
                    format!("unexpected . after term {:?}", node.describe()),
                ))
            }
            other => Arg::Chain(Box::new(other), fields),
        }))
    }

    fn term(&mut self) -> PResult<Option<Arg>> {
        let t = self.next_non_space()?;
        let arg = match t.kind {
            Kind::Identifier => {
                if !is_builtin(&t.val) {
                    return Err(Error::UndefinedFunction {
                        line: t.line,
                        name: t.val,
                    });
                }
                Arg::Func(t.val)
            }
            Kind::Dot => Arg::Dot,
            Kind::Nil => Arg::Nil,
            Kind::Variable => {
                if !self.vars.contains(&t.val) {
                    return Err(Error::UndefinedVariable {
                        line: t.line,
                        name: t.val,
                    });
                }
                Arg::Variable(vec![t.val])
            }
            Kind::Field => {
                let f = t.val[1..].to_string();
                self.fields.insert(f.clone());
                Arg::Field(vec![f])
            }
            Kind::Bool => Arg::Bool(t.val == "true"),
            Kind::Number | Kind::CharConstant => {
                parse_number(&t.val, t.kind).map_err(|m| syntax(t.line, m))?
            }
            Kind::LeftParen => {
                self.enter(t.line)?;
                let pipe = self.pipeline("parenthesized pipeline", Kind::RightParen)?;
                self.depth -= 1;
                Arg::Pipe(Box::new(pipe))
            }
            Kind::String | Kind::RawString => {
                Arg::Str(unquote(&t.val).map_err(|m| syntax(t.line, m))?)
            }
            _ => {
                self.backup();
                return Ok(None);
            }
        };
        Ok(Some(arg))
    }
}
