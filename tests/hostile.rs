//! Hostile clients against the real server: connections that send nothing,
//! stay idle, or stop reading, and more connections than the cap. Each gets
//! a bounded answer (or a closed socket) within seconds, and the server
//! keeps serving everyone else.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{inference_lock, smollm, wait_for, Server};

/// The server's socket address.
fn addr(s: &Server) -> SocketAddr {
    s.base
        .trim_start_matches("http://")
        .parse()
        .expect("server address")
}

/// A TCP connection to the server from a chosen loopback address (Linux
/// routes all of 127/8 to lo), with a receive buffer of `rcvbuf` bytes when
/// given, so a test can act as a second client machine or a slow reader.
fn connect_from(s: &Server, from: [u8; 4], rcvbuf: Option<u32>) -> TcpStream {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .expect("runtime");
    let target = addr(s);
    let stream = rt.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        if let Some(n) = rcvbuf {
            socket.set_recv_buffer_size(n).expect("SO_RCVBUF");
        }
        socket
            .bind(SocketAddr::from((from, 0)))
            .expect("bind a loopback source address");
        let stream = socket.connect(target).await.expect("connect");
        stream.into_std().expect("std stream")
    });
    // `into_std` leaves the socket non-blocking; the tests read it blocking.
    stream.set_nonblocking(false).expect("blocking socket");
    stream
}

/// Reads until the server closes the connection (or `limit` passes) and
/// returns what came and how long the close took.
fn read_to_close(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let started = Instant::now();
    stream.set_read_timeout(Some(limit)).expect("read timeout");
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the connection open past {limit:?}: {e}"),
        }
    }
    (
        String::from_utf8_lossy(&got).into_owned(),
        started.elapsed(),
    )
}

/// `GET /` on a fresh connection, and how long it took.
fn timed_root(s: &Server) -> Duration {
    let started = Instant::now();
    let (status, body) = s.call("GET", "/", None);
    assert_eq!(status, 200, "{body}");
    started.elapsed()
}

#[test]
fn half_sent_and_idle_connections_are_closed() {
    let s = Server::start_with(&[("HEARTH_IDLE_TIMEOUT", "1s")]);
    // Half a request line, then nothing: closed after the idle timeout.
    let mut half = connect_from(&s, [127, 0, 0, 1], None);
    half.write_all(b"GET / HTTP/1.1\r\nHo").expect("write");
    let (_, took) = read_to_close(&mut half, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    // A keep-alive connection that got its answer and then sends nothing.
    let mut idle = connect_from(&s, [127, 0, 0, 1], None);
    idle.write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .expect("write");
    let (answer, took) = read_to_close(&mut idle, Duration::from_secs(10));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("Ollama is running"), "{answer}");
    assert!(took < Duration::from_secs(5), "closed after {took:?}");
    assert!(timed_root(&s) < Duration::from_millis(200));
}

#[test]
fn connections_over_the_cap_are_refused_and_other_clients_still_get_in() {
    // A cap of 8: one address may hold 4.
    let s = Server::start_with(&[("HEARTH_MAX_CONNECTIONS", "8")]);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| connect_from(&s, [127, 0, 0, 2], None))
        .collect();
    let mut fifth = connect_from(&s, [127, 0, 0, 2], None);
    let (answer, took) = read_to_close(&mut fifth, Duration::from_secs(10));
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("too many open connections"), "{answer}");
    // Another address still gets in, quickly, while the four are held.
    let root = timed_root(&s);
    assert!(root < Duration::from_millis(200), "{root:?}");
    // A place given back is free again.
    drop(held);
    let mut again = connect_from(&s, [127, 0, 0, 2], None);
    let started = Instant::now();
    loop {
        again
            .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .expect("write");
        let (answer, _) = read_to_close(&mut again, Duration::from_secs(10));
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        // The server may not have seen the four close yet.
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "never let in again"
        );
        again = connect_from(&s, [127, 0, 0, 2], None);
    }
}

