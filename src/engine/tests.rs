//! Engine tests against real GGUF models.
//!
//! They need `gemma3-270m-q4_k_m.gguf` and `smollm2-135m-instruct-q4_1.gguf`
//! from the test models (see `crate::test_models`); without them they fail.
//! They use two threads and few tokens to stay short on small machines.

use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use super::*;

const GEMMA: &str = "gemma3-270m-q4_k_m.gguf";
const SMOL: &str = "smollm2-135m-instruct-q4_1.gguf";

/// Engine tests hold this lock: two ggml workloads at once on a small
/// machine starve each other (their threads spin), and the HTTP tests in
/// the other binary never run at the same time as these.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

fn model_path(name: &str) -> PathBuf {
    crate::test_models::path(name)
}

fn load(name: &str, n_parallel: u32) -> Runner {
    let path = model_path(name);
    let params = LoadParams {
        n_ctx: 512,
        n_batch: 256,
        n_threads: 2,
        n_parallel,
        embeddings: false,
        use_mmap: true,
        ..LoadParams::default()
    };
    Runner::load(&path, params, Arc::new(CpuBudget::new(2))).expect("load")
}

fn greedy(prompt: Vec<i32>, n: i32) -> GenerateRequest {
    GenerateRequest {
        prompt,
        sampling: SamplingParams {
            temperature: 0.0,
            ..SamplingParams::default()
        },
        num_predict: n,
        stop_at_eog: true,
        num_keep: 0,
        shift: false,
        logprobs: None,
        media: None,
    }
}

/// Everything one generation reported.
#[derive(Debug, Default)]
struct Outcome {
    tokens: Vec<i32>,
    text: String,
    prompt_tokens: usize,
    cached_tokens: usize,
    reason: Option<DoneReason>,
    error: Option<String>,
}

fn start(runner: &Runner, req: GenerateRequest) -> mpsc::Receiver<Event> {
    let (tx, rx) = mpsc::channel();
    runner
        .generate(
            req,
            Box::new(move |ev| {
                let _ = tx.send(ev);
                true
            }),
        )
        .expect("generate");
    rx
}

fn collect(rx: mpsc::Receiver<Event>) -> Outcome {
    let mut o = Outcome::default();
    let mut utf8 = Utf8Assembler::new();
    while let Ok(ev) = rx.recv_timeout(Duration::from_secs(60)) {
        match ev {
            Event::PromptDone {
                prompt_tokens,
                cached_tokens,
                ..
            } => {
                o.prompt_tokens = prompt_tokens;
                o.cached_tokens = cached_tokens;
            }
            Event::Token { id, bytes, .. } => {
                o.tokens.push(id);
                o.text.push_str(&utf8.push(&bytes));
            }
            Event::Done { reason, .. } => {
                o.reason = Some(reason);
                break;
            }
            Event::Error(e) => {
                o.error = Some(e.to_string());
                break;
            }
        }
    }
    o.text.push_str(&utf8.finish());
    o
}

fn run(runner: &Runner, req: GenerateRequest) -> Outcome {
    collect(start(runner, req))
}

#[test]
fn utf8_assembler_holds_partial_chars() {
    let _serial = serial();
    let mut a = Utf8Assembler::new();
    let euro = "€".as_bytes();
    assert_eq!(a.push(&euro[..1]), "");
    assert_eq!(a.push(&euro[1..2]), "");
    assert_eq!(a.push(&[euro[2], b'a']), "€a");
    assert_eq!(a.push(&[0xff, b'b']), "\u{fffd}b");
    assert_eq!(a.push(&euro[..2]), "");
    assert_eq!(a.finish(), "\u{fffd}");
}

#[test]
fn greedy_generate_eight_tokens() {
    let _serial = serial();
    let r = load(GEMMA, 1);
    let info = r.info();
    assert!(info.n_vocab > 1000 && info.n_embd > 0);
    let prompt = r.tokenize("The capital of France is", true, false).unwrap();
    let o = run(&r, greedy(prompt, 8));
    eprintln!("gemma greedy: {:?}", o.text);
    assert_eq!(o.error, None);
    assert_eq!(o.tokens.len(), 8);
    assert_eq!(o.reason, Some(DoneReason::Length));
    assert_eq!(r.detokenize(&o.tokens), o.text);
}

