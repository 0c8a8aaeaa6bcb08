//! Images on generate, chat and `/v1/chat/completions` through a vision
//! projector. No small real vision model is available offline, so the test
//! writes a tiny random-weight Gemma 3 projector (a one-layer SigLIP tower
//! of width 32 on 64x64 images, 16 image tokens, projected to Gemma 3
//! 270M's width of 640) that llama.cpp's clip loader accepts, and pairs it
//! with the real Gemma 3 270M. Answers are noise; the tests check
//! behaviour: statuses, token counts, and that the image reaches the model.
//! A tiny multimodal Gemma 3 checkpoint in the Safetensors layout checks
//! the converted projector the same way.

use serde_json::{json, Value};

use crate::harness::{inference_lock, sha256_hex, Server};

/// Image tokens the test projector produces per image: (64/8 / 2)^2.
const IMAGE_TOKENS: u64 = 16;
/// Gemma 3 270M's embedding width, which the projector must output.
const TEXT_WIDTH: u64 = 640;

/// A GGUF metadata value, only the kinds the projector needs.
enum Meta {
    U32(u32),
    F32(f32),
    Bool(bool),
    Str(&'static str),
    F32s(Vec<f32>),
}

/// Writes a GGUF v3 file with F32 tensors (dims in ggml order).
fn gguf(kv: &[(&str, Meta)], tensors: &[(String, Vec<u64>, Vec<f32>)]) -> Vec<u8> {
    fn s(out: &mut Vec<u8>, v: &str) {
        out.extend((v.len() as u64).to_le_bytes());
        out.extend(v.as_bytes());
    }
    fn pad(out: &mut Vec<u8>) {
        while !out.len().is_multiple_of(32) {
            out.push(0);
        }
    }
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((kv.len() as u64).to_le_bytes());
    for (k, v) in kv {
        s(&mut out, k);
        match v {
            Meta::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            Meta::Bool(x) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*x));
            }
            Meta::Str(x) => {
                out.extend(8u32.to_le_bytes());
                s(&mut out, x);
            }
            Meta::F32s(xs) => {
                out.extend(9u32.to_le_bytes());
                out.extend(6u32.to_le_bytes());
                out.extend((xs.len() as u64).to_le_bytes());
                xs.iter().for_each(|x| out.extend(x.to_le_bytes()));
            }
        }
    }
    let mut offset = 0u64;
    for (name, dims, data) in tensors {
        assert_eq!(dims.iter().product::<u64>(), data.len() as u64, "{name}");
        s(&mut out, name);
        out.extend((dims.len() as u32).to_le_bytes());
        dims.iter().for_each(|d| out.extend(d.to_le_bytes()));
        out.extend(0u32.to_le_bytes()); // GGML_TYPE_F32
        out.extend(offset.to_le_bytes());
        offset = (offset + data.len() as u64 * 4).div_ceil(32) * 32;
    }
    pad(&mut out);
    for (_, _, data) in tensors {
        data.iter().for_each(|x| out.extend(x.to_le_bytes()));
        pad(&mut out);
    }
    out
}

/// A Gemma 3 projector with random weights: SigLIP patch embedding, one
/// transformer block, post-norm, then Gemma 3's soft-embedding norm and
/// input projection. Keys and tensor names are llama.cpp's `clip.cpp`.
fn tiny_projector() -> Vec<u8> {
    projector_for(TEXT_WIDTH)
}

