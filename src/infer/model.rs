//! ResolvedModel resolution for inference routes: from a name to the weights,
//! template, defaults and capabilities (cached per manifest digest), plus
//! the request fields every inference route shares (`keep_alive`, options).

use std::sync::Arc;

use serde_json::{Map, Value};

use super::{AppState, Error};
use crate::config::{keep_alive_from_secs, parse_go_duration};
use crate::gguf::Gguf;
use crate::model::ModelName;
use crate::options::Options;
use crate::prompt::{self, Message};
use crate::scheduler::{KeepAlive, LoadKey};
use crate::store::manifest::{self as mf, ConfigBlob, Manifest};
use crate::store::{self, Store};
use crate::template::Template;

/// Parses `keep_alive`: a number of seconds or a Go duration string.
pub fn parse_keep_alive(v: Option<&Value>, default: KeepAlive) -> Result<KeepAlive, Error> {
    match v {
        None | Some(Value::Null) => Ok(default),
        Some(Value::Number(n)) => Ok(keep_alive_from_secs(n.as_f64().unwrap_or(0.0))),
        Some(Value::String(s)) => parse_go_duration(s)
            .map(keep_alive_from_secs)
            .map_err(Error::KeepAlive),
        Some(other) => Err(Error::KeepAlive(format!(
            "Unsupported type: '{}'",
            json_type(other)
        ))),
    }
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "bool",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
        _ => "unknown",
    }
}

/// The template a model renders prompts with, if it has a template layer.
pub fn template_text(store: &Store, manifest: &Manifest) -> Option<String> {
    manifest
        .layer(mf::MEDIA_TEMPLATE)
        .or_else(|| manifest.layer(mf::MEDIA_PROMPT))
        .and_then(|l| store.read_text(l))
}

/// Capabilities Ollama reports, from the weights' metadata and the template.
pub fn capabilities(
    gguf: Option<&Gguf>,
    template: Option<&str>,
    manifest: &Manifest,
) -> Vec<&'static str> {
    let mut caps = Vec::new();
    let arch = gguf.and_then(Gguf::architecture).unwrap_or("");
    let pooling = gguf.is_some_and(|g| g.get(&format!("{arch}.pooling_type")).is_some());
    if pooling {
        caps.push("embedding");
    } else {
        caps.push("completion");
    }
    if let Some(t) = template.and_then(|t| Template::parse(t).ok()) {
        if t.uses_field("Tools") {
            caps.push("tools");
        }
        if t.uses_field("Suffix") {
            caps.push("insert");
        }
    }
    let vision_kv = gguf.is_some_and(|g| g.get(&format!("{arch}.vision.block_count")).is_some());
    if manifest.layer(mf::MEDIA_PROJECTOR).is_some() || vision_kv {
        caps.push("vision");
    }
    if template.is_some_and(|t| t.contains("<think>") && t.contains("</think>")) {
        caps.push("thinking");
    }
    caps
}

/// A model resolved from the store, with everything inference needs.
#[derive(Debug)]
pub struct ResolvedModel {
    /// The name with on-disk spelling.
    pub name: ModelName,
    /// Manifest digest.
    pub digest: String,
    /// The weights blob.
    pub path: std::path::PathBuf,
    /// Prompt template (the model's, the GGUF's recognised one, or the default).
    pub template: Template,
    /// SYSTEM layer.
    pub system: Option<String>,
    /// PARAMETER layer.
    pub params: Map<String, Value>,
    /// MESSAGE layer.
    pub messages: Vec<Message>,
    /// Ollama's capability names.
    pub caps: Vec<&'static str>,
    /// Training context length.
    pub ctx_train: Option<u64>,
    /// The first projector layer (a clip GGUF), for images.
    pub projector: Option<std::path::PathBuf>,
}

/// Resolved models by name and manifest digest. Reading a GGUF header walks its whole
/// vocabulary (262k strings for Gemma 3), which is worth doing once per
/// manifest, not once per request; a new manifest has a new digest.
#[derive(Debug, Default)]
pub struct ModelCache(std::sync::Mutex<std::collections::HashMap<String, Arc<ResolvedModel>>>);

pub fn resolve(state: &AppState, name: &ModelName, raw: &str) -> Result<Arc<ResolvedModel>, Error> {
    let store = &state.store;
    let entry = store.entry(name).map_err(|e| match e {
        store::Error::ModelNotFound(_) => Error::ModelNotFound(raw.to_string()),
        other => Error::Store(other),
    })?;
    let cache = &state.model_cache.0;
    if let Some(m) = cache
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&cache_key(&entry))
    {
        return Ok(Arc::clone(m));
    }
    let model = Arc::new(read_model(store, &entry, raw)?);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= 64 {
        cache.clear();
    }
    cache.insert(cache_key(&entry), Arc::clone(&model));
    Ok(model)
}

