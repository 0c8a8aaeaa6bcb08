//! The one place that turns errors into HTTP status codes and Ollama's
//! `{"error": "..."}` bodies, before and after streaming starts.

use hyper::StatusCode;

use crate::registry::{pull, push};
use crate::{create, infer, model, registry, scheduler, store};

/// Any error a request can end in.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// A model, blob or route that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The body is over the limit.
    #[error("request body too large: the limit is {limit} bytes")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Something on our side failed; the detail is logged.
    #[error("{0}")]
    Internal(String),
    /// From the store.
    #[error(transparent)]
    Store(#[from] store::Error),
    /// From model creation.
    #[error(transparent)]
    Create(#[from] create::Error),
    /// From the inference layer (resolution, options, images).
    #[error(transparent)]
    Infer(#[from] infer::Error),
    /// From the scheduler (queue full, load failure).
    #[error(transparent)]
    Schedule(#[from] scheduler::Error),
    /// From a registry pull.
    #[error(transparent)]
    Pull(#[from] pull::Error),
    /// From a registry push.
    #[error(transparent)]
    Push(#[from] push::Error),
    /// A `/v2/` registry write the registry refuses (a manifest naming a
    /// blob it lacks, a bad digest); answered, with 400, in the registry
    /// protocol's `{"errors": [...]}` shape.
    #[error("{message}")]
    RegistryInvalid {
        /// `MANIFEST_BLOB_UNKNOWN`, `DIGEST_INVALID`, `MANIFEST_INVALID`, ...
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A `/v2/` registry lookup that found nothing; answered in the registry
    /// protocol's `{"errors": [...]}` shape rather than Ollama's.
    #[error("{message}")]
    RegistryUnknown {
        /// `MANIFEST_UNKNOWN`, `BLOB_UNKNOWN` or `NAME_UNKNOWN`.
        code: &'static str,
        /// What was not found.
        message: String,
    },
    /// A `/v2/` registry request the registry refuses; answered in the
    /// registry protocol's `{"errors": [...]}` shape.
    #[error(transparent)]
    Registry(#[from] registry::serve::Error),
    /// A route hearth knows but does not implement.
    #[error("{0}")]
    NotImplemented(String),
}

impl From<model::InvalidName> for ApiError {
    fn from(e: model::InvalidName) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl From<store::InvalidDigest> for ApiError {
    fn from(e: store::InvalidDigest) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl ApiError {
    /// The status Ollama uses for this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Store(e) => store_status(e),
            ApiError::Infer(e) => match e {
                infer::Error::ModelNotFound(_) | infer::Error::EmbedModelNotFound(_) => {
                    StatusCode::NOT_FOUND
                }
                infer::Error::NoWeights(_)
                | infer::Error::Unsupported { .. }
                | infer::Error::Format(_)
                | infer::Error::Think(_)
                | infer::Error::TopLogprobs
                | infer::Error::RawWithTemplate
                | infer::Error::ModelRequired
                | infer::Error::Template(_)
                | infer::Error::TooLong(_)
                | infer::Error::EmptyInput
                | infer::Error::BadToken(_)
                | infer::Error::KeepAlive(_)
                | infer::Error::Options(_)
                | infer::Error::Image(_) => StatusCode::BAD_REQUEST,
                infer::Error::BrokenModel(_) | infer::Error::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                infer::Error::Store(s) => store_status(s),
                infer::Error::Schedule(scheduler::Error::Busy) => StatusCode::SERVICE_UNAVAILABLE,
                infer::Error::Schedule(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Schedule(scheduler::Error::Busy) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Schedule(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Pull(e) => match e {
                pull::Error::Name(_) | pull::Error::InsecureProtocol => StatusCode::BAD_REQUEST,
                pull::Error::ManifestNotFound => StatusCode::NOT_FOUND,
                pull::Error::ManifestAuth(a) if a.is_refusal() => StatusCode::UNAUTHORIZED,
                pull::Error::Store(s) => store_status(s),
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Push(e) => match e {
                push::Error::Name(_) | push::Error::InsecureProtocol => StatusCode::BAD_REQUEST,
                push::Error::Store(s) => store_status(s),
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::RegistryUnknown { .. } => StatusCode::NOT_FOUND,
            ApiError::RegistryInvalid { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Registry(e) => match e {
                registry::serve::Error::UploadUnknown(_)
                | registry::serve::Error::ManifestUnknown(_) => StatusCode::NOT_FOUND,
                registry::serve::Error::TooManyUploads => StatusCode::TOO_MANY_REQUESTS,
                registry::serve::Error::Store(s) => store_status(s),
                _ => StatusCode::BAD_REQUEST,
            },
            ApiError::Create(e) => match e {
                create::Error::Store(s) => store_status(s),
                create::Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
                create::Error::BaseNotFound(_) => StatusCode::NOT_FOUND,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    /// The JSON body, `{"error": "..."}`.
    pub fn body(&self) -> String {
        if self.status().is_server_error() {
            log::error!("{self}");
        }
        if let ApiError::RegistryUnknown { code, message }
        | ApiError::RegistryInvalid { code, message } = self
        {
            return serde_json::json!({ "errors": [{ "code": code, "message": message }] })
                .to_string();
        }
        if let ApiError::Registry(e) = self {
            let message = e.to_string();
            return serde_json::json!({ "errors": [{ "code": e.code(), "message": message }] })
                .to_string();
        }
        error_json(&self.to_string())
    }
}

fn store_status(e: &store::Error) -> StatusCode {
    match e {
        store::Error::QuotaExceeded { .. } | store::Error::DiskFull => {
            StatusCode::INSUFFICIENT_STORAGE
        }
        store::Error::DigestMismatch { .. } | store::Error::BlobNotFound(_) => {
            StatusCode::BAD_REQUEST
        }
        store::Error::ModelNotFound(_) => StatusCode::NOT_FOUND,
        store::Error::Io { .. } | store::Error::BadManifest { .. } => {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}

/// `{"error": msg}` as a string; also the in-stream form, one NDJSON line.
pub fn error_json(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}