/// The test projector with its output width set to `text_width`.
fn projector_for(text_width: u64) -> Vec<u8> {
    let (width, ff, patch, image) = (32u64, 64u64, 8u64, 64u64);
    let patches = (image / patch) * (image / patch);
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random = |n: u64| -> Vec<f32> {
        (0..n)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                ((seed >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2
            })
            .collect()
    };
    let ones = |n: u64| vec![1.0f32; n as usize];
    let zeros = |n: u64| vec![0.0f32; n as usize];
    let mut t: Vec<(String, Vec<u64>, Vec<f32>)> = vec![
        (
            "v.patch_embd.weight".into(),
            vec![patch, patch, 3, width],
            random(patch * patch * 3 * width),
        ),
        ("v.patch_embd.bias".into(), vec![width], zeros(width)),
        (
            "v.position_embd.weight".into(),
            vec![width, patches],
            random(width * patches),
        ),
    ];
    for name in ["attn_q", "attn_k", "attn_v", "attn_out"] {
        t.push((
            format!("v.blk.0.{name}.weight"),
            vec![width, width],
            random(width * width),
        ));
        t.push((format!("v.blk.0.{name}.bias"), vec![width], zeros(width)));
    }
    for name in ["ln1", "ln2"] {
        t.push((format!("v.blk.0.{name}.weight"), vec![width], ones(width)));
        t.push((format!("v.blk.0.{name}.bias"), vec![width], zeros(width)));
    }
    t.push((
        "v.blk.0.ffn_up.weight".into(),
        vec![width, ff],
        random(width * ff),
    ));
    t.push(("v.blk.0.ffn_up.bias".into(), vec![ff], zeros(ff)));
    t.push((
        "v.blk.0.ffn_down.weight".into(),
        vec![ff, width],
        random(ff * width),
    ));
    t.push(("v.blk.0.ffn_down.bias".into(), vec![width], zeros(width)));
    t.push(("v.post_ln.weight".into(), vec![width], ones(width)));
    t.push(("v.post_ln.bias".into(), vec![width], zeros(width)));
    t.push(("mm.soft_emb_norm.weight".into(), vec![width], ones(width)));
    t.push((
        "mm.input_projection.weight".into(),
        vec![text_width, width],
        random(text_width * width),
    ));
    let kv = [
        ("general.architecture", Meta::Str("clip")),
        ("general.name", Meta::Str("tiny random gemma3 projector")),
        ("clip.projector_type", Meta::Str("gemma3")),
        ("clip.has_vision_encoder", Meta::Bool(true)),
        ("clip.use_gelu", Meta::Bool(true)),
        ("clip.vision.embedding_length", Meta::U32(width as u32)),
        ("clip.vision.feed_forward_length", Meta::U32(ff as u32)),
        ("clip.vision.block_count", Meta::U32(1)),
        ("clip.vision.projection_dim", Meta::U32(text_width as u32)),
        ("clip.vision.attention.head_count", Meta::U32(2)),
        ("clip.vision.attention.layer_norm_epsilon", Meta::F32(1e-6)),
        ("clip.vision.image_size", Meta::U32(image as u32)),
        ("clip.vision.patch_size", Meta::U32(patch as u32)),
        ("clip.vision.projector.scale_factor", Meta::U32(2)),
        ("clip.vision.image_mean", Meta::F32s(vec![0.5; 3])),
        ("clip.vision.image_std", Meta::F32s(vec![0.5; 3])),
    ];
    gguf(&kv, &t)
}

