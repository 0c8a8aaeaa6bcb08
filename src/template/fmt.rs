//! Go's `fmt` as far as templates need it (`print`, `println`, `printf`
//! with the common verbs, flags, width and precision) and the escapers
//! behind `html`, `js` and `urlquery`.

use super::value::{go_float, json_view, print_val, type_name, Val, View};
use super::MAX_OUTPUT_BYTES;

/// `fmt.Sprint`: operands printed `%v`-style, with a space between two
/// operands when neither is a string.
pub(crate) fn sprint(args: &[Val<'_>]) -> String {
    let mut out = String::new();
    let mut prev_str = true;
    for (i, a) in args.iter().enumerate() {
        if out.len() > MAX_OUTPUT_BYTES {
            // The caller rejects the oversized result; stop growing it.
            break;
        }
        let is_str = matches!(a.view(), View::Str(_));
        if i > 0 && !is_str && !prev_str {
            out.push(' ');
        }
        print_val(a.view(), &mut out);
        prev_str = is_str;
    }
    out
}

/// `fmt.Sprintln`: operands always space-separated, then a newline.
pub(crate) fn sprintln(args: &[Val<'_>]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if out.len() > MAX_OUTPUT_BYTES {
            break;
        }
        if i > 0 {
            out.push(' ');
        }
        print_val(a.view(), &mut out);
    }
    out.push('\n');
    out
}

/// Formatting flags and sizes of one `%` directive.
#[derive(Default)]
struct Spec {
    minus: bool,
    plus: bool,
    sharp: bool,
    space: bool,
    zero: bool,
    width: Option<usize>,
    prec: Option<usize>,
}

/// `fmt.Sprintf` for the verbs v s d q f F e E g G t x X c o b T and `%%`,
/// with Go's `%!verb(type=value)`, `%!v(MISSING)` and `%!(EXTRA ...)`
/// markers for mismatches.
pub(crate) fn printf(format: &str, args: &[Val<'_>]) -> String {
    let mut out = String::new();
    let mut next_arg = 0;
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if out.len() > MAX_OUTPUT_BYTES {
            break;
        }
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = Spec::default();
        while let Some(&f) = chars.peek() {
            match f {
                '-' => spec.minus = true,
                '+' => spec.plus = true,
                '#' => spec.sharp = true,
                ' ' => spec.space = true,
                '0' => spec.zero = true,
                _ => break,
            }
            chars.next();
        }
        spec.width = read_num(&mut chars);
        if chars.peek() == Some(&'.') {
            chars.next();
            spec.prec = Some(read_num(&mut chars).unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next_arg) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next_arg += 1;
        let body = format_one(verb, &spec, arg.view());
        pad(&mut out, &body, &spec, arg.view());
    }
    if next_arg < args.len() {
        out.push_str("%!(EXTRA ");
        for (i, a) in args[next_arg..].iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(type_name(a.view()));
            out.push('=');
            print_val(a.view(), &mut out);
        }
        out.push(')');
    }
    out
}

fn read_num(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) -> Option<usize> {
    let mut n: Option<usize> = None;
    while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
        // Widths are capped so a hostile format cannot request gigabytes.
        n = Some((n.unwrap_or(0) * 10 + d as usize).min(1 << 16));
        chars.next();
    }
    n
}

/// Pads `body` to the width, with zeros after the sign for numbers when
/// the `0` flag is set (and `-` is not).
fn pad(out: &mut String, body: &str, spec: &Spec, v: View<'_>) {
    let len = body.chars().count();
    let width = spec.width.unwrap_or(0);
    if len >= width {
        out.push_str(body);
        return;
    }
    let fill = width - len;
    let numeric = matches!(v, View::Int(_) | View::Uint(_) | View::Float(_));
    if spec.minus {
        out.push_str(body);
        out.extend(std::iter::repeat_n(' ', fill));
    } else if spec.zero && numeric {
        let (sign, digits) = match body.strip_prefix(['-', '+']) {
            Some(rest) => (&body[..1], rest),
            None => ("", body),
        };
        out.push_str(sign);
        out.extend(std::iter::repeat_n('0', fill));
        out.push_str(digits);
    } else {
        out.extend(std::iter::repeat_n(' ', fill));
        out.push_str(body);
    }
}

/// The `%!verb(type=value)` marker for a verb that does not fit the value.
fn bad_verb(verb: char, v: View<'_>) -> String {
    if let View::Null = v {
        return format!("%!{verb}(<nil>)");
    }
    let mut s = format!("%!{verb}({}=", type_name(v));
    print_val(v, &mut s);
    s.push(')');
    s
}

fn signed(s: String, spec: &Spec) -> String {
    if s.starts_with('-') {
        s
    } else if spec.plus {
        format!("+{s}")
    } else if spec.space {
        format!(" {s}")
    } else {
        s
    }
}