#[test]
fn a_client_that_stops_reading_is_dropped_and_its_slot_freed() {
    let _lock = inference_lock();
    let s = Server::start_with(&[("HEARTH_WRITE_TIMEOUT", "2s"), ("OLLAMA_NUM_PARALLEL", "1")]);
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    // A streamed answer with 20 alternatives per token (a few KB a chunk)
    // to a client with a tiny receive window that never reads. Greedy
    // counting goes on for thousands of tokens, far more than the socket
    // buffers hold (an essay could end first, all of it buffered, and the
    // server would have nothing left to give up on).
    let body =
        json!({"model": "smollm2:135m", "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,", "raw": true,
                      "logprobs": true, "top_logprobs": 20,
                      "options": {"num_predict": 20000, "num_ctx": 2048, "temperature": 0}})
        .to_string();
    let mut stalled = connect_from(&s, [127, 0, 0, 1], Some(4096));
    write!(
        stalled,
        "POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .expect("send the request");
    // Its answer has started (the slot is taken); from here it reads no more.
    let mut head = [0u8; 64];
    let n = stalled.read(&mut head).expect("the answer's head");
    assert!(head[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &head[..n]);
    // With one slot, this waits for the stalled one: it is answered only
    // because the server gave up on the client that stopped reading.
    let started = Instant::now();
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "smollm2:135m", "prompt": "Hi", "stream": false, "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(120),
        "{:?}",
        started.elapsed()
    );
    wait_for("the log to say why the client was dropped", || {
        s.log().iter().any(|l| l.contains("stopped reading"))
    });
    drop(stalled);
}

/// While a hostile request runs: `GET /` on fresh connections and the
/// server's RSS, sampled until `f` returns. Returns `f`'s result, the
/// slowest `GET /` and the RSS growth in MiB.
fn watching<T>(s: &Server, f: impl FnOnce() -> T) -> (T, Duration, u64) {
    let before = s.rss_mib();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let probe = scope.spawn(|| {
            let (mut slowest, mut peak) = (Duration::ZERO, before);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                slowest = slowest.max(timed_root(s));
                peak = peak.max(s.rss_mib());
                std::thread::sleep(Duration::from_millis(20));
            }
            (slowest, peak)
        });
        let out = f();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let (slowest, peak) = probe.join().expect("probe thread");
        (out, slowest, peak.saturating_sub(before))
    })
}

#[test]
fn a_fifty_thousand_message_chat_is_truncated_in_bounded_time() {
    let _lock = inference_lock();
    let s = Server::start();
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    // Load it first, so the RSS growth is the request's.
    let (status, v) = s.post(
        "/api/chat",
        json!({"model": "smollm2:135m", "messages": [], "options": {"num_ctx": 512}}),
    );
    assert_eq!(status, 200, "{v}");
    let messages: Vec<_> = (0..50_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("message {i}: tell me more")}))
        .collect();
    let started = Instant::now();
    let ((status, v), slowest, grown) = watching(&s, || {
        s.post(
            "/api/chat",
            json!({"model": "smollm2:135m", "messages": messages, "stream": false,
                   "options": {"num_ctx": 512, "num_predict": 2, "temperature": 0}}),
        )
    });
    let took = started.elapsed();
    assert_eq!(status, 200, "{v}");
    // As many of the newest messages as fit.
    let prompt = v["prompt_eval_count"].as_u64().expect("prompt_eval_count");
    assert!((400..512).contains(&prompt), "{prompt} prompt tokens");
    assert!(took < Duration::from_secs(30), "answered after {took:?}");
    assert!(
        slowest < Duration::from_millis(200),
        "GET / took {slowest:?}"
    );
    assert!(grown < 300, "RSS grew by {grown} MiB");
    eprintln!("50,000 messages: answered in {took:?}, GET / at most {slowest:?}, RSS +{grown} MiB");
}

