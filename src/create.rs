//! Model creation: turns a create request (uploaded GGUF files, or an
//! existing model plus overrides) into layers and a manifest.
//!
//! Validation that can fail fast runs in [`CreatePlan::new`], before the HTTP
//! response starts streaming; [`CreatePlan::run`] then reports progress through a
//! callback. Bytes on disk are the store's business; HTTP is the api's.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::convert;
use crate::engine::{self, Quant};
use crate::gguf::{self, Gguf};
use crate::model::ModelName;
use crate::options;
use crate::progress::Progress;
use crate::prompt::{self, KnownTemplate, Message};
use crate::store::manifest::{self as mf, ConfigBlob, Layer, Manifest};
use crate::store::{self, Digest, Store};
use crate::template::Template;

/// `POST /api/create`.
#[derive(Debug, Deserialize, Default)]
pub struct CreateRequest {
    /// New model name.
    #[serde(default)]
    pub model: String,
    /// Deprecated alias of `model`.
    #[serde(default)]
    pub name: String,
    /// Existing model to base on.
    #[serde(default)]
    pub from: Option<String>,
    /// Relative file name → digest of an uploaded blob.
    #[serde(default)]
    pub files: Option<Map<String, Value>>,
    /// LoRA adapters, like `files`.
    #[serde(default)]
    pub adapters: Option<Map<String, Value>>,
    /// Go template.
    #[serde(default)]
    pub template: Option<String>,
    /// System prompt.
    #[serde(default)]
    pub system: Option<String>,
    /// Options merged over the base model's.
    #[serde(default)]
    pub parameters: Option<Map<String, Value>>,
    /// Replaces the MESSAGE history.
    #[serde(default)]
    pub messages: Option<Vec<Message>>,
    /// One string or a list.
    #[serde(default)]
    pub license: Option<Value>,
    /// Target quantization.
    #[serde(default)]
    pub quantize: Option<String>,
    /// Deprecated alias of `quantize`.
    #[serde(default)]
    pub quantization: Option<String>,
    /// Defaults to true.
    #[serde(default)]
    pub stream: Option<bool>,
}

/// Why a create failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The name does not parse.
    #[error("invalid model name")]
    InvalidName,
    /// Neither a base model nor files.
    #[error("neither 'from' or 'files' was specified")]
    NothingToCreateFrom,
    /// A `files` key that could escape.
    #[error("file path must be relative")]
    PathNotRelative,
    /// A `files` value that is not a digest.
    #[error("invalid digest format")]
    InvalidDigest,
    /// A file the client named was never uploaded.
    #[error("blob {0} not found: upload it with POST /api/blobs/{0} first")]
    MissingBlob(String),
    /// The base model is not in the store.
    #[error("model \"{0}\" not found")]
    BaseNotFound(String),
    /// No files after all.
    #[error("no files provided to convert")]
    NoFiles,
    /// A file that is neither GGUF nor safetensors.
    #[error("supplied file was not in GGUF format")]
    NotGguf,
    /// Safetensors conversion failed (unsupported architecture, bad files).
    #[error(transparent)]
    Convert(#[from] convert::Error),
    /// More than one weights file.
    #[error("only one GGUF model file is supported, got {0}")]
    TooManyModels(usize),
    /// More than one adapter.
    #[error("only one adapter is currently supported")]
    TooManyAdapters,
    /// A GGUF that does not parse.
    #[error("invalid GGUF file {file}: {source}")]
    Gguf {
        /// The file name the client gave.
        file: String,
        /// What was wrong.
        source: gguf::Error,
    },
    /// A template that does not parse.
    #[error("template error: {0}")]
    Template(String),
    /// Bad parameters.
    #[error(transparent)]
    Parameters(#[from] options::Error),
    /// Bad license field.
    #[error("license must be a string or a list of strings")]
    BadLicense,
    /// Quantization of an already quantized model.
    #[error("quantization is only supported for F16, BF16 and F32 models")]
    QuantizeSource,
    /// A quantization type the quantizer does not offer.
    #[error(
        "unsupported quantization type {0} - supported types are F32, F16, Q4_K_S, Q4_K_M, Q8_0"
    )]
    QuantizeUnsupported(String),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// Our own failure.
    #[error("{0}")]
    Internal(String),
}

