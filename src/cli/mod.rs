//! The CLI verbs other than `serve`: each talks to a running server over
//! HTTP at `OLLAMA_HOST` (as `hearth::config::client_base_url` reads it)
//! and prints what Ollama's CLI prints. Argument parsing stays in
//! `main.rs`; the server's rules stay in the server. The small verbs live
//! here; `create`, `run` and `show` have their own files.

// A CLI's job is to print to stdout; the lint guards the server code.
#![allow(clippy::print_stdout)]

pub mod client;
pub mod create;
pub mod format;
mod line;
pub mod modelfile;
mod progress;
pub mod pull;
pub mod run;
pub mod show;
mod term;

use std::io::Write as _;
use std::time::SystemTime;

use serde_json::{json, Value};

use client::status_of;
pub use client::Client;
use format::{human_bytes, human_time, parse_rfc3339, table};

/// Writes to stdout. Unlike `print!`, a closed pipe (`hearth list | head -1`)
/// is an error `main` ends quietly on, not a panic.
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

/// A client for the server `OLLAMA_HOST` names.
pub fn connect() -> Client {
    Client::new(crate::config::client_base_url())
}

/// `hearth list [PREFIX]`: `NAME  ID  SIZE  MODIFIED`, newest first as the
/// server sorts them; a prefix keeps the names that start with it, ignoring case.
pub fn list(client: &Client, prefix: Option<&str>) -> anyhow::Result<()> {
    let resp = client.get("/api/tags")?;
    let now = SystemTime::now();
    let prefix = prefix.map(str::to_lowercase);
    let mut rows = vec![cells(&["NAME", "ID", "SIZE", "MODIFIED"])];
    for m in resp["models"].as_array().into_iter().flatten() {
        let name = m["name"].as_str().unwrap_or_default();
        if prefix
            .as_ref()
            .is_some_and(|p| !name.to_lowercase().starts_with(p.as_str()))
        {
            continue;
        }
        rows.push(vec![
            name.to_string(),
            short_id(m),
            human_bytes(m["size"].as_u64().unwrap_or(0)),
            when(&m["modified_at"], now),
        ]);
    }
    out(&table(&rows))
}

/// `hearth ps`: `NAME  ID  SIZE  PROCESSOR  CONTEXT  UNTIL`.
pub fn ps(client: &Client) -> anyhow::Result<()> {
    let resp = client.get("/api/ps")?;
    let now = SystemTime::now();
    let mut rows = vec![cells(&[
        "NAME",
        "ID",
        "SIZE",
        "PROCESSOR",
        "CONTEXT",
        "UNTIL",
    ])];
    for m in resp["models"].as_array().into_iter().flatten() {
        let size = m["size"].as_u64().unwrap_or(0);
        let vram = m["size_vram"].as_u64().unwrap_or(0);
        let processor = match vram {
            0 => "100% CPU".to_string(),
            v if v == size => "100% GPU".to_string(),
            v if v > size => "Unknown".to_string(),
            v => {
                let cpu = ((size - v) as f64 / size as f64 * 100.0).round() as u64;
                format!("{cpu}%/{}% CPU/GPU", 100 - cpu)
            }
        };
        let until = match m["expires_at"].as_str().and_then(parse_rfc3339) {
            Some(t) if t < now => "Stopping...".to_string(),
            Some(t) => human_time(t, now),
            None => "Never".to_string(),
        };
        rows.push(vec![
            m["name"].as_str().unwrap_or_default().to_string(),
            short_id(m),
            human_bytes(size),
            processor,
            m["context_length"].as_u64().unwrap_or(0).to_string(),
            until,
        ]);
    }
    out(&table(&rows))
}

/// `hearth cp SRC DST`.
pub fn copy(client: &Client, source: &str, destination: &str) -> anyhow::Result<()> {
    client.post(
        "/api/copy",
        &json!({"source": source, "destination": destination}),
    )?;
    out(&format!("copied '{source}' to '{destination}'\n"))
}

/// `hearth rm MODEL...`: unloads each model (the server's delete leaves a
/// running model loaded), then deletes it.
pub fn remove(client: &Client, models: &[String]) -> anyhow::Result<()> {
    for model in models {
        if let Err(e) = unload(client, model) {
            // A model that is not there fails below with the server's words.
            if status_of(&e) != Some(404) {
                eprintln!("Warning: unable to stop model '{model}': {e}");
            }
        }
        client.delete("/api/delete", &json!({"model": model}))?;
        out(&format!("deleted '{model}'\n"))?;
    }
    Ok(())
}

/// `hearth stop MODEL`: asks the server to unload it now.
pub fn stop(client: &Client, model: &str) -> anyhow::Result<()> {
    match unload(client, model) {
        Err(e) if status_of(&e) == Some(404) => {
            anyhow::bail!("couldn't find model \"{model}\" to stop")
        }
        other => other,
    }
}

/// `hearth --version`.
pub fn version() -> anyhow::Result<()> {
    out(&format!(
        "hearth version {}\ntarget {}\nkernels {}\n",
        env!("CARGO_PKG_VERSION"),
        crate::build_info::TARGET,
        crate::build_info::KERNELS
    ))
}

/// A generate with `keep_alive: 0` and no prompt: the server's unload.
fn unload(client: &Client, model: &str) -> anyhow::Result<()> {
    client
        .post(
            "/api/generate",
            &json!({"model": model, "keep_alive": 0, "stream": false}),
        )
        .map(drop)
}

fn cells(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| w.to_string()).collect()
}

/// The ID column: the first 12 hex digits of the manifest digest.
fn short_id(m: &Value) -> String {
    m["digest"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("sha256:")
        .chars()
        .take(12)
        .collect()
}

fn when(v: &Value, now: SystemTime) -> String {
    v.as_str()
        .and_then(parse_rfc3339)
        .map_or_else(|| "Never".to_string(), |t| human_time(t, now))
}
