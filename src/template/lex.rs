//! The lexer: turns template source into a flat list of tokens, mirroring
//! Go's `text/template/parse/lex.go` (delimiters `{{ }}`, trim markers,
//! comments, and the tokens found inside actions).

/// The kind of a token; the source text travels beside it in [`Token::val`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A lexing failure; `val` holds the message and lexing stops.
    Error,
    Bool,
    Char,
    CharConstant,
    Comment,
    Assign,
    Declare,
    Eof,
    Field,
    Identifier,
    LeftDelim,
    LeftParen,
    Number,
    Pipe,
    RawString,
    RightDelim,
    RightParen,
    Space,
    String,
    Text,
    Variable,
    // Keywords.
    Block,
    Break,
    Continue,
    Dot,
    Define,
    Else,
    End,
    If,
    Nil,
    Range,
    Template,
    With,
}

/// One token: its kind, its source text, and the line it starts on.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub kind: Kind,
    pub val: String,
    pub line: usize,
}

impl Token {
    /// Describes the token the way Go's `item.String` does, for messages.
    pub fn describe(&self) -> String {
        match self.kind {
            Kind::Eof => "EOF".to_string(),
            Kind::Error => self.val.clone(),
            k if k as u8 >= Kind::Block as u8 => format!("<{}>", self.val),
            _ if self.val.chars().count() > 10 => {
                let head: String = self.val.chars().take(10).collect();
                format!("{head:?}...")
            }
            _ => format!("{:?}", self.val),
        }
    }
}

/// Spaces as Go's lexer defines them (Unicode spaces are not included).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// Identifier characters: letters, digits and underscore, as in Go.
fn is_alnum(c: char) -> bool {
    c == '_' || c.is_alphanumeric()
}

/// Reports whether `s` starts with a left trim marker (`-` then a space).
fn has_left_trim(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && b[0] == b'-' && is_space(b[1] as char)
}

/// Reports whether `s` starts with a right trim marker (a space then `-`).
fn has_right_trim(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 2 && is_space(b[0] as char) && b[1] == b'-'
}

/// Lexes the whole source. The last token is `Eof` or `Error`.
pub(crate) fn lex(src: &str) -> Vec<Token> {
    let mut lx = Lexer {
        src,
        pos: 0,
        start: 0,
        line: 1,
        tokens: Vec::new(),
        paren_depth: 0,
    };
    lx.run();
    lx.tokens
}

struct Lexer<'s> {
    src: &'s str,
    pos: usize,
    start: usize,
    /// The line of `start`.
    line: usize,
    tokens: Vec<Token>,
    paren_depth: usize,
}

/// Whether lexing continues after a state function.
type Step = Result<(), ()>;