/// A validated create request, ready to run.
#[derive(Debug)]
pub struct CreatePlan {
    name: ModelName,
    base: Option<(ModelName, Manifest)>,
    files: Vec<(String, Digest)>,
    adapters: Vec<(String, Digest)>,
    template: Option<String>,
    system: Option<String>,
    parameters: Option<Map<String, Value>>,
    messages: Option<Vec<Message>>,
    licenses: Option<Vec<String>>,
    quantize: Option<Quant>,
}

/// What a create has gathered before its text layers and manifest.
struct Built {
    layers: Vec<Layer>,
    config: ConfigBlob,
    /// Parameters inherited from a `from` model.
    params: Map<String, Value>,
    /// The chat format recognised in a model given as files.
    detected: Option<KnownTemplate>,
}

impl CreatePlan {
    /// Checks everything that can be checked without reading weights.
    pub fn new(store: &Store, req: CreateRequest) -> Result<CreatePlan, Error> {
        let raw_name = if req.model.is_empty() {
            &req.name
        } else {
            &req.model
        };
        let name = ModelName::parse(raw_name).map_err(|_| Error::InvalidName)?;
        let files = digest_map(store, req.files.as_ref())?;
        let adapters = digest_map(store, req.adapters.as_ref())?;
        let base = match (&req.from, req.files.is_some()) {
            (Some(from), false) if !from.is_empty() => {
                let base_name =
                    ModelName::parse(from).map_err(|_| Error::BaseNotFound(from.clone()))?;
                let entry = store.entry(&base_name).map_err(|e| match e {
                    store::Error::ModelNotFound(_) => Error::BaseNotFound(from.clone()),
                    other => Error::Store(other),
                })?;
                Some((base_name, entry.manifest))
            }
            (_, true) => None,
            _ => return Err(Error::NothingToCreateFrom),
        };
        if base.is_none() && files.is_empty() {
            return Err(Error::NoFiles);
        }
        if adapters.len() > 1 {
            return Err(Error::TooManyAdapters);
        }
        if let Some(t) = &req.template {
            Template::parse(t).map_err(|e| Error::Template(e.to_string()))?;
        }
        let parameters = req
            .parameters
            .as_ref()
            .map(options::validate_parameters)
            .transpose()?;
        let licenses = match &req.license {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(vec![s.clone()]),
            Some(Value::Array(a)) => Some(
                a.iter()
                    .map(|v| v.as_str().map(str::to_string).ok_or(Error::BadLicense))
                    .collect::<Result<_, _>>()?,
            ),
            Some(_) => return Err(Error::BadLicense),
        };
        let quantize = match req.quantize.or(req.quantization).filter(|q| !q.is_empty()) {
            None => None,
            Some(q) => Some(Quant::parse(&q).ok_or(Error::QuantizeUnsupported(q))?),
        };
        if let (Some(_), Some((_, manifest))) = (quantize, &base) {
            // Refused before the answer streams, as for files.
            if !matches!(
                source_type(store, manifest).as_str(),
                "F16" | "BF16" | "F32"
            ) {
                return Err(Error::QuantizeSource);
            }
        }
        Ok(CreatePlan {
            name,
            base,
            files,
            adapters,
            template: req.template,
            system: req.system,
            parameters,
            messages: req.messages,
            licenses,
            quantize,
        })
    }

    /// The model being created.
    pub fn name(&self) -> &ModelName {
        &self.name
    }