#[test]
fn same_seed_same_output() {
    let _serial = serial();
    let r = load(SMOL, 1);
    let prompt = r.tokenize("Once upon a time", true, false).unwrap();
    let mut req = greedy(prompt, 12);
    req.sampling.temperature = 0.8;
    req.sampling.seed = Some(42);
    let a = run(&r, req.clone());
    let b = run(&r, req.clone());
    assert_eq!(a.error, None);
    assert_eq!(a.tokens, b.tokens, "same seed must give the same tokens");
    req.sampling.seed = Some(7);
    let c = run(&r, req);
    eprintln!("seed 42: {:?} / seed 7: {:?}", a.text, c.text);
}

#[test]
fn stops_on_eog() {
    let _serial = serial();
    let r = load(SMOL, 1);
    let text = "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\n";
    let prompt = r.tokenize(text, false, true).unwrap();
    let o = run(&r, greedy(prompt, 200));
    eprintln!("smol chat: {:?}", o.text);
    assert_eq!(o.reason, Some(DoneReason::Stop), "{o:?}");
    assert!(o.tokens.iter().all(|t| !r.is_eog(*t)));
}

#[test]
fn errors_for_bad_requests() {
    let _serial = serial();
    let r = load(SMOL, 1);
    let sink = || -> Sink { Box::new(|_| true) };
    assert!(matches!(
        r.generate(greedy(vec![], 1), sink()),
        Err(Error::EmptyPrompt)
    ));
    assert!(matches!(
        r.generate(greedy(vec![1, -5], 1), sink()),
        Err(Error::InvalidToken(-5))
    ));
    let long = vec![1; r.info().n_ctx as usize + 1];
    assert!(matches!(
        r.generate(greedy(long.clone(), 1), sink()),
        Err(Error::PromptTooLong { .. })
    ));
    let mut bad_grammar = greedy(vec![1], 1);
    bad_grammar.sampling.grammar = Some("root ::= (".into());
    assert!(matches!(
        r.generate(bad_grammar, sink()),
        Err(Error::Grammar(_))
    ));
    assert!(r.token_bytes(-1).is_empty());
    // With shift on, an over-long prompt is truncated instead.
    let mut req = greedy(long, 2);
    req.shift = true;
    req.num_keep = 4;
    let o = run(&r, req);
    assert_eq!(o.error, None);
    assert!(o.prompt_tokens < r.info().n_ctx as usize);
}

#[test]
fn grammar_constrains_output() {
    let _serial = serial();
    let r = load(SMOL, 1);
    let prompt = r.tokenize("Is the sky blue? Answer:", true, false).unwrap();
    let mut req = greedy(prompt, 8);
    req.sampling.grammar = Some(r#"root ::= " yes" | " no""#.into());
    let o = run(&r, req);
    eprintln!("grammar: {:?}", o.text);
    assert_eq!(o.error, None);
    assert!(o.text == " yes" || o.text == " no", "{:?}", o.text);
}

#[test]
fn embeddings_are_unit_length() {
    let _serial = serial();
    // A generation context refuses (it plans one output row per sequence).
    let generating = load(SMOL, 1);
    let hi = generating.tokenize("hi", true, false).unwrap();
    let refused = generating.embed(vec![hi]).unwrap_err();
    assert!(
        refused.to_string().contains("loaded for generation"),
        "{refused}"
    );
    drop(generating);
    let params = LoadParams {
        n_ctx: 512,
        n_batch: 256,
        n_threads: 2,
        n_parallel: 2,
        embeddings: true,
        use_mmap: true,
        ..LoadParams::default()
    };
    let r = Runner::load(&model_path(SMOL), params, Arc::new(CpuBudget::new(2))).expect("load");
    let a = r.tokenize("hello world", true, false).unwrap();
    let b = r
        .tokenize("a completely different sentence", true, false)
        .unwrap();
    let v = r.embed(vec![a, b]).unwrap();
    assert_eq!(v.len(), 2);
    for e in &v {
        assert_eq!(e.len(), r.info().n_embd as usize);
        let n: f32 = e.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((n - 1.0).abs() < 1e-3, "norm {n}");
    }
    assert_ne!(v[0], v[1]);
    // And an embedding runner does not generate.
    let hi = r.tokenize("Hi", true, false).unwrap();
    let refused = r.generate(greedy(hi, 2), Box::new(|_| true));
    assert!(matches!(refused, Err(Error::NotGenerative)), "{refused:?}");
}

#[test]
fn truncated_gguf_fails_to_load() {
    let _serial = serial();
    let src = model_path(GEMMA);
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(&src).unwrap();
    for (name, len) in [
        ("half.gguf", bytes.len() / 2),
        ("head.gguf", 1000),
        ("empty.gguf", 0),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes[..len]).unwrap();
        let err = Runner::load(&path, LoadParams::default(), Arc::new(CpuBudget::new(2)))
            .expect_err("truncated file must not load");
        eprintln!("{name}: {err}");
        assert!(matches!(err, Error::LoadFailed { .. }));
    }
    let missing = dir.path().join("missing.gguf");
    assert!(Runner::load(&missing, LoadParams::default(), Arc::new(CpuBudget::new(2))).is_err());
}

