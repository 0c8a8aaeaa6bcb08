//! Model management routes: tags, show, create, copy, delete.

use std::sync::Arc;

use hyper::body::Incoming;
use hyper::Response;
use serde_json::{Map, Value};

use super::body::{self, Body};
use super::types::{
    rfc3339, CopyRequest, CreateRequest, DeleteRequest, Details, Message, ModelList, ShowRequest,
    ShowResponse, TagsModel, TensorInfo,
};
use super::{blocking, AppState};
use crate::create::CreatePlan;
use crate::error::ApiError;
use crate::gguf::Gguf;
use crate::infer::model::{capabilities, template_text};
use crate::model::ModelName;
use crate::options;
use crate::prompt::DEFAULT_TEMPLATE;
use crate::store::manifest::{self as mf, ConfigBlob, Manifest};
use crate::store::{self, Store};

/// `details` as tags and show report them, from the config blob.
pub fn details(store: &Store, manifest: &Manifest) -> Details {
    let c: ConfigBlob = store.read_json(&manifest.config).unwrap_or_default();
    Details {
        parent_model: c.parent_model,
        format: c.model_format,
        family: c.model_family,
        families: c.model_families,
        parameter_size: c.model_type,
        quantization_level: c.file_type,
    }
}

/// `GET /api/tags`.
pub async fn tags(state: &Arc<AppState>) -> Result<Response<Body>, ApiError> {
    let store = Arc::clone(&state.store);
    let models = blocking(move || {
        let entries = store.list()?;
        Ok(entries
            .into_iter()
            .map(|e| TagsModel {
                name: e.name.display_short(),
                model: e.name.display_short(),
                modified_at: rfc3339(e.modified),
                size: e.manifest.total_size(),
                digest: e.digest.clone(),
                details: details(&store, &e.manifest),
            })
            .collect::<Vec<_>>())
    })
    .await?;
    body::json(&ModelList { models })
}

/// `POST /api/show`.
pub async fn show(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: ShowRequest = body::read_json(body).await?;
    let raw = if req.model.is_empty() {
        req.name.clone()
    } else {
        req.model.clone()
    };
    if raw.is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    let name = ModelName::parse(&raw)?;
    let store = Arc::clone(&state.store);
    let value = blocking(move || {
        let entry = store.entry(&name).map_err(|e| match e {
            store::Error::ModelNotFound(_) => {
                ApiError::NotFound(format!("model '{}' not found", name.display_short()))
            }
            other => ApiError::Store(other),
        })?;
        show_value(&store, &entry, &req)
    })
    .await?;
    body::json(&value)
}

fn show_value(
    store: &Store,
    entry: &store::Entry,
    req: &ShowRequest,
) -> Result<ShowResponse, ApiError> {
    let m = &entry.manifest;
    let texts = |media: &str| -> Vec<String> {
        m.layers
            .iter()
            .filter(|l| l.media_type == media)
            .filter_map(|l| store.read_text(l))
            .collect()
    };
    let model_layer = m.layer(mf::MEDIA_MODEL);
    let gguf = model_layer
        .map(|l| l.digest.clone())
        .and_then(|d| Gguf::open(&store.blob_path(&d), req.verbose).ok());
    let template = template_text(store, m);
    let system = req
        .system
        .clone()
        .or_else(|| texts(mf::MEDIA_SYSTEM).into_iter().next());
    let params: Map<String, Value> = m
        .layer(mf::MEDIA_PARAMS)
        .and_then(|l| store.read_json(l))
        .unwrap_or_default();
    let messages: Vec<Message> = m
        .layer(mf::MEDIA_MESSAGES)
        .and_then(|l| store.read_json(l))
        .unwrap_or_default();
    let licenses = texts(mf::MEDIA_LICENSE);

    let modelfile = modelfile(
        entry,
        template.as_deref(),
        system.as_deref(),
        &params,
        &messages,
        &licenses,
    );
    let model_info = gguf
        .as_ref()
        .map(|g| g.model_info(req.verbose))
        .unwrap_or_default();
    // Ollama shows the first projector's metadata, like `model_info`.
    let projector_info = m
        .layer(mf::MEDIA_PROJECTOR)
        .map(|l| l.digest.clone())
        .and_then(|d| Gguf::open(&store.blob_path(&d), req.verbose).ok())
        .map(|p| p.model_info(req.verbose));
    let tensors = match (&gguf, req.verbose) {
        (Some(g), true) => Some(
            g.tensors
                .iter()
                .map(|t| TensorInfo {
                    name: t.name.clone(),
                    kind: crate::gguf::ggml_type_name(t.ggml_type),
                    shape: t.shape.clone(),
                })
                .collect(),
        ),
        _ => None,
    };
    Ok(ShowResponse {
        license: (!licenses.is_empty()).then(|| licenses.join("\n")),
        modelfile,
        parameters: (!params.is_empty()).then(|| options::show_parameters(&params)),
        capabilities: capabilities(gguf.as_ref(), template.as_deref(), m),
        template: Some(template.unwrap_or_else(|| DEFAULT_TEMPLATE.to_string())),
        system,
        details: details(store, m),
        messages: (!messages.is_empty()).then_some(messages),
        model_info,
        projector_info,
        tensors,
        modified_at: rfc3339(entry.modified),
    })
}