    /// Builds the layers and writes the manifest, reporting progress.
    pub fn run(self, store: &Arc<Store>, progress: &mut dyn FnMut(Progress)) -> Result<(), Error> {
        // Every blob the new manifest will reference is pinned until the
        // manifest is written, so a concurrent upload cannot evict it.
        let mut pinned: Vec<Digest> = self
            .files
            .iter()
            .chain(&self.adapters)
            .map(|(_, d)| d.clone())
            .collect();
        if let Some((_, base)) = &self.base {
            pinned.extend(base.digests().cloned());
        }
        let mut pins = vec![store.pin(pinned)];
        let mut layers: Vec<Layer> = Vec::new();
        let mut config = ConfigBlob::default();
        let mut base_params = Map::new();
        // The chat format recognised in a model given as files, as Ollama
        // autodetects it (a `from` model keeps its own template).
        let mut detected = None;

        if let Some((base_name, manifest)) = &self.base {
            config = store.read_json(&manifest.config).unwrap_or_default();
            config.parent_model = base_name.display_short();
            if let Some(l) = manifest.layer(mf::MEDIA_PARAMS) {
                base_params = store.read_json(l).unwrap_or_default();
            }
            for l in &manifest.layers {
                progress(Progress::status(format!(
                    "using existing layer {}",
                    l.digest
                )));
                layers.push(l.clone());
            }
        } else {
            if self.files.iter().any(|(f, _)| f.ends_with(".safetensors")) {
                let converted = self.convert_safetensors(store, progress)?;
                let (digest, size) = &converted.model;
                let g =
                    Gguf::open(&store.blob_path(digest), false).map_err(|source| Error::Gguf {
                        file: "converted model".into(),
                        source,
                    })?;
                config = config_from_gguf(&g);
                detected = g.chat_template().and_then(prompt::autodetect);
                pins.push(store.pin(vec![digest.clone()]));
                layers.push(layer(mf::MEDIA_MODEL, digest, *size));
                if let Some((digest, size)) = &converted.projector {
                    pins.push(store.pin(vec![digest.clone()]));
                    layers.push(layer(mf::MEDIA_PROJECTOR, digest, *size));
                }
            } else {
                self.gguf_layers(store, &mut layers, &mut config, &mut detected, progress)?;
            }
        }
        // From files or from an existing model alike, as Ollama's create
        // quantizes the weights layer either way.
        if let Some(q) = self.quantize {
            self.quantize_model(store, q, &mut layers, &mut config, &mut pins, progress)?;
        }
        self.finish(
            store,
            progress,
            Built {
                layers,
                config,
                params: base_params,
                detected,
            },
            &mut pins,
        )
    }

    /// The layers of uploaded GGUF files: one weights file, adapters and
    /// projectors, classified by their headers.
    fn gguf_layers(
        &self,
        store: &Arc<Store>,
        layers: &mut Vec<Layer>,
        config: &mut ConfigBlob,
        detected: &mut Option<KnownTemplate>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), Error> {
        progress(Progress::status("parsing GGUF"));
        let mut models = Vec::new();
        for (file, digest) in &self.files {
            let path = store.blob_path(digest);
            let g = Gguf::open(&path, false).map_err(|e| match e {
                gguf::Error::NotGguf => Error::NotGguf,
                source => Error::Gguf {
                    file: file.clone(),
                    source,
                },
            })?;
            let media = classify(file, &g);
            if media == mf::MEDIA_MODEL {
                *config = config_from_gguf(&g);
                *detected = g.chat_template().and_then(prompt::autodetect);
                if self.quantize.is_some() {
                    let ft = g.file_type().map(gguf::file_type_name).unwrap_or("unknown");
                    if !matches!(ft, "F16" | "BF16" | "F32") {
                        return Err(Error::QuantizeSource);
                    }
                }
                models.push(file);
            }
            let size = std::fs::metadata(&path).map(|m| m.len()).map_err(|e| {
                Error::Store(store::Error::Io {
                    context: format!("stat {}", path.display()),
                    source: e,
                })
            })?;
            progress(Progress::status(format!("using existing layer {digest}")));
            store.touch_blob(digest);
            layers.push(layer(media, digest, size));
        }
        if models.len() > 1 {
            return Err(Error::TooManyModels(models.len()));
        }
        if models.is_empty() {
            return Err(Error::NoFiles);
        }
        Ok(())
    }

