//! GGUF parsing: real files, hostile headers and limits.
use super::*;
use serde_json::json;

/// Builds synthetic GGUF bytes field by field.
#[derive(Default)]
struct B(Vec<u8>);

impl B {
    fn header(version: u32, tensors: u64, kvs: u64) -> B {
        let mut b = B(b"GGUF".to_vec());
        b.u32(version).u64(tensors).u64(kvs);
        b
    }
    /// A version 3 file with one KV whose key and type are written.
    fn kv1(key: &str, ty: u32) -> B {
        let mut b = B::header(3, 0, 1);
        b.str(key).u32(ty);
        b
    }
    fn u32(&mut self, v: u32) -> &mut B {
        self.raw(&v.to_le_bytes())
    }
    fn u64(&mut self, v: u64) -> &mut B {
        self.raw(&v.to_le_bytes())
    }
    fn raw(&mut self, bytes: &[u8]) -> &mut B {
        self.0.extend_from_slice(bytes);
        self
    }
    fn str(&mut self, s: &str) -> &mut B {
        self.u64(s.len() as u64).raw(s.as_bytes())
    }
    fn kv(&mut self, k: &str, ty: u32, payload: &[u8]) -> &mut B {
        self.str(k).u32(ty).raw(payload)
    }
    fn kv_str(&mut self, k: &str, v: &str) -> &mut B {
        self.str(k).u32(T_STRING).str(v)
    }
    fn tensor(&mut self, name: &str, shape: &[u64], ty: u32, off: u64) -> &mut B {
        self.str(name).u32(shape.len() as u32);
        for &d in shape {
            self.u64(d);
        }
        self.u32(ty).u64(off)
    }
    fn v(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.0)
    }
}

const N_TOKENS: u64 = 100;

/// A small but complete file: every scalar type, a long string array, a
/// short int array, a nested array and two tensors.
fn sample() -> Vec<u8> {
    let mut b = B::header(3, 2, 16);
    b.kv_str("general.architecture", "llama");
    b.kv_str("general.name", "Tiny");
    b.kv_str("general.type", "model");
    b.kv("general.file_type", T_U32, &15u32.to_le_bytes());
    b.kv("llama.context_length", T_U32, &2048u32.to_le_bytes());
    b.kv("llama.embedding_length", T_U64, &64u64.to_le_bytes());
    b.kv_str("tokenizer.chat_template", "{{ messages }}");
    b.kv("tokenizer.ggml.tokens", T_ARRAY, &[]);
    b.u32(T_STRING).u64(N_TOKENS);
    for i in 0..N_TOKENS {
        b.str(&format!("tok{i}"));
    }
    b.kv("llama.rope.sections", T_ARRAY, &[]);
    b.u32(T_I32).u64(3).u32(1).u32(2).u32(u32::MAX);
    b.kv("nested", T_ARRAY, &[]).u32(T_ARRAY).u64(2);
    b.u32(T_U8).u64(2).raw(&[1, 2]).u32(T_U8).u64(0);
    b.kv("f32", T_F32, &1e-6f32.to_le_bytes());
    b.kv("f64", T_F64, &0.5f64.to_le_bytes());
    b.kv("flag", T_BOOL, &[1]);
    b.kv("i8", T_I8, &[0xff]);
    b.kv("u16", T_U16, &7u16.to_le_bytes());
    b.kv("i64", T_I64, &(-5i64).to_le_bytes());
    b.tensor("token_embd.weight", &[64, 100], 12, 0);
    b.tensor("output_norm.weight", &[64], 0, 4096);
    b.v()
}

fn array<'a>(g: &'a Gguf, key: &str) -> &'a ArrayValue {
    g.get(key).and_then(Value::as_array).unwrap()
}

