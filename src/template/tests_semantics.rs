//! Unit tests for Go `text/template` semantics one feature at a time:
//! printing, trimming, scoping, range forms, functions, errors, limits, and
//! a deterministic no-panic sweep over pseudo-random inputs.

use serde_json::json;

use super::tests::{check, parse_err, render_err, QWEN25};
use super::*;

#[test]
fn field_names_fall_back_to_case_insensitive_keys() {
    let data =
        json!({"role": "user", "Content": "exact", "content": "lower", "function": {"name": "f"}});
    check(
        "{{ .Role }} {{ .Content }} {{ .Function.Name }} {{ .function.name }}",
        data,
        "user exact f f",
    );
}

#[test]
fn printing_values() {
    check("[{{ .Missing }}]", json!({}), "[]");
    check("[{{ .Missing.Deeper }}]", json!({}), "[]");
    check(
        "{{ .B }} {{ .N }} {{ .I }}",
        json!({"B": false, "N": null, "I": -7}),
        "false  -7",
    );
    check(
        "{{ .L }}",
        json!({"L": [1, "x", {"k": "v"}]}),
        r#"[1,"x",{"k":"v"}]"#,
    );
    check("{{ .F }}", json!({"F": 0.5}), "0.5");
    check("{{ .F }}", json!({"F": 1e6}), "1e+06");
    check("{{ .F }}", json!({"F": 123456.0}), "123456");
    check("{{ .F }}", json!({"F": 1234567.0}), "1.234567e+06");
    check("{{ .F }}", json!({"F": 0.00001}), "1e-05");
    check("{{ .F }}", json!({"F": 0.0001}), "0.0001");
    check("{{ .F }}", json!({"F": 2.0}), "2");
    check(
        "{{ 1.5 }} {{ 3 }} {{ 0x1F }} {{ 'a' }} {{ -3 }}",
        json!(null),
        "1.5 3 31 97 -3",
    );
    check("{{ `raw\\n` }}{{ \"esc\\t\" }}", json!(null), "raw\\nesc\t");
    check("{{ true }}{{ . }}", json!("dot"), "truedot");
}

#[test]
fn trim_markers_and_comments() {
    check("a {{- 1 -}} \n\t b", json!(null), "a1b");
    check("a {{ 1 -}}\n\n b", json!(null), "a 1b");
    check("a \n{{- 1 }} b", json!(null), "a1 b");
    check("{{-3}}", json!(null), "-3");
    check("a {{/* c */}} b", json!(null), "a  b");
    check("a {{- /* c\nd */ -}} b", json!(null), "ab");
    check("x\n{{- /* only */ -}}\ny", json!(null), "xy");
}

#[test]
fn variables_and_scoping() {
    check(
        "{{ $x := 1 }}{{ if true }}{{ $x = 2 }}{{ end }}{{ $x }}",
        json!(null),
        "2",
    );
    check(
        "{{ $x := 1 }}{{ if true }}{{ $x := 2 }}{{ $x }}{{ end }}{{ $x }}",
        json!(null),
        "21",
    );
    check(
        "{{ $x := 0 }}{{ range .L }}{{ $x = . }}{{ end }}{{ $x }}",
        json!({"L": [1, 2, 3]}),
        "3",
    );
    check(
        "{{ with $m := .M }}{{ $m.Role }}{{ end }}",
        json!({"M": {"Role": "user"}}),
        "user",
    );
    check(
        "{{ range .L }}{{ $.Name }}{{ . }}{{ end }}",
        json!({"Name": "n", "L": [1, 2]}),
        "n1n2",
    );
    check(
        "{{ $x := .A }}{{ $x.B.C }}",
        json!({"A": {"B": {"C": "deep"}}}),
        "deep",
    );
    assert!(matches!(
        parse_err("{{ if true }}{{ $y := 1 }}{{ end }}{{ $y }}"),
        Error::UndefinedVariable { .. }
    ));
    assert!(matches!(
        parse_err("{{ $nope }}"),
        Error::UndefinedVariable { .. }
    ));
}

