//! The function table: Go's text/template builtins (`and`, `or`, `not`,
//! `len`, `index`, `slice`, comparisons, `print*`, escapers) and Ollama's
//! additions (`json`, `currentDate`, `yesterdayDate`, `toTypeScriptType`).
//! `and`/`or` short-circuit, so the executor evaluates them itself.

use std::cmp::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::fmt::{html_escape, js_escape, printf, sprint, sprintln, url_query_escape};
use super::value::{json_view, truth, type_name, view_of, Val, View};

/// Every function name a template may call, with its argument count as
/// (minimum, maximum); `None` means variadic.
const FUNCS: &[(&str, usize, Option<usize>)] = &[
    ("and", 1, None),
    ("or", 1, None),
    ("not", 1, Some(1)),
    ("len", 1, Some(1)),
    ("index", 1, None),
    ("slice", 1, None),
    ("eq", 1, None),
    ("ne", 2, Some(2)),
    ("lt", 2, Some(2)),
    ("le", 2, Some(2)),
    ("gt", 2, Some(2)),
    ("ge", 2, Some(2)),
    ("print", 0, None),
    ("printf", 1, None),
    ("println", 0, None),
    ("html", 0, None),
    ("js", 0, None),
    ("urlquery", 0, None),
    ("call", 1, None),
    ("json", 1, Some(1)),
    ("currentDate", 0, None),
    ("yesterdayDate", 0, None),
    ("toTypeScriptType", 1, Some(1)),
];

/// Reports whether `name` is a function templates may call.
pub(crate) fn is_builtin(name: &str) -> bool {
    FUNCS.iter().any(|(n, _, _)| *n == name)
}

/// Checks the argument count, with Go's message on a mismatch.
pub(crate) fn check_arity(name: &str, got: usize) -> Result<(), String> {
    let Some(&(_, min, max)) = FUNCS.iter().find(|(n, _, _)| *n == name) else {
        return Err(format!("function {name:?} not defined"));
    };
    match max {
        Some(max) if got != max => Err(format!(
            "wrong number of args for {name}: want {max} got {got}"
        )),
        None if got < min => Err(format!(
            "wrong number of args for {name}: want at least {min} got {got}"
        )),
        _ => Ok(()),
    }
}

/// Calls a builtin other than `and`, `or` and `call` with evaluated
/// arguments (the piped value, if any, last).
pub(crate) fn call<'a>(name: &str, mut args: Vec<Val<'a>>) -> Result<Val<'a>, String> {
    match name {
        "not" => Ok(Val::bool(!truth(args[0].view()))),
        "len" => length(args[0].view()).map(|n| Val::int(n as i64)),
        "index" => {
            let rest = args.split_off(1);
            let item = args.pop().unwrap_or_else(Val::null);
            index(item, &rest)
        }
        "slice" => {
            let rest = args.split_off(1);
            let item = args.pop().unwrap_or_else(Val::null);
            slice(item, &rest)
        }
        "eq" => {
            let first = args[0].view();
            if args.len() == 1 {
                return Err("missing argument for comparison".into());
            }
            for other in &args[1..] {
                if eq(first, other.view())? {
                    return Ok(Val::bool(true));
                }
            }
            Ok(Val::bool(false))
        }
        "ne" => Ok(Val::bool(!eq(args[0].view(), args[1].view())?)),
        "lt" => Ok(Val::bool(less(args[0].view(), args[1].view())?)),
        "le" => {
            let (a, b) = (args[0].view(), args[1].view());
            Ok(Val::bool(less(a, b)? || eq(a, b)?))
        }
        "gt" => {
            let (a, b) = (args[0].view(), args[1].view());
            Ok(Val::bool(!(less(a, b)? || eq(a, b)?)))
        }
        "ge" => Ok(Val::bool(!less(args[0].view(), args[1].view())?)),
        "print" => Ok(Val::str(sprint(&args))),
        "println" => Ok(Val::str(sprintln(&args))),
        "printf" => {
            let View::Str(format) = args[0].view() else {
                return Err(format!(
                    "wrong type for value; expected string; got {}",
                    type_name(args[0].view())
                ));
            };
            Ok(Val::str(printf(format, &args[1..])))
        }
        "html" => Ok(Val::str(html_escape(&eval_args(&args)))),
        "js" => Ok(Val::str(js_escape(&eval_args(&args)))),
        "urlquery" => Ok(Val::str(url_query_escape(&eval_args(&args)))),
        "json" => {
            let mut out = String::new();
            json_view(args[0].view(), &mut out);
            Ok(Val::str(out))
        }
        "currentDate" | "yesterdayDate" => {
            for a in &args {
                if !matches!(a.view(), View::Str(_)) {
                    return Err(format!(
                        "wrong type for value; expected string; got {}",
                        type_name(a.view())
                    ));
                }
            }
            let back = if name == "yesterdayDate" { 1 } else { 0 };
            Ok(Val::str(utc_date(back)))
        }
        "toTypeScriptType" => Ok(Val::str(ts_type(args[0].view()))),
        _ => Err(format!("function {name:?} not defined")),
    }
}