fn format_one(verb: char, spec: &Spec, v: View<'_>) -> String {
    let int = match v {
        View::Int(i) => Some(i128::from(i)),
        View::Uint(u) => Some(i128::from(u)),
        _ => None,
    };
    match verb {
        'v' => match v {
            View::Float(f) => signed(float_verb('g', f, spec.prec), spec),
            View::Int(_) | View::Uint(_) => signed(int.unwrap_or(0).to_string(), spec),
            View::Str(s) if spec.sharp => go_quote(s),
            View::Null if spec.sharp => "<nil>".into(),
            _ => {
                let mut s = String::new();
                print_val(v, &mut s);
                s
            }
        },
        's' => match v {
            View::Str(s) => truncate(s, spec.prec),
            View::Arr(_) | View::Obj(_) => {
                let mut s = String::new();
                json_view(v, &mut s);
                truncate(&s, spec.prec)
            }
            _ => bad_verb(verb, v),
        },
        'q' => match (v, int) {
            (View::Str(s), _) => go_quote(s),
            (_, Some(i)) => match u32::try_from(i).ok().and_then(char::from_u32) {
                Some(c) => format!("'{}'", quote_char(c, '\'')),
                None => "'\u{fffd}'".into(),
            },
            _ => bad_verb(verb, v),
        },
        'd' => match int {
            Some(i) => signed(i.to_string(), spec),
            None => bad_verb(verb, v),
        },
        'b' | 'o' | 'x' | 'X' => match (v, int) {
            (_, Some(i)) => {
                let mag = i.unsigned_abs();
                let digits = match verb {
                    'b' => format!("{mag:b}"),
                    'o' => format!("{mag:o}"),
                    'x' => format!("{mag:x}"),
                    _ => format!("{mag:X}"),
                };
                let prefix = match (spec.sharp, verb) {
                    (true, 'x') => "0x",
                    (true, 'X') => "0X",
                    (true, 'o') => "0",
                    _ => "",
                };
                let sign = if i < 0 { "-" } else { "" };
                signed(format!("{sign}{prefix}{digits}"), spec)
            }
            (View::Str(s), _) if verb == 'x' || verb == 'X' => {
                let hex: String = s.bytes().map(|b| format!("{b:02x}")).collect();
                if verb == 'X' {
                    hex.to_uppercase()
                } else {
                    hex
                }
            }
            _ => bad_verb(verb, v),
        },
        'c' => match int
            .and_then(|i| u32::try_from(i).ok())
            .and_then(char::from_u32)
        {
            Some(c) => c.to_string(),
            None => bad_verb(verb, v),
        },
        't' => match v {
            View::Bool(b) => b.to_string(),
            _ => bad_verb(verb, v),
        },
        'e' | 'E' | 'f' | 'F' | 'g' | 'G' => match v {
            View::Float(f) => signed(float_verb(verb, f, spec.prec), spec),
            _ => bad_verb(verb, v),
        },
        'T' => type_name(v).to_string(),
        _ => bad_verb(verb, v),
    }
}

fn truncate(s: &str, prec: Option<usize>) -> String {
    match prec {
        Some(p) => s.chars().take(p).collect(),
        None => s.to_string(),
    }
}

/// Formats a float for `%e`, `%f` and `%g` (and `%v`, which is `%g`).
fn float_verb(verb: char, f: f64, prec: Option<usize>) -> String {
    if !f.is_finite() {
        return go_float(f, false);
    }
    let s = match verb.to_ascii_lowercase() {
        'f' => format!("{:.*}", prec.unwrap_or(6).min(1 << 10), f),
        'e' => exp_form(f, prec.unwrap_or(6).min(1 << 10)),
        _ => match prec {
            None => go_float(f, false),
            Some(p) => {
                // %.Ng: N significant digits, exponent form when the exponent
                // is below -4 or at least N; trailing zeros removed.
                let p = p.clamp(1, 1 << 10);
                let e = exp_form(f, p - 1);
                let exp: i64 = e
                    .rsplit_once('e')
                    .and_then(|(_, x)| x.parse().ok())
                    .unwrap_or(0);
                if exp < -4 || exp >= p as i64 {
                    let (m, x) = e.split_once('e').unwrap_or((&e, "+00"));
                    format!("{}e{x}", trim_zeros(m))
                } else {
                    let decimals = (p as i64 - 1 - exp).max(0) as usize;
                    trim_zeros(&format!("{f:.decimals$}")).to_string()
                }
            }
        },
    };
    if verb.is_ascii_uppercase() {
        s.to_uppercase()
    } else {
        s
    }
}

fn trim_zeros(m: &str) -> &str {
    if m.contains('.') {
        m.trim_end_matches('0').trim_end_matches('.')
    } else {
        m
    }
}

/// `%.Ne` in Go's form: `d.ddde+XX` with at least two exponent digits.
fn exp_form(f: f64, prec: usize) -> String {
    let s = format!("{f:.prec$e}");
    let (m, x) = s.split_once('e').unwrap_or((&s, "0"));
    let x: i64 = x.parse().unwrap_or(0);
    let sign = if x < 0 { '-' } else { '+' };
    format!("{m}e{sign}{:02}", x.unsigned_abs())
}

/// Go's `strconv.Quote`.
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        out.push_str(&quote_char(c, '"'));
    }
    out.push('"');
    out
}

fn quote_char(c: char, quote: char) -> String {
    match c {
        c if c == quote || c == '\\' => format!("\\{c}"),
        '\u{7}' => "\\a".into(),
        '\u{8}' => "\\b".into(),
        '\u{c}' => "\\f".into(),
        '\n' => "\\n".into(),
        '\r' => "\\r".into(),
        '\t' => "\\t".into(),
        '\u{b}' => "\\v".into(),
        c if (c as u32) < 0x20 || c as u32 == 0x7f => format!("\\x{:02x}", c as u32),
        c if c.is_control() => {
            if (c as u32) < 0x10000 {
                format!("\\u{:04x}", c as u32)
            } else {
                format!("\\U{:08x}", c as u32)
            }
        }
        c => c.to_string(),
    }
}

/// Go's `template.HTMLEscapeString`.
pub(crate) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\0' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
pub(crate) fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04X}", c as u32)),
            c if !c.is_ascii() && c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub(crate) fn url_query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