#[test]
fn compact_syntax_and_chains() {
    check("{{$x:=1}}{{$x}}{{$x = 2}}{{$x}}", json!(null), "12");
    assert!(matches!(
        parse_err("{{$x:=1}}{{$x=2}}"),
        Error::Syntax { .. }
    ));
    check(
        "{{ (index .L 1).Name }} {{ (index .L 0).Tags }} {{ with index .L 0 }}{{ .Name }}{{ end }}",
        json!({"L": [{"Name": "a", "Tags": ["t"]}, {"Name": "b"}]}),
        "b [\"t\"] a",
    );
    check("{{ .A.B.C }}", json!({"A": {"B": {"C": 3}}}), "3");
    check(
        "{{ if and .A (not .B) }}yes{{ end }}",
        json!({"A": 1}),
        "yes",
    );
}

#[test]
fn range_forms() {
    let data = json!({"L": ["a", "b"], "E": [], "M": {"b": 2, "a": 1}});
    check("{{ range .L }}{{ . }}{{ end }}", data.clone(), "ab");
    check(
        "{{ range $i, $v := .L }}{{ $i }}={{ $v }};{{ end }}",
        data.clone(),
        "0=a;1=b;",
    );
    check("{{ range $v := .L }}{{ $v }}{{ end }}", data.clone(), "ab");
    check(
        "{{ range $k, $v := .M }}{{ $k }}={{ $v }};{{ end }}",
        data.clone(),
        "a=1;b=2;",
    );
    check(
        "{{ range .E }}x{{ else }}empty{{ end }}",
        data.clone(),
        "empty",
    );
    check(
        "{{ range .Missing }}x{{ else }}none{{ end }}",
        data.clone(),
        "none",
    );
    check("{{ range 3 }}{{ . }}{{ end }}", data.clone(), "012");
    check(
        "{{ range .N }}{{ if eq . 3 }}{{ break }}{{ end }}{{ if eq . 1 }}{{ continue }}{{ end }}{{ . }}{{ end }}",
        json!({"N": [0, 1, 2, 3, 4]}),
        "02",
    );
    check(
        "{{ range .O }}{{ range . }}{{ if eq . 2 }}{{ break }}{{ end }}{{ . }}{{ end }};{{ end }}",
        json!({"O": [[1, 2, 3], [4]]}),
        "1;4;",
    );
    assert!(matches!(
        render_err("{{ range .S }}{{ end }}", json!({"S": "str"})),
        Error::Exec { .. }
    ));
}

#[test]
fn if_else_chains_and_with() {
    let t = "{{ if eq .R \"a\" }}A{{ else if eq .R \"b\" }}B{{ else }}C{{ end }}";
    check(t, json!({"R": "a"}), "A");
    check(t, json!({"R": "b"}), "B");
    check(t, json!({"R": "z"}), "C");
    check(
        "{{ with .A }}{{ with .B }}{{ . }}{{ end }}{{ end }}",
        json!({"A": {"B": "ab"}}),
        "ab",
    );
    let w = "{{ with .X }}x{{ else with .Y }}{{ . }}{{ else }}none{{ end }}";
    check(w, json!({"Y": "y"}), "y");
    check(w, json!({}), "none");
    check(w, json!({"X": 1}), "x");
    for falsy in [
        json!(false),
        json!(0),
        json!(0.0),
        json!(""),
        json!([]),
        json!({}),
        json!(null),
    ] {
        check(
            "{{ if .V }}t{{ else }}f{{ end }}",
            json!({ "V": falsy }),
            "f",
        );
    }
}

#[test]
fn define_template_and_block() {
    check(
        "{{ define \"T\" }}[{{ . }}]{{ end }}{{ template \"T\" .X }}",
        json!({"X": 5}),
        "[5]",
    );
    check(
        "{{ template \"T\" }}{{ define \"T\" }}none:{{ . }}{{ end }}",
        json!({"X": 5}),
        "none:",
    );
    check(
        "{{ block \"B\" . }}b{{ .X }}{{ end }}",
        json!({"X": 5}),
        "b5",
    );
    check(
        "{{ define \"item\" }}{{ .Role }}:{{ $.Content }} {{ end }}{{ range .M }}{{ template \"item\" . }}{{ end }}",
        json!({"M": [{"Role": "u", "Content": "1"}, {"Role": "a", "Content": "2"}]}),
        "u:1 a:2 ",
    );
    assert!(matches!(
        parse_err("{{ define \"a\" }}x{{ end }}{{ define \"a\" }}y{{ end }}"),
        Error::Syntax { .. }
    ));
    check(
        "{{ define \"a\" }}x{{ end }}{{ define \"a\" }} {{ end }}{{ template \"a\" }}",
        json!(null),
        "x",
    );
    assert!(matches!(
        render_err("{{ template \"nope\" }}", json!(null)),
        Error::NoSuchTemplate { .. }
    ));
}

