//! Wire types: the JSON shapes of requests and responses, with Ollama's
//! field names. The ones that modules below `api` also need live with them
//! and are re-exported here: `Message` (`prompt`), `Progress` (`progress`),
//! `CreateRequest` (`create`) and the generate and chat requests (`infer`).

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use crate::create::CreateRequest;
pub use crate::infer::request::{ChatRequest, GenerateRequest};
pub use crate::progress::Progress;
pub use crate::prompt::Message;

/// `POST /api/show`.
#[derive(Debug, Deserialize, Default)]
pub struct ShowRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Deprecated alias.
    #[serde(default)]
    pub name: String,
    /// Full arrays in `model_info`.
    #[serde(default)]
    pub verbose: bool,
    /// Overrides the system prompt shown.
    #[serde(default)]
    pub system: Option<String>,
}

/// `POST /api/copy`.
#[derive(Debug, Deserialize, Default)]
pub struct CopyRequest {
    /// Existing model.
    #[serde(default)]
    pub source: String,
    /// New name.
    #[serde(default)]
    pub destination: String,
}

/// `DELETE /api/delete`.
#[derive(Debug, Deserialize, Default)]
pub struct DeleteRequest {
    /// The model.
    #[serde(default)]
    pub model: String,
    /// Deprecated alias.
    #[serde(default)]
    pub name: String,
}

/// `details` of tags, show and ps.
#[derive(Debug, Serialize, Clone, Default)]
pub struct Details {
    /// Model this one was created from.
    pub parent_model: String,
    /// `gguf`.
    pub format: String,
    /// Architecture.
    pub family: String,
    /// Architectures.
    pub families: Option<Vec<String>>,
    /// e.g. `268.10M`.
    pub parameter_size: String,
    /// e.g. `Q4_K_M`.
    pub quantization_level: String,
}

/// One model of `GET /api/tags`.
#[derive(Debug, Serialize)]
pub struct TagsModel {
    /// Short name.
    pub name: String,
    /// Short name again.
    pub model: String,
    /// Manifest mtime.
    pub modified_at: String,
    /// Bytes of all layers.
    pub size: u64,
    /// sha256 of the manifest bytes.
    pub digest: String,
    /// From the config blob.
    pub details: Details,
}

/// Formats a time as RFC 3339 in UTC with nanoseconds, like Go's `time.Time`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm), valid for any year >= 1970.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        let t = UNIX_EPOCH + Duration::new(1_787_000_000, 5);
        assert_eq!(rfc3339(t), "2026-08-17T20:53:20.000000005Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        // Far-future expiry for keep_alive forever must not overflow.
        let far = UNIX_EPOCH + Duration::from_secs(10_960_000_000);
        assert!(rfc3339(far).starts_with("2317-"));
    }
}
