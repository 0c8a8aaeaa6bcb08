//! `hearth pull [--insecure] NAME` and `hearth push [--insecure] NAME`: ask
//! the server to pull or push a model and print its progress: bars on a
//! terminal, else plain status lines (one per step, and one per layer when
//! it starts and when it completes). The transfer itself is the server's; this file only asks and
//! prints.

use serde_json::{json, Value};

use super::format::human_bytes;
use super::progress::Progress;
use super::{out, Client};

/// Streams `POST /api/pull` and prints each new status.
pub fn pull(client: &Client, model: &str, insecure: bool) -> anyhow::Result<()> {
    transfer(client, "/api/pull", model, insecure)
}

/// Streams `POST /api/push` and prints each new status.
pub fn push(client: &Client, model: &str, insecure: bool) -> anyhow::Result<()> {
    transfer(client, "/api/push", model, insecure)
}

/// Pull and push report progress in the same shape, so one printer serves both.
fn transfer(client: &Client, path: &str, model: &str, insecure: bool) -> anyhow::Result<()> {
    let req = json!({ "model": model, "insecure": insecure, "stream": true });
    let mut bars = Progress::new();
    if bars.terminal {
        // A bar per layer (sizes, rate), a spinner per step.
        let result = client.stream(path, &req, |line: &Value| {
            bars.line(line);
            Ok(())
        });
        bars.finish();
        return result;
    }
    let mut last_status = String::new();
    let mut layer_done = false;
    client.stream(path, &req, |line: &Value| {
        let status = line["status"].as_str().unwrap_or_default();
        let total = line["total"].as_u64();
        let completed = line["completed"].as_u64().unwrap_or(0);
        if status != last_status {
            last_status = status.to_string();
            layer_done = false;
            match total {
                Some(t) => out(&format!("{status}: {}\n", human_bytes(t)))?,
                None => out(&format!("{status}\n"))?,
            }
        }
        // A layer's completion is worth one line; the updates in between are not.
        if let Some(t) = total {
            if completed >= t && !layer_done {
                layer_done = true;
                out(&format!("{status}: 100% ({})\n", human_bytes(t)))?;
            }
        }
        Ok(())
    })
}