/// Two names can share a manifest (copies), and the model carries its name,
/// so the cache key is the name and the manifest digest.
fn cache_key(entry: &store::Entry) -> String {
    format!("{}@{}", entry.name, entry.digest)
}

fn read_model(
    store: &store::Store,
    entry: &store::Entry,
    raw: &str,
) -> Result<ResolvedModel, Error> {
    let m = &entry.manifest;
    let layer = m
        .layer(mf::MEDIA_MODEL)
        .ok_or_else(|| Error::NoWeights(raw.to_string()))?;
    let path = store.blob_path(&layer.digest);
    let gguf = Gguf::open(&path, false).ok();
    let text = template_text(store, m);
    let template_src = text
        .clone()
        .or_else(|| {
            gguf.as_ref()
                .and_then(Gguf::chat_template)
                .and_then(prompt::autodetect)
                .map(|k| k.template.to_string())
        })
        .unwrap_or_else(|| prompt::DEFAULT_TEMPLATE.to_string());
    let template = Template::parse(&template_src)
        .map_err(|e| Error::BrokenModel(format!("template of {raw}: {e}")))?;
    let caps = capabilities(gguf.as_ref(), Some(&template_src), m);
    let config: ConfigBlob = store.read_json(&m.config).unwrap_or_default();
    // A build without the vision feature treats the model as text-only.
    let projector = m
        .layer(mf::MEDIA_PROJECTOR)
        .filter(|_| crate::engine::VISION)
        .map(|l| l.digest.clone())
        .map(|d| store.blob_path(&d));
    Ok(ResolvedModel {
        name: entry.name.clone(),
        digest: entry.digest.clone(),
        path,
        template,
        system: m.layer(mf::MEDIA_SYSTEM).and_then(|l| store.read_text(l)),
        params: m
            .layer(mf::MEDIA_PARAMS)
            .and_then(|l| store.read_json(l))
            .unwrap_or_default(),
        messages: m
            .layer(mf::MEDIA_MESSAGES)
            .and_then(|l| store.read_json(l))
            .unwrap_or_default(),
        caps,
        ctx_train: config
            .context_length
            .or_else(|| gguf.as_ref().and_then(Gguf::context_length)),
        projector,
    })
}

pub fn merged_options(
    state: &AppState,
    model: &ResolvedModel,
    request: Option<&Map<String, Value>>,
) -> Result<Options, Error> {
    let mut o = Options::defaults(state.config.context_length);
    o.apply(&model.params)
        .map_err(|e| Error::Options(e.to_string()))?;
    if let Some(r) = request {
        // Upstream answers type errors in options with 500; a 400 is what it means.
        o.apply(r).map_err(|e| Error::Options(e.to_string()))?;
    }
    if model.projector.is_some() {
        // Ollama's floor for vision models: an image alone takes hundreds
        // of tokens.
        o.num_ctx = o.num_ctx.max(2048);
    }
    if let Some(train) = model.ctx_train {
        o.num_ctx = o.num_ctx.min(u32::try_from(train).unwrap_or(u32::MAX));
    }
    Ok(o)
}

pub fn load_key(model: &ResolvedModel, o: &Options) -> LoadKey {
    LoadKey {
        path: model.path.clone(),
        num_ctx: o.num_ctx,
        num_batch: o.num_batch,
        num_thread: o.num_thread,
        use_mmap: o.use_mmap.unwrap_or(true),
        embeddings: false,
        embed_seqs: 0,
        projector: model.projector.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;

    #[test]
    fn keep_alive_values() {
        let d = Some(Duration::from_secs(300));
        assert_eq!(parse_keep_alive(None, d).ok(), Some(d));
        assert_eq!(
            parse_keep_alive(Some(&json!(10)), d).ok(),
            Some(Some(Duration::from_secs(10)))
        );
        assert_eq!(parse_keep_alive(Some(&json!(-1)), d).ok(), Some(None));
        assert_eq!(
            parse_keep_alive(Some(&json!("1m")), d).ok(),
            Some(Some(Duration::from_secs(60)))
        );
        assert_eq!(
            parse_keep_alive(Some(&json!("0")), d).ok(),
            Some(Some(Duration::ZERO))
        );
        let err = parse_keep_alive(Some(&json!("300")), d).map_err(|e| e.to_string());
        assert_eq!(err, Err("time: missing unit in duration \"300\"".into()));
        assert!(parse_keep_alive(Some(&json!(true)), d).is_err());
    }
}