#[test]
fn parses_sample() {
    let g = Gguf::parse(&sample(), false).unwrap();
    assert_eq!((g.version, g.kv.len()), (3, 16));
    assert_eq!(g.architecture(), Some("llama"));
    assert_eq!(g.general_type(), Some("model"));
    assert_eq!(g.file_type(), Some(15));
    assert_eq!(g.context_length(), Some(2048));
    assert_eq!(g.embedding_length(), Some(64));
    assert_eq!(g.chat_template(), Some("{{ messages }}"));
    assert_eq!(g.parameter_count(), 64 * 100 + 64);
    assert_eq!(g.get("i8"), Some(&Value::I8(-1)));
    assert_eq!(g.get("u16"), Some(&Value::U16(7)));
    assert_eq!(g.get("i64"), Some(&Value::I64(-5)));
    assert_eq!(g.get("flag"), Some(&Value::Bool(true)));
    assert_eq!(g.get("missing"), None);
    let toks = array(&g, "tokenizer.ggml.tokens");
    assert_eq!(
        (toks.elem_type, toks.len, &toks.values),
        (T_STRING, N_TOKENS, &None)
    );
    let want = vec![Value::I32(1), Value::I32(2), Value::I32(-1)];
    assert_eq!(array(&g, "llama.rope.sections").values, Some(want));
    let t = &g.tensors[0];
    assert_eq!(
        (t.name.as_str(), &t.shape[..], t.ggml_type),
        ("token_embd.weight", &[64, 100][..], 12)
    );
    assert_eq!(g.tensors[1].offset, 4096);

    let kept = Gguf::parse(&sample(), true).unwrap();
    let values = array(&kept, "tokenizer.ggml.tokens")
        .values
        .clone()
        .unwrap();
    assert_eq!(values.len() as u64, N_TOKENS);
    assert_eq!(values[99], Value::String("tok99".into()));
}

#[test]
fn model_info_matches_ollama_shape() {
    let g = Gguf::parse(&sample(), false).unwrap();
    let info = g.model_info(false);
    assert!(!info.contains_key("general.name"));
    assert!(!info.contains_key("tokenizer.chat_template"));
    let keys: Vec<&String> = info.keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "keys are sorted like Go's encoder");
    assert_eq!(info["tokenizer.ggml.tokens"], json!([]));
    assert_eq!(info["llama.rope.sections"], json!([1, 2, -1]));
    assert_eq!(info["nested"], json!([[1, 2], []]));
    assert_eq!(info["general.parameter_count"], json!(6464));
    assert_eq!(info["llama.context_length"], json!(2048));
    assert_eq!(info["f32"], json!(1e-6));
    assert_eq!(info["f64"], json!(0.5));
    assert_eq!(info["flag"], json!(true));
    // Verbose needs the arrays kept; without them it still gives [].
    assert_eq!(g.model_info(true)["tokenizer.ggml.tokens"], json!([]));
    let kept = Gguf::parse(&sample(), true).unwrap().model_info(true);
    let toks = kept["tokenizer.ggml.tokens"].as_array().unwrap();
    assert_eq!(toks.len() as u64, N_TOKENS);
    assert_eq!(toks[0], json!("tok0"));
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample();
    for n in 0..bytes.len() {
        for keep in [false, true] {
            match Gguf::parse(&bytes[..n], keep) {
                Err(Error::Truncated { .. }) => {}
                other => panic!("prefix {n}: expected Truncated, got {other:?}"),
            }
        }
    }
    assert!(Gguf::parse(&bytes, false).is_ok());
}

#[test]
fn huge_counts_do_not_allocate() {
    let huge = 1u64 << 60;
    let cases = [
        B::header(3, 0, huge).v(),
        B::header(3, huge, 0).v(),
        B::header(3, u64::MAX, u64::MAX).v(),
        B::kv1("a", T_ARRAY).u32(T_U8).u64(huge).v(),
        B::kv1("a", T_ARRAY).u32(T_ARRAY).u64(huge).v(),
        B::kv1("a", T_ARRAY).u32(T_STRING).u64(3).u64(huge).v(),
        B::kv1("s", T_STRING).u64(MAX_STRING_LEN).v(),
    ];
    for (i, bytes) in cases.iter().enumerate() {
        for keep in [false, true] {
            let err = Gguf::parse(bytes, keep).unwrap_err();
            assert!(matches!(err, Error::Truncated { .. }), "case {i}: {err:?}");
        }
    }
    let too_large = [
        B::header(3, 0, 1).u64(huge).raw(&[0; 16]).v(),
        B::kv1("s", T_STRING).u64(huge).v(),
        B::header(3, 1, 0).str("t").u32(9).raw(&[0; 32]).v(),
    ];
    for bytes in too_large {
        let err = Gguf::parse(&bytes, false).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    }
}

