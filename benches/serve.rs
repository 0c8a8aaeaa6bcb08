//! Start-up time and idle memory of `hearth serve` with an empty store.
//!
//! `cargo bench --bench serve` prints a table; run it alone on the machine.

// A benchmark reports by printing its table.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    let runs = 20;
    let mut startup = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_hearth"))
            .arg("serve")
            .env("OLLAMA_HOST", "127.0.0.1:0")
            .env("OLLAMA_MODELS", dir.path().join("models"))
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let addr = loop {
            let line = lines.next().expect("log line").expect("read");
            if let Some(rest) = line.split("Listening on ").nth(1) {
                break rest
                    .split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_string();
            }
        };
        // Start-up ends when the first request is answered.
        let mut tcp = TcpStream::connect(&addr).expect("connect");
        write!(
            tcp,
            "GET / HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("write");
        let mut resp = String::new();
        tcp.read_to_string(&mut resp).expect("read");
        assert!(resp.ends_with("Ollama is running"));
        startup.push(started.elapsed());
        std::thread::sleep(Duration::from_millis(500));
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        rss.push(kib);
        let _ = child.kill();
        let _ = child.wait();
    }
    startup.sort();
    rss.sort_unstable();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "hearth serve, empty store, {runs} runs ({})",
        std::env::consts::ARCH
    );
    println!("| metric | median | worst |");
    println!("|---|---|---|");
    println!(
        "| start-up to first answer | {:.1} ms | {:.1} ms |",
        ms(startup[runs / 2]),
        ms(startup[runs - 1])
    );
    println!(
        "| idle RSS | {:.1} MB | {:.1} MB |",
        rss[runs / 2] as f64 / 1024.0,
        rss[runs - 1] as f64 / 1024.0
    );
}