    /// Adds adapters and the text layers, writes the config and the manifest.
    fn finish(
        &self,
        store: &Arc<Store>,
        progress: &mut dyn FnMut(Progress),
        model: Built,
        pins: &mut Vec<store::Pin>,
    ) -> Result<(), Error> {
        let Built {
            mut layers,
            config,
            params: mut base_params,
            detected,
        } = model;
        for (_, digest) in &self.adapters {
            let size = std::fs::metadata(store.blob_path(digest))
                .map(|m| m.len())
                .unwrap_or(0);
            progress(Progress::status(format!("using existing layer {digest}")));
            layers.retain(|l| l.media_type != mf::MEDIA_ADAPTER);
            layers.push(layer(mf::MEDIA_ADAPTER, digest, size));
        }
        let mut layers = Layers {
            store,
            list: layers,
            pins,
        };
        let mut params_changed = self.parameters.is_some();
        if let Some(k) = detected {
            let status = format!("using autodetected template {}", k.name);
            layers.add_reported(
                mf::MEDIA_TEMPLATE,
                k.template.as_bytes(),
                progress,
                Some(status),
            )?;
            base_params.insert("stop".into(), json!(k.stop));
            if let Some(t) = k.temperature {
                base_params.insert("temperature".into(), json!(t));
            }
            params_changed = true;
        }
        if let Some(t) = &self.template {
            let kinds = [mf::MEDIA_TEMPLATE, mf::MEDIA_PROMPT];
            layers.replace(&kinds, mf::MEDIA_TEMPLATE, t.as_bytes(), progress)?;
        }
        // A recognised chat template that inserts a system prompt when a
        // conversation has none keeps it as the model's system layer.
        let default_system = match (detected, &self.system) {
            (Some(_), None) => layers
                .list
                .iter()
                .find(|l| l.media_type == mf::MEDIA_MODEL)
                .and_then(|l| Gguf::open(&store.blob_path(&l.digest), false).ok())
                .and_then(|g| g.chat_template().and_then(prompt::default_system)),
            _ => None,
        };
        if let Some(s) = self.system.as_ref().or(default_system.as_ref()) {
            layers.replace(
                &[mf::MEDIA_SYSTEM],
                mf::MEDIA_SYSTEM,
                s.as_bytes(),
                progress,
            )?;
        }
        if params_changed {
            for (k, v) in self.parameters.iter().flatten() {
                base_params.insert(k.clone(), v.clone());
            }
            let bytes =
                serde_json::to_vec(&base_params).map_err(|e| Error::Internal(e.to_string()))?;
            layers.replace(&[mf::MEDIA_PARAMS], mf::MEDIA_PARAMS, &bytes, progress)?;
        }
        if let Some(m) = &self.messages {
            let bytes = serde_json::to_vec(m).map_err(|e| Error::Internal(e.to_string()))?;
            layers.replace(&[mf::MEDIA_MESSAGES], mf::MEDIA_MESSAGES, &bytes, progress)?;
        }
        if let Some(licenses) = &self.licenses {
            layers.list.retain(|l| l.media_type != mf::MEDIA_LICENSE);
            for text in licenses {
                layers.add(mf::MEDIA_LICENSE, text.as_bytes(), progress)?;
            }
        }
        let layers = layers.list;

        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| Error::Internal(e.to_string()))?;
        let (config_digest, config_size) = store.put_bytes(&config_bytes)?;
        pins.push(store.pin(vec![config_digest.clone()]));
        let manifest = Manifest::new(
            Layer {
                media_type: mf::CONFIG_MEDIA_TYPE.to_string(),
                digest: config_digest.clone(),
                size: config_size,
                from: None,
                name: None,
            },
            layers,
        );
        progress(Progress::status("writing manifest"));
        store.write_manifest(&self.name, &manifest)?;
        progress(Progress::status("success"));
        Ok(())
    }

    /// Replaces the weights layer by a quantized copy made by llama.cpp's
    /// quantizer in the store's temp area.
    fn quantize_model(
        &self,
        store: &Arc<Store>,
        quant: Quant,
        layers: &mut [Layer],
        config: &mut ConfigBlob,
        pins: &mut Vec<store::Pin>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), Error> {
        let Some(weights) = layers.iter_mut().find(|l| l.media_type == mf::MEDIA_MODEL) else {
            return Err(Error::NoFiles);
        };
        let source = weights.digest.clone();
        let source_type = match config.file_type.as_str() {
            "" | "unknown" => weights_type(store, &source),
            known => known.to_string(),
        };
        if !matches!(source_type.as_str(), "F16" | "BF16" | "F32") {
            return Err(Error::QuantizeSource);
        }
        if source_type == quant.name() {
            return Ok(());
        }
        let status = format!("quantizing {source_type} model to {}", quant.name());
        let tmp = store.temp_path("quantize");
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let input = store.blob_path(&source);
        // llama.cpp's quantizer has no progress callback, but it writes the
        // output tensor by tensor: its growth against the expected size is
        // the progress, reported as Ollama does (over the source's size).
        let total = weights.size;
        let source_bits = match source_type.as_str() {
            "F32" => 32.0,
            _ => 16.0,
        };
        let expected = (total as f64 * quant.bits_per_weight() / source_bits).max(1.0);
        // The output grows in the temp area, outside the blob writers: its
        // size (a tenth more for the tensors llama.cpp keeps wider) is held
        // in the disk budget until the file is adopted, so a quantization
        // that cannot fit is refused before it writes.
        let room = store.reservation((expected * 1.1) as u64)?;
        let report = |completed: u64| Progress {
            status: status.clone(),
            digest: Some("0000000000000000000".into()),
            total: Some(total),
            completed: Some(completed),
        };
        progress(report(0));
        let result = std::thread::scope(|scope| {
            let job = scope.spawn(|| engine::quantize(&input, &tmp, quant, threads));
            while !job.is_finished() {
                std::thread::sleep(std::time::Duration::from_millis(250));
                let written = std::fs::metadata(&tmp).map_or(0, |m| m.len());
                let share = (written as f64 / expected).min(0.99);
                progress(report((share * total as f64) as u64));
            }
            job.join()
        });
        match result {
            Ok(Ok(())) => progress(report(total)),
            Ok(Err(e)) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Internal(e.to_string()));
            }
            Err(_) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::Internal("the quantizer panicked".into()));
            }
        }
        drop(room);
        let (digest, size, created) = store.adopt(&tmp)?;
        pins.push(store.pin(vec![digest.clone()]));
        let verb = if created {
            "creating new layer"
        } else {
            "using existing layer"
        };
        progress(Progress::status(format!("{verb} {digest}")));
        weights.digest = digest.clone();
        weights.size = size;
        config.file_type = quant.name().to_string();
        Ok(())
    }

    /// Converts the uploaded Safetensors files into a GGUF blob, streaming
    /// the output through the store's hashing writer; a multimodal
    /// checkpoint's vision tower and projector become a second blob.
    fn convert_safetensors(
        &self,
        store: &Arc<Store>,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Converted, Error> {
        let files: convert::Files = self
            .files
            .iter()
            .map(|(name, d)| (name.clone(), store.blob_path(d)))
            .collect();
        convert::detect(&files)?;
        // Checked before the long text conversion, so a broken vision
        // config fails fast.
        let with_projector = convert::has_projector(&files)?;
        progress(Progress::status("converting model"));
        let mut out = BlobOut(store.blob_writer(None, None)?);
        convert::convert(&files, &mut out, &mut |_| {}).map_err(convert_error)?;
        let model = finish_blob(out, progress)?;
        let projector = if with_projector {
            // Pinned while the projector is written, as the caller pins it
            // only afterwards.
            let _pin = store.pin(vec![model.0.clone()]);
            progress(Progress::status("converting vision projector"));
            let mut out = BlobOut(store.blob_writer(None, None)?);
            convert::convert_projector(&files, &mut out, &mut |_| {}).map_err(convert_error)?;
            Some(finish_blob(out, progress)?)
        } else {
            None
        };
        Ok(Converted { model, projector })
    }
}