#[test]
fn bad_magic_version_and_type() {
    let parse = |b: &[u8]| Gguf::parse(b, false);
    assert!(matches!(parse(b"GGML\x03\0\0\0"), Err(Error::NotGguf)));
    assert!(matches!(parse(b"x"), Err(Error::NotGguf)));
    assert!(matches!(parse(b"G"), Err(Error::Truncated { .. })));
    for v in [0, 1, 4, 3 << 24] {
        let res = parse(&B::header(v, 0, 0).v());
        assert!(matches!(res, Err(Error::UnsupportedVersion(x)) if x == v));
    }
    assert!(parse(&B::header(2, 0, 0).v()).is_ok());
    let bad = B::kv1("k", 13).u32(0).v();
    assert!(matches!(parse(&bad), Err(Error::BadType(13))));
    let bad_elem = B::kv1("k", T_ARRAY).u32(99).u64(0).v();
    assert!(matches!(parse(&bad_elem), Err(Error::BadType(99))));
}

#[test]
fn utf8_policy() {
    let mut bad_key = B::header(3, 0, 1).str("\u{1}\u{2}").raw(&[0; 5]).v();
    bad_key[32] = 0xff;
    let err = Gguf::parse(&bad_key, false).unwrap_err();
    let Error::BadUtf8 { what, offset } = err else {
        panic!("{err:?}")
    };
    assert_eq!((what, offset), ("key", 24));
    let bad_value = B::kv1("k", T_STRING).u64(2).raw(b"a\xff").v();
    let g = Gguf::parse(&bad_value, false).unwrap();
    assert_eq!(g.get("k").and_then(Value::as_str), Some("a\u{fffd}"));
}

/// Wraps a u8 scalar in `depth` levels of one-element arrays.
fn nested(depth: u32) -> Vec<u8> {
    let mut b = B::kv1("deep", T_ARRAY);
    for _ in 1..depth {
        b.u32(T_ARRAY).u64(1);
    }
    b.u32(T_U8).u64(1).raw(&[42]).v()
}

#[test]
fn nesting_is_bounded() {
    for keep in [false, true] {
        let g = Gguf::parse(&nested(MAX_DEPTH), keep).unwrap();
        assert_eq!(array(&g, "deep").len, 1);
        for depth in [MAX_DEPTH + 1, 1000] {
            let err = Gguf::parse(&nested(depth), keep).unwrap_err();
            assert!(matches!(
                err,
                Error::TooLarge {
                    what: "array nesting depth",
                    ..
                }
            ));
        }
    }
    // Long arrays of arrays are skipped, and stepped over correctly.
    let mut b = B::header(3, 0, 2);
    b.kv("wide", T_ARRAY, &[]).u32(T_ARRAY).u64(ALWAYS_KEEP + 1);
    for _ in 0..=ALWAYS_KEEP {
        b.u32(T_U16).u64(1).raw(&[0, 0]);
    }
    b.kv("after", T_U8, &[9]);
    let g = Gguf::parse(&b.v(), false).unwrap();
    assert_eq!(array(&g, "wide").values, None);
    assert_eq!(g.get("after"), Some(&Value::U8(9)));
}

#[test]
fn mutations_never_panic() {
    let base = sample();
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        // Knuth's MMIX LCG; the high bits are the usable ones.
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 33) as usize
    };
    for _ in 0..3000 {
        let mut bytes = base.clone();
        for _ in 0..1 + next() % 8 {
            let i = next() % bytes.len();
            bytes[i] = [0xff, 0, next() as u8][next() % 3];
        }
        let cut = if next() % 4 == 0 {
            next() % bytes.len()
        } else {
            bytes.len()
        };
        for keep in [false, true] {
            if let Ok(g) = Gguf::parse(&bytes[..cut], keep) {
                let _ = (g.model_info(true), g.parameter_count(), g.context_length());
            }
        }
    }
}

#[test]
fn human_parameters_matches_ollama() {
    // Ollama's own format_test.go cases, then real models.
    let cases = "0:0 999:999 1000:1K 1001:1K 1000000:1M 125000000:125M 500500000:500.50M \
        500550000:500.55M 1000000000:1B 2800000000:2.8B 2850000000:2.9B 1000000000000:1000B \
        268098176:268.10M 8030261248:8.0B 1235814400:1.2B";
    for (n, want) in cases.split(' ').filter_map(|c| c.split_once(':')) {
        let n: u64 = n.parse().unwrap();
        assert_eq!(human_parameters(n), want, "{n}");
    }
}