/// A Modelfile value as Ollama writes it (`quote` in its
/// `parser/parser.go`, v0.33): bare unless it holds a newline or starts or
/// ends with a space; then in `\"\"\"` when it holds a quote, else in `"`.
fn modelfile_quote(v: &str) -> String {
    if !v.contains('\n') && v.trim() == v {
        v.to_string()
    } else if v.contains('"') {
        format!("\"\"\"{v}\"\"\"")
    } else {
        format!("\"{v}\"")
    }
}

/// The Modelfile `ollama show --modelfile` prints, without store paths.
fn modelfile(
    entry: &store::Entry,
    template: Option<&str>,
    system: Option<&str>,
    params: &Map<String, Value>,
    messages: &[Message],
    licenses: &[String],
) -> String {
    let mut s = String::from("# Modelfile generated by \"ollama show\"\n# To build a new Modelfile based on this, replace FROM with:\n");
    s.push_str(&format!("# FROM {}\n\n", entry.name.display_short()));
    // The store's paths stay on the box (a LAN client learns nothing of its
    // file system): the weights are named by the model, projectors and
    // adapters by their content digests.
    s.push_str(&format!("FROM {}\n", entry.name.display_short()));
    for l in &entry.manifest.layers {
        match l.media_type.as_str() {
            mf::MEDIA_PROJECTOR => s.push_str(&format!("FROM {}\n", l.digest)),
            mf::MEDIA_ADAPTER => s.push_str(&format!("ADAPTER {}\n", l.digest)),
            _ => {}
        }
    }
    // Every model has a template: without a layer it is `{{ .Prompt }}`.
    let template = template.unwrap_or(DEFAULT_TEMPLATE);
    s.push_str(&format!("TEMPLATE {}\n", modelfile_quote(template)));
    if let Some(sys) = system {
        s.push_str(&format!("SYSTEM {}\n", modelfile_quote(sys)));
    }
    for (k, v) in params {
        let values: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            other => vec![other],
        };
        for v in values {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            s.push_str(&format!("PARAMETER {k} {text}\n"));
        }
    }
    for l in licenses {
        s.push_str(&format!("LICENSE \"\"\"{l}\"\"\"\n"));
    }
    for m in messages {
        s.push_str(&format!("MESSAGE {} \"\"\"{}\"\"\"\n", m.role, m.content));
    }
    s
}

/// `POST /api/create`: validates up front, then streams progress (or answers once).
pub async fn create(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: CreateRequest = body::read_json(body).await?;
    let stream = req.stream.unwrap_or(true);
    let store = Arc::clone(&state.store);
    let plan = {
        let store = Arc::clone(&store);
        blocking(move || Ok(CreatePlan::new(&store, req)?)).await?
    };
    log::info!("creating model {}", plan.name().display_short());
    super::progress_job(stream, "create", move |progress| {
        Ok(plan.run(&store, progress)?)
    })
    .await
}

/// `POST /api/copy`.
pub async fn copy(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: CopyRequest = body::read_json(body).await?;
    let src = ModelName::parse(&req.source)
        .map_err(|_| ApiError::BadRequest(format!("source \"{}\" is invalid", req.source)))?;
    let dst = ModelName::parse(&req.destination).map_err(|_| {
        ApiError::BadRequest(format!("destination \"{}\" is invalid", req.destination))
    })?;
    let store = Arc::clone(&state.store);
    blocking(move || {
        store.copy(&src, &dst).map_err(|e| match e {
            store::Error::ModelNotFound(_) => {
                ApiError::NotFound(format!("model \"{}\" not found", req.source))
            }
            other => ApiError::Store(other),
        })
    })
    .await?;
    Ok(body::empty_ok())
}

/// `DELETE /api/delete`.
pub async fn delete(state: &Arc<AppState>, body: Incoming) -> Result<Response<Body>, ApiError> {
    let req: DeleteRequest = body::read_json(body).await?;
    let raw = if req.model.is_empty() {
        req.name
    } else {
        req.model
    };
    let name = ModelName::parse(&raw)
        .map_err(|_| ApiError::BadRequest(format!("name \"{raw}\" is invalid")))?;
    let store = Arc::clone(&state.store);
    blocking(move || {
        store.delete(&name).map_err(|e| match e {
            store::Error::ModelNotFound(_) => {
                ApiError::NotFound(format!("model '{raw}' not found"))
            }
            other => ApiError::Store(other),
        })
    })
    .await?;
    Ok(body::empty_ok())
}
