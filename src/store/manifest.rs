//! The manifest format (Docker image manifest v2, as Ollama writes it) and
//! the config blob that goes with it.

use serde::{Deserialize, Serialize};

use super::Digest;

/// Media type of a manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Media type of the config blob.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
/// GGUF weights.
pub const MEDIA_MODEL: &str = "application/vnd.ollama.image.model";
/// Multimodal projector GGUF.
pub const MEDIA_PROJECTOR: &str = "application/vnd.ollama.image.projector";
/// LoRA adapter GGUF.
pub const MEDIA_ADAPTER: &str = "application/vnd.ollama.image.adapter";
/// Go template text.
pub const MEDIA_TEMPLATE: &str = "application/vnd.ollama.image.template";
/// Legacy alias of the template layer.
pub const MEDIA_PROMPT: &str = "application/vnd.ollama.image.prompt";
/// System prompt text.
pub const MEDIA_SYSTEM: &str = "application/vnd.ollama.image.system";
/// JSON object of options.
pub const MEDIA_PARAMS: &str = "application/vnd.ollama.image.params";
/// JSON array of messages.
pub const MEDIA_MESSAGES: &str = "application/vnd.ollama.image.messages";
/// License text.
pub const MEDIA_LICENSE: &str = "application/vnd.ollama.image.license";

/// A manifest file as it sits under `manifests/`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Always 2.
    pub schema_version: u32,
    /// [`MANIFEST_MEDIA_TYPE`].
    #[serde(default)]
    pub media_type: String,
    /// The config blob.
    pub config: Layer,
    /// Weights, template, system prompt and friends.
    #[serde(default)]
    pub layers: Vec<Layer>,
}

/// One layer (or the config) of a manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Layer {
    /// What the blob holds.
    pub media_type: String,
    /// The blob's digest (`sha256:<hex>` in JSON).
    pub digest: Digest,
    /// Blob size in bytes.
    pub size: u64,
    /// Source model, used for cross-repo mounts on push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// Tensor layers only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Manifest {
    /// A manifest with the given config and layers.
    pub fn new(config: Layer, layers: Vec<Layer>) -> Manifest {
        Manifest {
            schema_version: 2,
            media_type: MANIFEST_MEDIA_TYPE.to_string(),
            config,
            layers,
        }
    }

    /// The first layer with this media type.
    pub fn layer(&self, media_type: &str) -> Option<&Layer> {
        self.layers.iter().find(|l| l.media_type == media_type)
    }

    /// All digests this manifest keeps alive, config included.
    pub fn digests(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.config.digest).chain(self.layers.iter().map(|l| &l.digest))
    }

    /// Sum of all layer sizes plus the config size, as `/api/tags` reports.
    pub fn total_size(&self) -> u64 {
        // Saturating: the sizes are read from disk or a registry.
        self.layers
            .iter()
            .fold(self.config.size, |sum, l| sum.saturating_add(l.size))
    }
}

/// The config blob (`model_format`, `model_family` ...).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConfigBlob {
    /// `gguf`.
    #[serde(default)]
    pub model_format: String,
    /// Architecture family, e.g. `gemma3`.
    #[serde(default)]
    pub model_family: String,
    /// Families (usually one).
    #[serde(default)]
    pub model_families: Option<Vec<String>>,
    /// Human parameter count, e.g. `268.10M`.
    #[serde(default)]
    pub model_type: String,
    /// Quantization name, e.g. `Q4_K_M`.
    #[serde(default)]
    pub file_type: String,
    /// Always `amd64`, whatever the host.
    #[serde(default)]
    pub architecture: String,
    /// Always `linux`.
    #[serde(default)]
    pub os: String,
    /// Name of the model this one was created from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent_model: String,
    /// Training context length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_length: Option<u64>,
    /// Embedding width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding_length: Option<u64>,
}