/// A 50 MB prompt: only its ends can reach the model, so only they are
/// rendered and tokenized (llama.cpp's tokenizer on the whole of it took
/// 1.3 GB and 50 s, on an async worker). It is answered with the newest
/// tokens, HTTP stays responsive and the server grows by less than 300 MB.
#[test]
fn a_fifty_megabyte_prompt_costs_what_its_ends_cost() {
    let _lock = inference_lock();
    let s = Server::start();
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "smollm2:135m", "prompt": "", "options": {"num_ctx": 1024}}),
    );
    assert_eq!(status, 200, "{v}");
    let prompt = "the quick brown fox jumps over the lazy dog ".repeat(50_000_000 / 44);
    for raw in [true, false] {
        let started = Instant::now();
        let ((status, v), slowest, grown) = watching(&s, || {
            s.post(
                "/api/generate",
                json!({"model": "smollm2:135m", "prompt": prompt, "raw": raw, "stream": false,
                       "options": {"num_ctx": 1024, "num_predict": 1}}),
            )
        });
        assert_eq!(status, 200, "{v}");
        let evaluated = v["prompt_eval_count"].as_u64().expect("prompt_eval_count");
        assert!(
            (400..1024).contains(&evaluated),
            "{evaluated} prompt tokens"
        );
        assert!(
            slowest < Duration::from_millis(200),
            "GET / took {slowest:?}"
        );
        assert!(grown < 300, "RSS grew by {grown} MiB");
        eprintln!(
            "50 MB prompt (raw {raw}): answered in {:?}, GET / at most {slowest:?}, RSS +{grown} MiB",
            started.elapsed()
        );
    }
}

/// Reading only a long prompt's ends changes nothing the model sees: with
/// `num_keep` 0 the runner keeps only the newest tokens, and a prompt of
/// 2 MB answers exactly as its last 60 KB do.
#[test]
fn a_long_prompt_answers_as_its_end_does() {
    let _lock = inference_lock();
    let s = Server::start();
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    let text: String = (0..300_000).map(|i| format!("{i}, ")).collect();
    let end = &text[text.len() - 60_000..];
    let ask = |prompt: &str| {
        let (status, v) = s.post(
            "/api/generate",
            json!({"model": "smollm2:135m", "prompt": prompt, "raw": true, "stream": false,
                   "options": {"num_ctx": 1024, "num_keep": 0, "num_predict": 8, "temperature": 0}}),
        );
        assert_eq!(status, 200, "{v}");
        (v["response"].clone(), v["prompt_eval_count"].clone())
    };
    assert!(text.len() > 2_000_000);
    assert_eq!(ask(&text), ask(end));
}

/// Schema bombs: eight types at each of twelve levels (about 1 KB of JSON,
/// 8^12 rules if each type re-walked its children) is answered at once;
/// with `properties` beside `items` at every level, and a 50,000-string
/// `enum`, they are 400s naming the limit, within a second, while HTTP
/// keeps answering.
#[test]
fn hostile_schemas_are_refused_at_once() {
    let _lock = inference_lock();
    let s = Server::start();
    s.create_linked("smollm2:135m", &smollm(), json!({}));
    let types =
        json!(["object", "array", "string", "number", "integer", "boolean", "null", "object"]);
    let (mut small, mut wide) = (json!({"type": "string"}), json!({"type": "string"}));
    for _ in 0..12 {
        small = json!({"type": types, "items": small});
        wide = json!({"type": types, "items": wide.clone(), "properties": {"a": wide}});
    }
    let started = Instant::now();
    let (status, v) = s.post(
        "/api/generate",
        json!({"model": "smollm2:135m", "prompt": "hi", "stream": false, "format": small,
               "options": {"num_predict": 4}}),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let big: Vec<String> = (0..50_000).map(|i| format!("value number {i}")).collect();
    let huge_enum = json!({"type": "string", "enum": big});
    for (what, schema) in [("bomb", wide), ("enum", huge_enum)] {
        let started = Instant::now();
        let ((status, v), slowest, grown) = watching(&s, || {
            s.post(
                "/api/generate",
                json!({"model": "smollm2:135m", "prompt": "hi", "stream": false, "format": schema,
                       "options": {"num_predict": 4}}),
            )
        });
        let took = started.elapsed();
        assert_eq!(status, 400, "{what}: {v}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains("too large"), "{what}: {error}");
        assert!(
            took < Duration::from_secs(1),
            "{what}: refused after {took:?}"
        );
        assert!(
            slowest < Duration::from_millis(200),
            "GET / took {slowest:?}"
        );
        assert!(grown < 300, "RSS grew by {grown} MiB");
        eprintln!("schema {what}: 400 in {took:?}, GET / at most {slowest:?}, RSS +{grown} MiB");
    }
}