/// The blobs a Safetensors conversion wrote: (digest, size) of the text
/// model and, for a multimodal checkpoint, of its vision projector.
struct Converted {
    model: (Digest, u64),
    projector: Option<(Digest, u64)>,
}

/// Finishes a converted blob and reports it as Ollama reports layers.
fn finish_blob(out: BlobOut, progress: &mut dyn FnMut(Progress)) -> Result<(Digest, u64), Error> {
    let (digest, size, created) = out.0.finish()?;
    let verb = if created {
        "creating new layer"
    } else {
        "using existing layer"
    };
    progress(Progress::status(format!("{verb} {digest}")));
    Ok((digest, size))
}

/// The store's blob writer as an `io::Write`, so the converter can stream
/// straight into a blob that is hashed as it grows.
struct BlobOut(store::BlobWriter);

impl std::io::Write for BlobOut {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(|e| match e {
            store::Error::Io { source, .. } => source,
            // Kept whole inside the io::Error, so `convert_error` can give
            // the store's refusal (budget, full disk) back as itself.
            other => std::io::Error::other(other),
        })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A conversion that failed because the store refused a write (the disk
/// budget, a full disk) failed on the store's account, not the model's:
/// the client then gets the store's status (507), not a 400.
fn convert_error(e: convert::Error) -> Error {
    match e {
        convert::Error::Io(io) if io.get_ref().is_some_and(|i| i.is::<store::Error>()) => {
            match io.into_inner().map(|b| b.downcast::<store::Error>()) {
                Some(Ok(refused)) => Error::Store(*refused),
                _ => Error::Internal("a store error was lost during conversion".into()),
            }
        }
        other => Error::Convert(other),
    }
}

/// Parses a `files`/`adapters` map into (relative path, digest) pairs whose blobs exist.
fn digest_map(
    store: &Store,
    map: Option<&Map<String, Value>>,
) -> Result<Vec<(String, Digest)>, Error> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (file, digest) in map {
        let path = std::path::Path::new(file);
        let relative = !file.is_empty()
            && path.is_relative()
            && !file.contains('\\')
            && path
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
        if !relative {
            return Err(Error::PathNotRelative);
        }
        let d = digest
            .as_str()
            .and_then(|s| Digest::parse(s).ok())
            .ok_or(Error::InvalidDigest)?;
        if !store.has_blob(&d) {
            return Err(Error::MissingBlob(d.to_string()));
        }
        out.push((file.clone(), d));
    }
    Ok(out)
}

/// Which layer a GGUF file becomes: adapter, projector or weights.
fn classify(file: &str, g: &Gguf) -> &'static str {
    match g.general_type() {
        Some("adapter") => mf::MEDIA_ADAPTER,
        Some("mmproj") | Some("projector") => mf::MEDIA_PROJECTOR,
        _ if file.to_ascii_lowercase().contains("mmproj") => mf::MEDIA_PROJECTOR,
        _ if g.architecture() == Some("clip") => mf::MEDIA_PROJECTOR,
        _ => mf::MEDIA_MODEL,
    }
}