#[test]
fn second_turn_reuses_prefix() {
    let _serial = serial();
    let r = load(SMOL, 2);
    let turn1 = r
        .tokenize(
            "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n",
            false,
            true,
        )
        .unwrap();
    let o1 = run(&r, greedy(turn1.clone(), 4));
    assert_eq!(o1.cached_tokens, 0);
    assert_eq!(o1.prompt_tokens, turn1.len());
    // The next prompt is the first one, the answer, and a new user turn.
    let mut turn2 = turn1.clone();
    turn2.extend(&o1.tokens[..3]);
    let extra = r.tokenize("\nAnd another?", false, true).unwrap();
    turn2.extend(&extra);
    let o2 = run(&r, greedy(turn2.clone(), 2));
    eprintln!(
        "turn2: cached {} evaluated {}",
        o2.cached_tokens, o2.prompt_tokens
    );
    // The cache holds the prompt plus the answer tokens that were fed back
    // (all but the last sampled one).
    assert_eq!(o2.cached_tokens, turn1.len() + 3);
    assert_eq!(o2.prompt_tokens, extra.len());
    // The same prompt again re-evaluates only its last token.
    let o3 = run(&r, greedy(turn2.clone(), 1));
    assert_eq!(o3.prompt_tokens, 1);
    assert_eq!(o3.cached_tokens, turn2.len() - 1);
}

#[test]
fn four_parallel_sequences_complete() {
    let _serial = serial();
    let r = load(GEMMA, 4);
    let prompts = ["One", "Two plus two is", "The sky is", "Rust is a"];
    let rxs: Vec<_> = prompts
        .iter()
        .map(|p| start(&r, greedy(r.tokenize(p, true, false).unwrap(), 6)))
        .collect();
    let outs: Vec<Outcome> = rxs.into_iter().map(collect).collect();
    for (p, o) in prompts.iter().zip(&outs) {
        eprintln!("{p:?} -> {:?}", o.text);
        assert_eq!(o.error, None);
        assert_eq!(o.tokens.len(), 6);
    }
    // Parallel results equal the sequential ones (greedy, separate streams).
    let solo = run(&r, greedy(r.tokenize(prompts[1], true, false).unwrap(), 6));
    assert_eq!(solo.tokens, outs[1].tokens);
}

#[test]
fn client_gone_frees_the_slot() {
    let _serial = serial();
    let r = load(SMOL, 1);
    let prompt = r.tokenize("Count to ten:", true, false).unwrap();
    let (tx, rx) = mpsc::channel();
    let mut seen = 0;
    r.generate(
        greedy(prompt.clone(), 100),
        Box::new(move |ev| {
            if matches!(ev, Event::Token { .. }) {
                seen += 1;
                if seen == 2 {
                    let _ = tx.send(());
                    return false;
                }
            }
            true
        }),
    )
    .unwrap();
    rx.recv_timeout(Duration::from_secs(30)).unwrap();
    // The only slot must be free again for the next request.
    let o = run(&r, greedy(prompt, 3));
    assert_eq!(o.error, None);
    assert_eq!(o.tokens.len(), 3);
}

#[test]
fn context_shift_keeps_generating() {
    let _serial = serial();
    let r = load(SMOL, 1);
    let n_ctx = r.info().n_ctx as usize;
    let prompt = vec![1; n_ctx - 4];
    let mut req = greedy(prompt.clone(), 10);
    req.stop_at_eog = false;
    req.shift = false;
    let o = run(&r, req.clone());
    assert_eq!(o.reason, Some(DoneReason::Length));
    assert!(o.tokens.len() <= 5, "{}", o.tokens.len());
    req.shift = true;
    req.num_keep = 2;
    let o = run(&r, req);
    assert_eq!(o.error, None);
    assert_eq!(o.tokens.len(), 10);
}