/// The text an escaper works on: a lone string as is, otherwise `print`'s
/// rendering of all arguments (Go's `evalArgs`).
fn eval_args(args: &[Val<'_>]) -> String {
    if let [one] = args {
        if let View::Str(s) = one.view() {
            return s.to_string();
        }
    }
    sprint(args)
}

/// `len`: bytes of a string, elements of an array or object. Null counts as
/// an empty collection, since it stands in for a nil slice or map.
fn length(v: View<'_>) -> Result<usize, String> {
    match v {
        View::Null => Ok(0),
        View::Str(s) => Ok(s.len()),
        View::Arr(a) => Ok(a.len()),
        View::Obj(m) => Ok(m.len()),
        other => Err(format!("len of type {}", type_name(other))),
    }
}

/// Converts an index argument to a usize within `0..=cap`.
fn index_arg(v: View<'_>, cap: usize) -> Result<usize, String> {
    let x: i128 = match v {
        View::Int(i) => i128::from(i),
        View::Uint(u) => i128::from(u),
        View::Null => return Err("cannot index slice/array with nil".into()),
        other => {
            return Err(format!(
                "cannot index slice/array with type {}",
                type_name(other)
            ))
        }
    };
    if x < 0 || x > cap as i128 {
        return Err(format!("index out of range: {x}"));
    }
    Ok(x as usize)
}

fn index<'a>(mut item: Val<'a>, indices: &[Val<'a>]) -> Result<Val<'a>, String> {
    for idx in indices {
        let next = match item.view() {
            View::Arr(a) => {
                let len = a.len();
                let i = index_arg(idx.view(), len)?;
                if i == len {
                    return Err(format!("index out of range: {i}"));
                }
                item.elem(i)
            }
            View::Str(s) => {
                let i = index_arg(idx.view(), s.len())?;
                match s.as_bytes().get(i) {
                    Some(b) => Some(Val::int(i64::from(*b))),
                    None => return Err(format!("index out of range: {i}")),
                }
            }
            View::Obj(_) => match idx.view() {
                View::Str(k) => Some(item.key(k).unwrap_or_else(Val::null)),
                View::Null => Some(Val::null()),
                other => {
                    return Err(format!(
                        "value has type {}; should be string",
                        type_name(other)
                    ))
                }
            },
            View::Null => return Err("index of untyped nil".into()),
            other => return Err(format!("can't index item of type {}", type_name(other))),
        };
        item = next.unwrap_or_else(Val::null);
    }
    Ok(item)
}

fn slice<'a>(item: Val<'a>, indices: &[Val<'a>]) -> Result<Val<'a>, String> {
    if indices.len() > 3 {
        return Err(format!("too many slice indexes: {}", indices.len()));
    }
    let (len, is_str) = match item.view() {
        View::Str(s) => {
            if indices.len() == 3 {
                return Err("cannot 3-index slice a string".into());
            }
            (s.len(), true)
        }
        View::Arr(a) => (a.len(), false),
        View::Null => return Err("slice of untyped nil".into()),
        other => return Err(format!("can't slice item of type {}", type_name(other))),
    };
    let mut idx = [0, len, len];
    for (i, v) in indices.iter().enumerate() {
        idx[i] = index_arg(v.view(), len)?;
    }
    if idx[0] > idx[1] {
        return Err(format!("invalid slice index: {} > {}", idx[0], idx[1]));
    }
    if indices.len() == 3 && idx[1] > idx[2] {
        return Err(format!("invalid slice index: {} > {}", idx[1], idx[2]));
    }
    if is_str {
        if let View::Str(s) = item.view() {
            // Byte offsets may split a character, as they may in Go; the
            // broken bytes become U+FFFD rather than invalid UTF-8.
            let bytes = &s.as_bytes()[idx[0]..idx[1]];
            return Ok(Val::str(String::from_utf8_lossy(bytes).into_owned()));
        }
    }
    Ok(item.sub_array(idx[0], idx[1]).unwrap_or_else(Val::null))
}

/// Compares two numbers; integers exactly, anything with a float as f64.
fn num_cmp(a: View<'_>, b: View<'_>) -> Option<Ordering> {
    let as_i = |v: View<'_>| match v {
        View::Int(i) => Some(i128::from(i)),
        View::Uint(u) => Some(i128::from(u)),
        _ => None,
    };
    let as_f = |v: View<'_>| match v {
        View::Int(i) => Some(i as f64),
        View::Uint(u) => Some(u as f64),
        View::Float(f) => Some(f),
        _ => None,
    };
    match (as_i(a), as_i(b)) {
        (Some(x), Some(y)) => Some(x.cmp(&y)),
        _ => as_f(a)?.partial_cmp(&as_f(b)?),
    }
}

fn is_num(v: View<'_>) -> bool {
    matches!(v, View::Int(_) | View::Uint(_) | View::Float(_))
}

/// Go's `eq` for one pair. Null equals only null and is unequal to
/// anything else without error, like Go's invalid values.
fn eq(a: View<'_>, b: View<'_>) -> Result<bool, String> {
    match (a, b) {
        (View::Null, View::Null) => Ok(true),
        (View::Null, _) | (_, View::Null) => Ok(false),
        (View::Bool(x), View::Bool(y)) => Ok(x == y),
        (View::Str(x), View::Str(y)) => Ok(x == y),
        (x, y) if is_num(x) && is_num(y) => Ok(num_cmp(x, y) == Some(Ordering::Equal)),
        (View::Arr(_) | View::Obj(_), _) | (_, View::Arr(_) | View::Obj(_)) => Err(format!(
            "non-comparable types {} and {}",
            type_name(a),
            type_name(b)
        )),
        _ => Err("incompatible types for comparison".into()),
    }
}

/// Go's `lt`: numbers and strings only.
fn less(a: View<'_>, b: View<'_>) -> Result<bool, String> {
    match (a, b) {
        (View::Str(x), View::Str(y)) => Ok(x < y),
        (x, y) if is_num(x) && is_num(y) => Ok(num_cmp(x, y) == Some(Ordering::Less)),
        (View::Null | View::Bool(_) | View::Arr(_) | View::Obj(_), _)
        | (_, View::Null | View::Bool(_) | View::Arr(_) | View::Obj(_)) => {
            Err("invalid type for comparison".into())
        }
        _ => Err("incompatible types for comparison".into()),
    }
}

/// Today's (or an earlier) date as YYYY-MM-DD, which is what Ollama's
/// `currentDate` returns (Go layout "2006-01-02"). UTC is used because the
/// crate has no time-zone database.
fn utc_date(days_back: i64) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = i64::try_from(secs / 86_400).unwrap_or(0) - days_back;
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month,
/// day), after Howard Hinnant's `civil_from_days`.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Ollama's `ToolProperty.ToTypeScriptType` applied to a JSON schema
/// property; anything that is not an object maps to "any".
fn ts_type(v: View<'_>) -> String {
    let View::Obj(m) = v else {
        return "any".into();
    };
    if let Some(Value::Array(any_of)) = m.get("anyOf") {
        if !any_of.is_empty() {
            let parts: Vec<String> = any_of.iter().map(|p| ts_type(view_of(p))).collect();
            return parts.join(" | ");
        }
    }
    let map = |t: &str| match t {
        "string" => "string",
        "number" | "integer" => "number",
        "boolean" => "boolean",
        "array" => "any[]",
        "object" => "Record<string, any>",
        "null" => "null",
        _ => "any",
    };
    match m.get("type") {
        Some(Value::String(t)) => map(t).to_string(),
        Some(Value::Array(ts)) if !ts.is_empty() => ts
            .iter()
            .map(|t| map(t.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(" | "),
        _ => "any".into(),
    }
}
