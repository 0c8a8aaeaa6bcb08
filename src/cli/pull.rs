//! `hearth pull [--insecure] NAME`: asks the server to pull a model and
//! prints its progress as plain status lines (one per step, and one per
//! layer when it starts and when it completes). The pull itself is the
//! server's; this file only asks and prints.

use serde_json::{json, Value};

use super::format::human_bytes;
use super::{out, Client};

/// Streams `POST /api/pull` and prints each new status.
pub fn pull(client: &Client, model: &str, insecure: bool) -> anyhow::Result<()> {
    let req = json!({ "model": model, "insecure": insecure, "stream": true });
    let mut last_status = String::new();
    let mut layer_done = false;
    client.stream("/api/pull", &req, |line: &Value| {
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