/// The config blob Ollama writes for a GGUF model.
pub fn config_from_gguf(g: &Gguf) -> ConfigBlob {
    let arch = g.architecture().unwrap_or("unknown").to_string();
    ConfigBlob {
        model_format: "gguf".into(),
        model_family: arch.clone(),
        model_families: Some(vec![arch]),
        model_type: gguf::human_parameters(g.parameter_count()),
        file_type: g
            .file_type()
            .map(gguf::file_type_name)
            .unwrap_or("unknown")
            .to_string(),
        architecture: "amd64".into(),
        os: "linux".into(),
        parent_model: String::new(),
        context_length: g.context_length(),
        embedding_length: g.embedding_length(),
    }
}

/// The weights type of an existing model: its config's, or (for a config
/// that does not say) its GGUF's.
fn source_type(store: &Store, manifest: &Manifest) -> String {
    let config: ConfigBlob = store.read_json(&manifest.config).unwrap_or_default();
    match (config.file_type.as_str(), manifest.layer(mf::MEDIA_MODEL)) {
        ("" | "unknown", Some(l)) => weights_type(store, &l.digest),
        (known, _) => known.to_string(),
    }
}

/// The file type a GGUF blob's header names.
fn weights_type(store: &Store, digest: &Digest) -> String {
    Gguf::open(&store.blob_path(digest), false)
        .ok()
        .and_then(|g| g.file_type())
        .map_or("unknown", gguf::file_type_name)
        .to_string()
}

fn layer(media: &str, digest: &Digest, size: u64) -> Layer {
    Layer {
        media_type: media.to_string(),
        digest: digest.clone(),
        size,
        from: None,
        name: None,
    }
}

/// The layers being assembled, with pins on the blobs written for them.
struct Layers<'a> {
    store: &'a Arc<Store>,
    list: Vec<Layer>,
    pins: &'a mut Vec<store::Pin>,
}

impl Layers<'_> {
    /// Stores bytes as a blob, pins it, and reports it as Ollama does.
    fn add(
        &mut self,
        media: &str,
        bytes: &[u8],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), Error> {
        self.add_reported(media, bytes, progress, None)
    }

    /// `add`, reporting `status` instead of the usual layer line.
    fn add_reported(
        &mut self,
        media: &str,
        bytes: &[u8],
        progress: &mut dyn FnMut(Progress),
        status: Option<String>,
    ) -> Result<(), Error> {
        let existed = self.store.has_blob(&Digest::of(bytes));
        let (digest, size) = self.store.put_bytes(bytes)?;
        self.pins.push(self.store.pin(vec![digest.clone()]));
        let verb = if existed {
            "using existing layer"
        } else {
            "creating new layer"
        };
        progress(Progress::status(
            status.unwrap_or_else(|| format!("{verb} {digest}")),
        ));
        self.list.push(layer(media, &digest, size));
        Ok(())
    }

    /// Replaces the layers of the given kinds with one new layer.
    fn replace(
        &mut self,
        replaces: &[&str],
        media: &str,
        bytes: &[u8],
        progress: &mut dyn FnMut(Progress),
    ) -> Result<(), Error> {
        self.list
            .retain(|l| !replaces.contains(&l.media_type.as_str()));
        self.add(media, bytes, progress)
    }
}