#[test]
fn file_type_names_and_magic() {
    let known = [
        (0, "F32"),
        (3, "Q4_1"),
        (4, "MXFP4"),
        (15, "Q4_K_M"),
        (32, "BF16"),
        (38, "MXFP4"),
    ];
    for (ft, name) in known {
        assert_eq!(file_type_name(ft), name);
    }
    for unknown in [5, 6, 33, 34, 35, 39, 1024, u32::MAX] {
        assert_eq!(file_type_name(unknown), "unknown");
    }
    assert!(is_gguf(b"GGUF\x03"));
    assert!(!is_gguf(b"GGU"));
}

#[test]
fn open_maps_a_file() {
    let dir = std::env::temp_dir().join(format!("hearth-gguf-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("sample.gguf");
    std::fs::write(&path, sample()).unwrap();
    assert_eq!(
        Gguf::open(&path, false).unwrap(),
        Gguf::parse(&sample(), false).unwrap()
    );
    let empty = dir.join("empty.gguf");
    std::fs::write(&empty, b"").unwrap();
    assert!(Gguf::open(&empty, false).is_err());
    assert!(matches!(
        Gguf::open(&dir.join("nope"), false),
        Err(Error::Io(_))
    ));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Reads the real test models (a missing one fails the test).
#[test]
fn real_models() {
    // (file, arch, file type, params, human, context, embedding, template)
    let cases = [
        (
            "gemma3-270m-q4_k_m.gguf",
            "gemma3",
            "Q4_K_M",
            268_098_176,
            "268.10M",
            32768,
            640,
            false,
        ),
        (
            "smollm2-135m-instruct-q4_1.gguf",
            "llama",
            "Q4_1",
            134_515_008,
            "134.52M",
            8192,
            576,
            true,
        ),
    ];
    for (file, arch, ft, params, human, ctx, embd, template) in cases {
        let path = crate::test_models::path(file);
        let start = std::time::Instant::now();
        let g = Gguf::open(&path, false).unwrap();
        let elapsed = start.elapsed();
        let pc = g.parameter_count();
        eprintln!(
            "{file}: arch={:?} type={:?} params={pc} ({}) ctx={:?} embd={:?} template={} in {elapsed:?}",
            g.architecture(),
            g.file_type().map(file_type_name),
            human_parameters(pc),
            g.context_length(),
            g.embedding_length(),
            g.chat_template().is_some(),
        );
        assert_eq!(g.architecture(), Some(arch));
        assert_eq!(g.file_type().map(file_type_name), Some(ft));
        assert_eq!((pc, human_parameters(pc).as_str()), (params, human));
        assert_eq!(g.context_length(), Some(ctx));
        assert_eq!(g.embedding_length(), Some(embd));
        assert_eq!(g.chat_template().is_some(), template);
        assert!(elapsed < std::time::Duration::from_secs(1), "{elapsed:?}");
        let toks = array(&g, "tokenizer.ggml.tokens");
        assert!(toks.values.is_none() && toks.len > 10_000);
        assert_eq!(g.model_info(false)["tokenizer.ggml.tokens"], json!([]));
        let full = Gguf::open(&path, true).unwrap().model_info(true);
        let n = full["tokenizer.ggml.tokens"].as_array().unwrap().len();
        assert_eq!(n as u64, toks.len);
    }
}

#[test]
fn many_small_arrays_are_capped_in_total() {
    // 70,000 arrays of 64 one-byte elements: 4.5 million kept elements from
    // a 7 MB header, over the total limit.
    let arrays: u64 = 70_000;
    let mut b = B::header(3, 0, arrays);
    for i in 0..arrays {
        b.str(&format!("k{i}"))
            .u32(T_ARRAY)
            .u32(T_U8)
            .u64(ALWAYS_KEEP);
        b.raw(&[1u8; ALWAYS_KEEP as usize]);
    }
    let bytes = b.v();
    assert!(bytes.len() < 8 << 20);
    match Gguf::parse(&bytes, false) {
        Err(Error::TooLarge { what, limit, .. }) => {
            assert_eq!(
                (what, limit),
                ("array elements in the header", MAX_TOTAL_KEPT)
            );
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|g| g.kv.len())),
    }
}