/// An RGB PNG (stored, uncompressed deflate), pixel colour from `f(x, y)`.
fn png(w: u32, h: u32, f: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xffff_ffffu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 == 1 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend(data);
        out.extend(&body);
        out.extend(crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // filter: none
        for x in 0..w {
            raw.extend(f(x, y));
        }
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65521;
        b = (b + a) % 65521;
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65535).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend(len.to_le_bytes());
        z.extend((!len).to_le_bytes());
        z.extend(*block);
    }
    z.extend(((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &z);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = c.len();
        let v = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(A[(v >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn gradient() -> String {
    base64(&png(24, 24, |x, y| [(x * 10) as u8, (y * 10) as u8, 128]))
}

fn checkerboard() -> String {
    base64(&png(24, 24, |x, y| {
        if (x / 4 + y / 4) % 2 == 0 {
            [255, 255, 255]
        } else {
            [0, 0, 0]
        }
    }))
}

/// A server with `vision:tiny` (Gemma 3 270M plus the test projector) and
/// the plain `gemma3:270m`.
fn vision_server() -> Server {
    let s = Server::with_gemma(&[]);
    create_with_projector(&s, "vision:tiny", &tiny_projector());
    s
}

/// Creates `name` from Gemma 3 270M and the given projector GGUF.
fn create_with_projector(s: &Server, name: &str, projector: &[u8]) {
    let (status, body, digest) = s.upload_bytes(projector);
    assert!(status == 201 || status == 200, "{status}: {body}");
    let weights = s.link_blob(&crate::harness::gemma());
    let (status, lines) = s.stream(
        "/api/create",
        json!({
            "model": name,
            "files": {"model.gguf": weights, "mmproj.gguf": digest},
            "template": crate::harness::GEMMA_TEMPLATE,
            "parameters": {"stop": ["<end_of_turn>"]},
        }),
    );
    assert_eq!(status, 200);
    assert_eq!(
        lines.last().and_then(|l| l["status"].as_str()),
        Some("success"),
        "{lines:?}"
    );
}

fn count(v: &Value) -> u64 {
    v["prompt_eval_count"].as_u64().unwrap_or(0)
}

#[test]
fn projector_layer_and_show() {
    let _lock = inference_lock();
    let s = vision_server();
    let (status, show) = s.post("/api/show", json!({"model": "vision:tiny"}));
    assert_eq!(status, 200, "{show}");
    let caps = show["capabilities"].as_array().expect("capabilities");
    assert!(caps.contains(&json!("vision")), "{caps:?}");
    assert_eq!(show["projector_info"]["clip.projector_type"], "gemma3");
    assert!(
        show["modelfile"]
            .as_str()
            .is_some_and(|m| m.matches("\nFROM ").count() == 2),
        "{}",
        show["modelfile"]
    );
    let (_, plain) = s.post("/api/show", json!({"model": "gemma3:270m"}));
    assert!(!plain["capabilities"]
        .as_array()
        .is_some_and(|c| c.contains(&json!("vision"))));
    assert!(plain.get("projector_info").is_none());
    // The projector blob is stored under its digest.
    let digest = sha256_hex(&tiny_projector());
    assert!(s.models.join(format!("blobs/sha256-{digest}")).exists());
}

#[test]
fn images_reach_the_model() {
    let _lock = inference_lock();
    let s = vision_server();
    let opts = json!({"num_predict": 4, "temperature": 0});

    // Text only first, on a fresh slot, for the baseline count.
    let (status, text_only) = s.post(
        "/api/generate",
        json!({"model": "vision:tiny", "prompt": "What is this?", "stream": false, "options": opts}),
    );
    assert_eq!(status, 200, "{text_only}");
    let base = count(&text_only);
    assert!(base > 0, "{text_only}");

    let ask = |image: &str| {
        s.post(
            "/api/generate",
            json!({"model": "vision:tiny", "prompt": "What is this?", "images": [image],
                   "stream": false, "logprobs": true, "top_logprobs": 5, "options": opts}),
        )
    };
    let (status, a) = ask(&gradient());
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["done"], true);
    assert!(a["response"].is_string());
    assert!(
        count(&a) >= base + IMAGE_TOKENS,
        "image tokens counted: {} vs {base}",
        count(&a)
    );
    let (status, b) = ask(&checkerboard());
    assert_eq!(status, 200, "{b}");
    assert_eq!(count(&a), count(&b), "same prompt shape, same count");
    assert_ne!(
        a["logprobs"][0]["top_logprobs"], b["logprobs"][0]["top_logprobs"],
        "different images give different first-token distributions"
    );
    // The same image again gives the same distribution: nothing stale is
    // reused from the slot's cache.
    let (status, a2) = ask(&gradient());
    assert_eq!(status, 200, "{a2}");
    assert_eq!(count(&a2), count(&a));
    assert_eq!(
        a["logprobs"][0]["top_logprobs"],
        a2["logprobs"][0]["top_logprobs"]
    );

    // Chat, streamed, with an `[img]` placeholder and two images.
    let (status, lines) = s.stream(
        "/api/chat",
        json!({"model": "vision:tiny", "options": opts, "messages": [
            {"role": "user", "content": "Compare [img] with the other one.", "images": [gradient(), checkerboard()]}
        ]}),
    );
    assert_eq!(status, 200, "{lines:?}");
    let last = lines.last().expect("final chunk");
    assert_eq!(last["done"], true, "{lines:?}");
    assert!(count(last) >= 2 * IMAGE_TOKENS, "{last}");

    // OpenAI's image parts.
    let url = format!("data:image/png;base64,{}", gradient());
    let (status, v) = s.post(
        "/v1/chat/completions",
        json!({"model": "vision:tiny", "max_tokens": 3, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": url}}
        ]}]}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(v["choices"][0]["message"]["content"].is_string(), "{v}");
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap_or(0) >= IMAGE_TOKENS,
        "{v}"
    );

    // Text after images still works on the same slot.
    let (status, again) = s.post(
        "/api/chat",
        json!({"model": "vision:tiny", "stream": false, "options": opts,
               "messages": [{"role": "user", "content": "Hello"}]}),
    );
    assert_eq!(status, 200, "{again}");
}

#[test]
fn bad_images_are_refused() {
    let _lock = inference_lock();
    let s = vision_server();
    let cases = [
        ("not base64!", "illegal base64 data"),
        ("aGVsbG8gd29ybGQ=", "not a PNG, JPEG, GIF or BMP"),
        // A PNG signature with nothing after it: only the decoder can tell.
        ("iVBORw0KGgo=", "could not be decoded"),
    ];
    for (image, want) in cases {
        for (path, body) in [
            (
                "/api/generate",
                json!({"model": "vision:tiny", "prompt": "hi", "images": [image], "stream": false}),
            ),
            (
                "/api/chat",
                json!({"model": "vision:tiny", "stream": false,
                       "messages": [{"role": "user", "content": "hi", "images": [image]}]}),
            ),
        ] {
            let (status, v) = s.post(path, body);
            assert_eq!(status, 400, "{path} {image}: {v}");
            assert!(
                v["error"].as_str().is_some_and(|e| e.contains(want)),
                "{path} {image}: {v}"
            );
        }
    }
    // A model without a projector keeps refusing images.
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "gemma3:270m", "prompt": "hi", "images": [gradient()], "stream": false}),
    );
    assert_eq!(status, 400, "{v}");
    assert!(v["error"]
        .as_str()
        .is_some_and(|e| e.contains("does not support vision")));
}