#[test]
fn builtin_functions() {
    let data =
        json!({"L": [10, 20, 30], "M": {"k": "v"}, "N": [[1, 2], [3, 4]], "S": "hello", "E": ""});
    check(
        "{{ index .L 1 }} {{ index .M \"k\" }} {{ index .N 1 0 }} {{ index .M \"x\" }}|",
        data.clone(),
        "20 v 3 |",
    );
    check(
        "{{ len .L }} {{ len .S }} {{ len .M }} {{ len .Missing }}",
        data.clone(),
        "3 5 1 0",
    );
    check(
        "{{ slice .S 1 3 }} {{ slice .S 2 }} {{ slice .L 1 }} {{ len (slice .L 0 2) }}",
        data.clone(),
        "el llo [20,30] 2",
    );
    check(
        "{{ or .E \"default\" }} {{ and 1 0 2 }} {{ and 1 2 }} {{ or 0 \"\" }}|",
        data.clone(),
        "default 0 2 |",
    );
    check("{{ not .E }} {{ not .S }}", data.clone(), "true false");
    check(
        "{{ eq 1 2 3 1 }} {{ eq \"a\" \"b\" }} {{ ne 1 2 }} {{ eq .Missing \"x\" }} {{ eq 1 1.0 }}",
        data.clone(),
        "true false true false true",
    );
    check(
        "{{ lt 1 2 }} {{ le 2 2 }} {{ gt \"b\" \"a\" }} {{ ge 1.5 2 }}",
        data.clone(),
        "true true true false",
    );
    check(
        "{{ print \"a\" 1 2 \"b\" }}|{{ println 1 \"x\" }}|",
        data.clone(),
        "a1 2b|1 x\n|",
    );
    check(
        "{{ html \"<a href='x'>&\\\"\" }}",
        data.clone(),
        "&lt;a href=&#39;x&#39;&gt;&amp;&#34;",
    );
    check(
        "{{ js \"it's <b>=\\n\" }}",
        data.clone(),
        "it\\'s \\u003Cb\\u003E\\u003D\\u000A",
    );
    check(
        "{{ urlquery \"a b&c=d/é\" }}",
        data.clone(),
        "a+b%26c%3Dd%2F%C3%A9",
    );
    check(
        "{{ .S | printf \"%s!\" }} {{ len .L | printf \"%03d\" }}",
        data.clone(),
        "hello! 003",
    );
    assert!(matches!(
        render_err("{{ call .S }}", data.clone()),
        Error::UnsupportedFunction { .. }
    ));
    assert!(matches!(
        render_err("{{ index .L 5 }}", data.clone()),
        Error::Exec { .. }
    ));
    assert!(matches!(
        render_err("{{ lt true false }}", data.clone()),
        Error::Exec { .. }
    ));
    assert!(matches!(
        render_err("{{ eq .L .L }}", data.clone()),
        Error::Exec { .. }
    ));
    assert!(matches!(
        render_err("{{ not 1 2 }}", data),
        Error::Exec { .. }
    ));
}

#[test]
fn printf_verbs() {
    check(
        "{{ printf \"%s-%d-%v-%q-%.2f-%%\" \"a\" 3 1.5 \"q\" 3.14159 }}",
        json!(null),
        "a-3-1.5-\"q\"-3.14-%",
    );
    check("{{ printf \"%d %d\" 1 }}", json!(null), "1 %!d(MISSING)");
    check("{{ printf \"%d\" 1 2 }}", json!(null), "1%!(EXTRA int=2)");
    check("{{ printf \"%s\" 5 }}", json!(null), "%!s(int=5)");
    check(
        "{{ printf \"[%5s][%-5s][%x][%t][%e][%g]\" \"ab\" \"cd\" 255 true 1234.5678 0.000012 }}",
        json!(null),
        "[   ab][cd   ][ff][true][1.234568e+03][1.2e-05]",
    );
    check(
        "{{ printf \"%v %v\" .L .M }}",
        json!({"L": [1], "M": {"a": "b"}}),
        r#"[1] {"a":"b"}"#,
    );
}

