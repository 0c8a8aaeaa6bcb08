//! Literal decoding for the parser: numbers (decimal, hex, octal, binary,
//! floats, character constants) and Go's quoted-string unescaping.

use super::lex::Kind;
use super::parse::Arg;

/// Converts a number or character literal, following Go's rules: a literal
/// with `.`, `e` or `E` (and not hex) is a float; others are integers.
pub(crate) fn parse_number(text: &str, kind: Kind) -> Result<Arg, String> {
    let bad = || format!("illegal number syntax: {text:?}");
    if kind == Kind::CharConstant {
        let s = unquote(text)?;
        let mut chars = s.chars();
        return match (chars.next(), chars.next()) {
            (Some(c), None) => Ok(Arg::Int(i64::from(u32::from(c)))),
            _ => Err(format!("malformed character constant: {text}")),
        };
    }
    if text.ends_with('i') {
        return Err(format!("complex numbers are not supported: {text:?}"));
    }
    let clean: String = text.chars().filter(|&c| c != '_').collect();
    let (neg, body) = match clean.as_bytes().first() {
        Some(b'-') => (true, &clean[1..]),
        Some(b'+') => (false, &clean[1..]),
        _ => (false, &clean[..]),
    };
    let lower = body.to_ascii_lowercase();
    let radix = if lower.starts_with("0x") {
        Some((16, &body[2..]))
    } else if lower.starts_with("0o") {
        Some((8, &body[2..]))
    } else if lower.starts_with("0b") {
        Some((2, &body[2..]))
    } else {
        None
    };
    if let Some((radix, digits)) = radix {
        if digits.contains(['.', 'p', 'P']) {
            return Err(format!("hex float literals are not supported: {text:?}"));
        }
        let v = i64::from_str_radix(digits, radix).map_err(|_| bad())?;
        return Ok(Arg::Int(if neg { -v } else { v }));
    }
    if body.is_empty() {
        return Err(bad());
    }
    if body.contains(['.', 'e', 'E']) {
        let v: f64 = body.parse().map_err(|_| bad())?;
        return Ok(Arg::Float(if neg { -v } else { v }));
    }
    // A leading zero means octal for integers, as in Go.
    let v = if body.len() > 1 && body.starts_with('0') {
        i64::from_str_radix(&body[1..], 8).map_err(|_| bad())?
    } else {
        body.parse::<i64>()
            .map_err(|_| format!("{text} overflows int"))?
    };
    Ok(Arg::Int(if neg { -v } else { v }))
}

/// Go's `strconv.Unquote` for "..." , `...` and '...' literals.
pub(crate) fn unquote(s: &str) -> Result<String, String> {
    let invalid = || "invalid syntax".to_string();
    let bytes = s.as_bytes();
    if bytes.len() < 2 {
        return Err(invalid());
    }
    let quote = bytes[0];
    if bytes[bytes.len() - 1] != quote {
        return Err(invalid());
    }
    let body = &s[1..s.len() - 1];
    if quote == b'`' {
        return Ok(body.replace('\r', ""));
    }
    if quote != b'"' && quote != b'\'' {
        return Err(invalid());
    }
    let mut out: Vec<u8> = Vec::with_capacity(body.len());
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            if c as u32 == u32::from(quote) {
                return Err(invalid());
            }
            let mut buf = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            continue;
        }
        let e = chars.next().ok_or_else(invalid)?;
        let simple = match e {
            'a' => Some(7u8),
            'b' => Some(8),
            'f' => Some(12),
            'n' => Some(b'\n'),
            'r' => Some(b'\r'),
            't' => Some(b'\t'),
            'v' => Some(11),
            '\\' => Some(b'\\'),
            '"' | '\'' if e as u32 == u32::from(quote) => Some(e as u8),
            _ => None,
        };
        if let Some(b) = simple {
            out.push(b);
            continue;
        }
        match e {
            'x' | 'u' | 'U' => {
                let n = match e {
                    'x' => 2,
                    'u' => 4,
                    _ => 8,
                };
                let hex: String = chars.by_ref().take(n).collect();
                if hex.len() != n {
                    return Err(invalid());
                }
                let v = u32::from_str_radix(&hex, 16).map_err(|_| invalid())?;
                if e == 'x' {
                    out.push(v as u8);
                } else {
                    let c = char::from_u32(v).ok_or_else(invalid)?;
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
            }
            '0'..='7' => {
                let rest: String = chars.by_ref().take(2).collect();
                let oct = format!("{e}{rest}");
                if oct.len() != 3 {
                    return Err(invalid());
                }
                let v = u32::from_str_radix(&oct, 8).map_err(|_| invalid())?;
                out.push(u8::try_from(v).map_err(|_| invalid())?);
            }
            _ => return Err(invalid()),
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