#[test]
fn a_projector_that_does_not_load_costs_only_the_images() {
    let _lock = inference_lock();
    let s = Server::with_gemma(&[]);
    // Projects to SmolLM2's width, not Gemma's: mtmd refuses it at load.
    create_with_projector(&s, "vision:wrong", &projector_for(576));
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "vision:wrong", "prompt": "hi", "stream": false, "options": {"num_predict": 2}}),
    );
    assert_eq!(status, 200, "text still works: {v}");
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "vision:wrong", "prompt": "hi", "images": [gradient()], "stream": false}),
    );
    assert_eq!(status, 500, "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains("no vision projector")),
        "{v}"
    );
}

/// A deterministic pseudo-random generator for test weights.
struct Rng(u64);

impl Rng {
    fn values(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| {
                self.0 ^= self.0 << 13;
                self.0 ^= self.0 >> 7;
                self.0 ^= self.0 << 17;
                ((self.0 >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * scale
            })
            .collect()
    }
}

/// A Safetensors file of F32 tensors (PyTorch shapes).
fn safetensors(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, shape, values) in tensors {
        assert_eq!(shape.iter().product::<usize>(), values.len(), "{name}");
        let start = data.len();
        values.iter().for_each(|v| data.extend(v.to_le_bytes()));
        header.insert(
            name.clone(),
            json!({"dtype": "F32", "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut text = Value::Object(header).to_string();
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text.as_bytes());
    out.extend(data);
    out
}

/// The text width of the tiny multimodal checkpoint.
const TINY_TEXT_WIDTH: usize = 64;

/// The files of a tiny `Gemma3ForConditionalGeneration` checkpoint in
/// Google's layout: a one-layer Gemma 3 text model of width 64 with a
/// 300-token byte-fallback vocabulary, and a SigLIP tower shaped like the
/// hand-written projector above (width 32, one layer, 64x64 images in 8x8
/// patches, 16 image tokens), projected to 64.
fn tiny_multimodal_checkpoint() -> Vec<(&'static str, Vec<u8>)> {
    let (e, f, heads, kv_heads, hd, n_vocab) = (TINY_TEXT_WIDTH, 128, 4, 2, 32, 300);
    let (w, ff, patch, patches) = (32, 64, 8, 64);
    let config = json!({
        "_name_or_path": "test/tiny-gemma3-vision",
        "architectures": ["Gemma3ForConditionalGeneration"],
        "model_type": "gemma3",
        "text_config": {"model_type": "gemma3_text", "hidden_size": e,
                        "intermediate_size": f, "num_hidden_layers": 1,
                        "num_attention_heads": heads, "num_key_value_heads": kv_heads,
                        "head_dim": hd, "query_pre_attn_scalar": hd,
                        "sliding_window": 512},
        "vision_config": {"model_type": "siglip_vision_model", "hidden_size": w,
                          "intermediate_size": ff, "num_attention_heads": 2,
                          "num_hidden_layers": 1, "patch_size": patch, "image_size": 64,
                          "vision_use_head": false},
        "mm_tokens_per_image": 16, "boi_token_index": 289, "eoi_token_index": 290,
        "bos_token_id": 2, "eos_token_id": 1, "pad_token_id": 0
    });
    // <pad> <eos> <bos> <unk>, the 256 byte tokens, a few pieces and the
    // turn and image markers.
    let mut vocab: Vec<String> = ["<pad>", "<eos>", "<bos>", "<unk>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    vocab.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    vocab.push("\u{2581}".into());
    vocab.extend((b'a'..=b'z').map(|c| (c as char).to_string()));
    let markers = [
        "<start_of_turn>",
        "<end_of_turn>",
        "<start_of_image>",
        "<end_of_image>",
    ];
    vocab.extend(markers.iter().map(|s| s.to_string()));
    while vocab.len() < n_vocab {
        vocab.push(format!("w{}", vocab.len()));
    }
    let map: serde_json::Map<String, Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), json!(i)))
        .collect();
    let added: Vec<Value> = vocab
        .iter()
        .enumerate()
        .filter(|(i, t)| *i < 4 || markers.contains(&t.as_str()))
        .map(|(i, t)| json!({"id": i, "content": t, "special": true}))
        .collect();
    let tokenizer = json!({
        "version": "1.0", "added_tokens": added,
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"},
        "pre_tokenizer": null,
        "model": {"type": "BPE", "vocab": map, "merges": [], "byte_fallback": true,
                  "unk_token": "<unk>", "fuse_unk": true}
    });

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut t: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut add = |name: String, shape: Vec<usize>, scale: f32| {
        let n = shape.iter().product();
        t.push((name, shape, rng.values(n, scale)));
    };
    let lm = "language_model.model";
    add(format!("{lm}.embed_tokens.weight"), vec![n_vocab, e], 0.1);
    add(format!("{lm}.norm.weight"), vec![e], 0.1);
    let l = format!("{lm}.layers.0");
    for norm in [
        "input_layernorm",
        "post_attention_layernorm",
        "pre_feedforward_layernorm",
        "post_feedforward_layernorm",
    ] {
        add(format!("{l}.{norm}.weight"), vec![e], 0.1);
    }
    add(
        format!("{l}.self_attn.q_proj.weight"),
        vec![heads * hd, e],
        0.1,
    );
    add(
        format!("{l}.self_attn.k_proj.weight"),
        vec![kv_heads * hd, e],
        0.1,
    );
    add(
        format!("{l}.self_attn.v_proj.weight"),
        vec![kv_heads * hd, e],
        0.1,
    );
    add(
        format!("{l}.self_attn.o_proj.weight"),
        vec![e, heads * hd],
        0.1,
    );
    add(format!("{l}.self_attn.q_norm.weight"), vec![hd], 0.1);
    add(format!("{l}.self_attn.k_norm.weight"), vec![hd], 0.1);
    add(format!("{l}.mlp.gate_proj.weight"), vec![f, e], 0.1);
    add(format!("{l}.mlp.up_proj.weight"), vec![f, e], 0.1);
    add(format!("{l}.mlp.down_proj.weight"), vec![e, f], 0.1);
    let tower = "vision_tower.vision_model";
    add(
        format!("{tower}.embeddings.patch_embedding.weight"),
        vec![w, 3, patch, patch],
        0.1,
    );
    add(
        format!("{tower}.embeddings.patch_embedding.bias"),
        vec![w],
        0.1,
    );
    add(
        format!("{tower}.embeddings.position_embedding.weight"),
        vec![patches, w],
        0.1,
    );
    let l = format!("{tower}.encoder.layers.0");
    for m in ["q_proj", "k_proj", "v_proj", "out_proj"] {
        add(format!("{l}.self_attn.{m}.weight"), vec![w, w], 0.1);
        add(format!("{l}.self_attn.{m}.bias"), vec![w], 0.1);
    }
    for m in ["layer_norm1", "layer_norm2"] {
        add(format!("{l}.{m}.weight"), vec![w], 0.1);
        add(format!("{l}.{m}.bias"), vec![w], 0.1);
    }
    add(format!("{l}.mlp.fc1.weight"), vec![ff, w], 0.1);
    add(format!("{l}.mlp.fc1.bias"), vec![ff], 0.1);
    add(format!("{l}.mlp.fc2.weight"), vec![w, ff], 0.1);
    add(format!("{l}.mlp.fc2.bias"), vec![w], 0.1);
    add(format!("{tower}.post_layernorm.weight"), vec![w], 0.1);
    add(format!("{tower}.post_layernorm.bias"), vec![w], 0.1);
    add(
        "multi_modal_projector.mm_input_projection_weight".into(),
        vec![w, e],
        0.1,
    );
    add(
        "multi_modal_projector.mm_soft_emb_norm.weight".into(),
        vec![w],
        0.1,
    );
    vec![
        ("config.json", config.to_string().into_bytes()),
        ("tokenizer.json", tokenizer.to_string().into_bytes()),
        ("model.safetensors", safetensors(&t)),
    ]
}

/// A multimodal Gemma 3 checkpoint uploaded as Safetensors files becomes a
/// model with a converted projector layer, which llama.cpp's clip loader
/// accepts and which turns images into the expected number of tokens.
#[test]
fn safetensors_gemma3_with_its_vision_tower_answers_images() {
    let _lock = inference_lock();
    let s = Server::start();
    let mut files = serde_json::Map::new();
    for (name, bytes) in tiny_multimodal_checkpoint() {
        let (status, body, digest) = s.upload_bytes(&bytes);
        assert!(status == 201 || status == 200, "{status}: {body}");
        files.insert(name.into(), Value::String(digest));
    }
    let (status, lines) = s.stream(
        "/api/create",
        json!({"model": "mm:tiny", "files": files,
               "template": crate::harness::GEMMA_TEMPLATE}),
    );
    assert_eq!(status, 200, "{lines:?}");
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert_eq!(statuses.last(), Some(&"success"), "{lines:?}");
    assert!(
        statuses.contains(&"converting vision projector"),
        "{statuses:?}"
    );
    let created: Vec<&&str> = statuses
        .iter()
        .filter(|s| s.starts_with("creating new layer sha256:"))
        .collect();
    // The model, the projector, then the template and params layers.
    assert!(created.len() >= 2, "{statuses:?}");

    let (status, show) = s.post("/api/show", json!({"model": "mm:tiny"}));
    assert_eq!(status, 200, "{show}");
    let caps = show["capabilities"].as_array().expect("capabilities");
    assert!(caps.contains(&json!("vision")), "{caps:?}");
    let info = &show["projector_info"];
    assert_eq!(info["clip.projector_type"], "gemma3", "{info}");
    assert_eq!(
        info["clip.vision.projection_dim"], TINY_TEXT_WIDTH,
        "{info}"
    );
    assert_eq!(show["details"]["family"], "gemma3");

    // The same clip keys and values as the hand-written projector, which
    // is the reference for what llama.cpp's loader accepts.
    create_with_projector(&s, "hand:written", &projector_for(TINY_TEXT_WIDTH as u64));
    let (_, hand) = s.post("/api/show", json!({"model": "hand:written"}));
    let clip_keys = |v: &Value| -> Vec<(String, Value)> {
        v.as_object()
            .map(|o| {
                o.iter()
                    .filter(|(k, _)| k.starts_with("clip."))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(clip_keys(info).len() >= 14, "{info}");
    assert_eq!(clip_keys(info), clip_keys(&hand["projector_info"]));

    let opts = json!({"num_predict": 3, "temperature": 0});
    let (status, text_only) = s.post(
        "/api/generate",
        json!({"model": "mm:tiny", "prompt": "what is this", "stream": false, "options": opts}),
    );
    assert_eq!(status, 200, "{text_only}");
    let base = count(&text_only);
    assert!(base > 0, "{text_only}");
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "mm:tiny", "prompt": "what is this", "images": [gradient()],
               "stream": false, "options": opts}),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["done"], true, "{v}");
    assert!(
        count(&v) >= base + IMAGE_TOKENS,
        "image tokens counted: {} vs {base}",
        count(&v)
    );
}