#[test]
fn ollama_functions() {
    let date = Template::parse("{{ currentDate }}")
        .and_then(|t| t.render(&json!(null)))
        .expect("renders");
    let b = date.as_bytes();
    assert_eq!(b.len(), 10, "{date}");
    assert!(b[4] == b'-' && b[7] == b'-', "{date}");
    assert_eq!(super::funcs::civil_from_days(0), (1970, 1, 1));
    assert_eq!(super::funcs::civil_from_days(20_417), (2025, 11, 25));
    check(
        "{{ range $k, $v := .P }}{{ $k }}: {{ toTypeScriptType $v }}; {{ end }}",
        json!({"P": {"a": {"type": "string"}, "b": {"type": ["integer", "null"]}, "c": {"anyOf": [{"type": "array"}, {"type": "object"}]}, "d": {}}}),
        "a: string; b: number | null; c: any[] | Record<string, any>; d: any; ",
    );
}

#[test]
fn parse_errors() {
    assert!(matches!(
        parse_err("{{ if .X }}never closed"),
        Error::Syntax { .. }
    ));
    assert!(matches!(
        parse_err("{{ foo }}"),
        Error::UndefinedFunction { .. }
    ));
    assert!(matches!(parse_err("{{ end }}"), Error::Syntax { .. }));
    assert!(matches!(parse_err("{{ else }}"), Error::Syntax { .. }));
    assert!(matches!(parse_err("{{ .X "), Error::Syntax { .. }));
    assert!(matches!(parse_err("{{ break }}"), Error::Syntax { .. }));
    assert!(matches!(
        parse_err("{{ range .L }}{{ else }}{{ break }}{{ end }}"),
        Error::Syntax { .. }
    ));
    assert!(matches!(parse_err("{{ (1 }}"), Error::Syntax { .. }));
    assert!(matches!(
        parse_err("{{ \"unterminated }}"),
        Error::Syntax { .. }
    ));
    assert!(matches!(parse_err("{{ /* bad */ }}"), Error::Syntax { .. }));
    assert!(matches!(parse_err("{{ .X | 1 }}"), Error::Syntax { .. }));
    assert!(matches!(parse_err("{{ 3x }}"), Error::Syntax { .. }));
    // Go checks assignments only when executing.
    assert!(matches!(
        render_err("{{ $x = 1 }}", json!(null)),
        Error::Exec { .. }
    ));
    let e = parse_err("line1\nline2\n{{ if }}");
    assert_eq!(
        e,
        Error::Syntax {
            line: 3,
            message: "missing value for if".into()
        }
    );
    assert_eq!(e.to_string(), "template: :3: missing value for if");
    assert_eq!(
        parse_err("\n{{ nope 1 }}").to_string(),
        "template: :2: function \"nope\" not defined"
    );
}

#[test]
fn render_errors() {
    assert!(matches!(
        render_err("{{ .S.Field }}", json!({"S": "x"})),
        Error::Exec { .. }
    ));
    assert!(matches!(
        render_err("{{ nil }}", json!(null)),
        Error::Exec { .. }
    ));
    assert!(matches!(
        render_err("{{ \"x\" | .S }}", json!({"S": {}})),
        Error::Exec { .. }
    ));
    let e = render_err("\n\n{{ index .L 9 }}", json!({"L": []}));
    assert!(
        e.to_string()
            .starts_with("template: :3: executing: error calling index"),
        "{e}"
    );
}

#[test]
fn uses_field_detection() {
    let t = Template::parse(QWEN25).expect("parses");
    for f in [
        "Tools",
        "Messages",
        "System",
        "Prompt",
        "Response",
        "Function",
        "Arguments",
        "Role",
    ] {
        assert!(t.uses_field(f), "{f}");
    }
    assert!(!t.uses_field("Suffix"));
    let t = Template::parse("{{ define \"x\" }}{{ $.Suffix }}{{ end }}{{ (index .A 0).Name }}")
        .expect("parses");
    assert!(t.uses_field("Suffix") && t.uses_field("Name") && !t.uses_field("A0"));
}