impl Lexer<'_> {
    fn run(&mut self) {
        // Alternating text and action states; any error ends the run.
        while self.lex_text().is_ok() {
            if self.tokens.last().map(|t| t.kind) == Some(Kind::Eof) {
                return;
            }
            if self.lex_left_delim().is_err() {
                return;
            }
        }
    }

    /// Moves `start` to `pos`, keeping the line count in step.
    fn ignore(&mut self) {
        self.line += self.src[self.start..self.pos].matches('\n').count();
        self.start = self.pos;
    }

    fn emit(&mut self, kind: Kind) {
        let val = self.src[self.start..self.pos].to_string();
        self.tokens.push(Token {
            kind,
            val,
            line: self.line,
        });
        self.ignore();
    }

    fn error(&mut self, msg: String) -> Step {
        self.tokens.push(Token {
            kind: Kind::Error,
            val: msg,
            line: self.line + self.src[self.start..self.pos].matches('\n').count(),
        });
        Err(())
    }

    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn accept(&mut self, set: &str) -> bool {
        match self.peek() {
            Some(c) if set.contains(c) => {
                self.pos += c.len_utf8();
                true
            }
            _ => false,
        }
    }

    fn accept_run(&mut self, set: &str) {
        while self.accept(set) {}
    }

    /// Scans text up to the next `{{`, trimming trailing space if the action
    /// opens with a trim marker. Emits `Eof` when the input ends.
    fn lex_text(&mut self) -> Step {
        match self.src[self.pos..].find("{{") {
            Some(x) => {
                let delim_at = self.pos + x;
                let mut text_end = delim_at;
                if has_left_trim(&self.src[delim_at + 2..]) {
                    let text = &self.src[self.start..delim_at];
                    text_end = self.start + text.trim_end_matches(is_space).len();
                }
                self.pos = text_end;
                if self.pos > self.start {
                    self.emit(Kind::Text);
                }
                self.pos = delim_at;
                self.ignore();
                Ok(())
            }
            None => {
                self.pos = self.src.len();
                if self.pos > self.start {
                    self.emit(Kind::Text);
                }
                self.emit(Kind::Eof);
                Ok(())
            }
        }
    }

    /// Checks for a closing delimiter at `pos`: (found, with trim marker).
    fn at_right_delim(&self) -> (bool, bool) {
        let rest = &self.src[self.pos..];
        if has_right_trim(rest) && rest[2..].starts_with("}}") {
            return (true, true);
        }
        (rest.starts_with("}}"), false)
    }

    fn lex_left_delim(&mut self) -> Step {
        self.pos += 2;
        let trim = has_left_trim(&self.src[self.pos..]);
        let after_marker = if trim { 2 } else { 0 };
        if self.src[self.pos + after_marker..].starts_with("/*") {
            self.pos += after_marker;
            self.ignore();
            return self.lex_comment();
        }
        self.emit(Kind::LeftDelim);
        self.pos += after_marker;
        self.ignore();
        self.paren_depth = 0;
        self.lex_inside_action()
    }

    fn lex_comment(&mut self) -> Step {
        self.pos += 2;
        match self.src[self.pos..].find("*/") {
            Some(x) => self.pos += x + 2,
            None => return self.error("unclosed comment".to_string()),
        }
        let (delim, trim) = self.at_right_delim();
        if !delim {
            return self.error("comment ends before closing delimiter".to_string());
        }
        self.emit(Kind::Comment);
        if trim {
            self.pos += 2;
        }
        self.pos += 2;
        if trim {
            let rest = &self.src[self.pos..];
            self.pos += rest.len() - rest.trim_start_matches(is_space).len();
        }
        self.ignore();
        Ok(())
    }

    fn lex_right_delim(&mut self, trim: bool) {
        if trim {
            self.pos += 2;
            self.ignore();
        }
        self.pos += 2;
        self.emit(Kind::RightDelim);
        if trim {
            let rest = &self.src[self.pos..];
            self.pos += rest.len() - rest.trim_start_matches(is_space).len();
            self.ignore();
        }
    }

    fn lex_inside_action(&mut self) -> Step {
        loop {
            let (delim, trim) = self.at_right_delim();
            if delim {
                if self.paren_depth == 0 {
                    self.lex_right_delim(trim);
                    return Ok(());
                }
                return self.error("unclosed left paren".to_string());
            }
            let Some(c) = self.next() else {
                return self.error("unclosed action".to_string());
            };
            match c {
                c if is_space(c) => {
                    self.pos -= 1;
                    self.lex_space();
                }
                '=' => self.emit(Kind::Assign),
                ':' => {
                    if self.next() != Some('=') {
                        return self.error("expected :=".to_string());
                    }
                    self.emit(Kind::Declare);
                }
                '|' => self.emit(Kind::Pipe),
                '"' => self.lex_quote()?,
                '`' => self.lex_raw_quote()?,
                '$' => self.lex_field_or_variable(Kind::Variable)?,
                '\'' => self.lex_char()?,
                '.' => match self.peek() {
                    Some(d) if d.is_ascii_digit() => {
                        self.pos -= 1;
                        self.lex_number()?;
                    }
                    _ => self.lex_field_or_variable(Kind::Field)?,
                },
                '+' | '-' | '0'..='9' => {
                    self.pos -= 1;
                    self.lex_number()?;
                }
                c if is_alnum(c) => {
                    self.pos -= c.len_utf8();
                    self.lex_identifier()?;
                }
                '(' => {
                    self.emit(Kind::LeftParen);
                    self.paren_depth += 1;
                }
                ')' => {
                    if self.paren_depth == 0 {
                        return self.error("unexpected right paren".to_string());
                    }
                    self.paren_depth -= 1;
                    self.emit(Kind::RightParen);
                }
                c if c.is_ascii() && !c.is_ascii_control() => self.emit(Kind::Char),
                c => return self.error(format!("unrecognized character in action: {c:?}")),
            }
        }
    }

    /// Scans a run of spaces. A single space that belongs to a ` -}}` trim
    /// marker is left for the delimiter check instead.
    fn lex_space(&mut self) {
        let mut n = 0;
        while self.peek().is_some_and(is_space) {
            self.pos += 1;
            n += 1;
        }
        let tail = &self.src[self.pos - 1..];
        if has_right_trim(tail) && tail[2..].starts_with("}}") {
            self.pos -= 1;
            if n == 1 {
                return;
            }
        }
        self.emit(Kind::Space);
    }

    /// Reports whether the next character can end a word. `=` is not one,
    /// so `$x=1` is a lexing error in Go too; `$x := 1` and `$x = 1` work.
    fn at_terminator(&self) -> bool {
        match self.peek() {
            None => true,
            Some(c) => {
                is_space(c)
                    || matches!(c, '.' | ',' | '|' | ':' | ')' | '(')
                    || self.src[self.pos..].starts_with("}}")
            }
        }
    }

    fn lex_identifier(&mut self) -> Step {
        while self.peek().is_some_and(is_alnum) {
            self.next();
        }
        if !self.at_terminator() {
            let c = self.peek().unwrap_or(' ');
            return self.error(format!("bad character {c:?}"));
        }
        let kind = match &self.src[self.start..self.pos] {
            "block" => Kind::Block,
            "break" => Kind::Break,
            "continue" => Kind::Continue,
            "define" => Kind::Define,
            "else" => Kind::Else,
            "end" => Kind::End,
            "if" => Kind::If,
            "nil" => Kind::Nil,
            "range" => Kind::Range,
            "template" => Kind::Template,
            "with" => Kind::With,
            "true" | "false" => Kind::Bool,
            _ => Kind::Identifier,
        };
        self.emit(kind);
        Ok(())
    }

    /// Lexes `.Name` / `$name`; a bare `.` is `Dot` and a bare `$` is the
    /// root variable.
    fn lex_field_or_variable(&mut self, kind: Kind) -> Step {
        if self.at_terminator() {
            self.emit(if kind == Kind::Field {
                Kind::Dot
            } else {
                Kind::Variable
            });
            return Ok(());
        }
        while self.peek().is_some_and(is_alnum) {
            self.next();
        }
        if !self.at_terminator() {
            let c = self.peek().unwrap_or(' ');
            return self.error(format!("bad character {c:?}"));
        }
        self.emit(kind);
        Ok(())
    }

    fn lex_char(&mut self) -> Step {
        loop {
            match self.next() {
                Some('\\') => {
                    if matches!(self.next(), None | Some('\n')) {
                        return self.error("unterminated character constant".to_string());
                    }
                }
                None | Some('\n') => {
                    return self.error("unterminated character constant".to_string())
                }
                Some('\'') => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::CharConstant);
        Ok(())
    }

    fn lex_quote(&mut self) -> Step {
        loop {
            match self.next() {
                Some('\\') => {
                    if matches!(self.next(), None | Some('\n')) {
                        return self.error("unterminated quoted string".to_string());
                    }
                }
                None | Some('\n') => return self.error("unterminated quoted string".to_string()),
                Some('"') => break,
                Some(_) => {}
            }
        }
        self.emit(Kind::String);
        Ok(())
    }

    fn lex_raw_quote(&mut self) -> Step {
        match self.src[self.pos..].find('`') {
            Some(x) => self.pos += x + 1,
            None => return self.error("unterminated raw quoted string".to_string()),
        }
        self.emit(Kind::RawString);
        Ok(())
    }

    /// Scans a number loosely, as Go does; the parser validates it.
    fn lex_number(&mut self) -> Step {
        self.accept("+-");
        let mut digits = "0123456789_";
        if self.accept("0") {
            if self.accept("xX") {
                digits = "0123456789abcdefABCDEF_";
            } else if self.accept("oO") {
                digits = "01234567_";
            } else if self.accept("bB") {
                digits = "01_";
            }
        }
        self.accept_run(digits);
        if self.accept(".") {
            self.accept_run(digits);
        }
        if digits.len() == 11 && self.accept("eE") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        if digits.len() == 23 && self.accept("pP") {
            self.accept("+-");
            self.accept_run("0123456789_");
        }
        self.accept("i");
        if self.peek().is_some_and(is_alnum) {
            self.next();
            let text = self.src[self.start..self.pos].to_string();
            return self.error(format!("bad number syntax: {text:?}"));
        }
        self.emit(Kind::Number);
        Ok(())
    }
}