#[test]
fn limits_reject_hostile_templates() {
    let deep_ok = format!(
        "{}x{}",
        "{{ if true }}".repeat(MAX_PARSE_DEPTH),
        "{{ end }}".repeat(MAX_PARSE_DEPTH)
    );
    let deep_bad = format!(
        "{}x{}",
        "{{ if true }}".repeat(MAX_PARSE_DEPTH + 1),
        "{{ end }}".repeat(MAX_PARSE_DEPTH + 1)
    );
    let parens = format!(
        "{{{{ {}1{} }}}}",
        "(".repeat(MAX_PARSE_DEPTH + 1),
        ")".repeat(MAX_PARSE_DEPTH + 1)
    );
    // Run on a thread with a small stack, as a server worker might.
    std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            check(&deep_ok, json!(null), "x");
            assert!(matches!(parse_err(&deep_bad), Error::NestingTooDeep { .. }));
            assert!(matches!(parse_err(&parens), Error::NestingTooDeep { .. }));
            let rec = "{{ define \"r\" }}{{ if true }}{{ template \"r\" . }}{{ end }}{{ end }}{{ template \"r\" . }}";
            assert!(matches!(render_err(rec, json!(null)), Error::TemplateDepth { .. }));
            let nested_rec = format!(
                "{{{{ define \"r\" }}}}{}{{{{ template \"r\" . }}}}{}{{{{ end }}}}{{{{ template \"r\" . }}}}",
                "{{ if true }}".repeat(MAX_PARSE_DEPTH - 1),
                "{{ end }}".repeat(MAX_PARSE_DEPTH - 1)
            );
            assert!(matches!(render_err(&nested_rec, json!(null)), Error::Exec { .. }));
        })
        .expect("spawn")
        .join()
        .expect("no stack overflow");
    let doubling = "{{ $x := \"ab\" }}{{ range 64 }}{{ $x = printf \"%s%s\" $x $x }}{{ end }}";
    assert!(matches!(
        render_err(doubling, json!(null)),
        Error::Exec { .. }
    ));
    assert!(matches!(
        render_err("{{ range 1000000000 }}{{ . }}{{ end }}", json!(null)),
        Error::Exec { .. }
    ));
}

#[test]
fn pseudo_random_inputs_never_panic() {
    const PIECES: &[&str] = &[
        "{{",
        "}}",
        "{{-",
        "-}}",
        " ",
        "\n",
        ".",
        ".Messages",
        ".Role",
        "$",
        "$x",
        ":=",
        "=",
        "|",
        "(",
        ")",
        "if",
        "else",
        "end",
        "range",
        "with",
        "define",
        "template",
        "block",
        "break",
        "continue",
        "\"a\"",
        "`r`",
        "'c'",
        "1",
        "-2",
        "3.5",
        "0x",
        "eq",
        "len",
        "slice",
        "index",
        "printf",
        "json",
        "and",
        "or",
        "not",
        "nil",
        "true",
        "/*",
        "*/",
        ",",
        "$i",
        "é",
        "\\",
        "\"",
        "%d",
        "lt",
        "print",
        "{{ range $i, $v := .Messages }}",
        "{{ end }}",
        "{{ if .Role }}",
        "{{ else }}",
        "{{ . }}",
        "{{ $x := 1 }}",
    ];
    let data = json!({"Messages": [{"Role": "user", "Content": "hi"}, {"Role": "assistant"}], "Tools": [1, "two"], "x": {"y": null}});
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    let mut parsed = 0;
    for round in 0..600 {
        let mut src = String::new();
        let n = 1 + next() % 24;
        for _ in 0..n {
            if round % 3 == 0 && next() % 4 == 0 {
                // Raw bytes, made valid UTF-8 lossily.
                let bytes: Vec<u8> = (0..1 + next() % 4).map(|_| (next() % 256) as u8).collect();
                src.push_str(&String::from_utf8_lossy(&bytes));
            } else {
                src.push_str(PIECES[next() % PIECES.len()]);
            }
        }
        if let Ok(t) = Template::parse(&src) {
            parsed += 1;
            let _ = t.render(&data);
            let _ = t.render(&json!(null));
        }
    }
    assert!(parsed > 0, "some random templates should parse");
}
