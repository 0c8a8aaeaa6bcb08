//! Model names: parsing, validation and the display forms Ollama uses.
//!
//! A [`ModelName`] can only hold a name whose parts pass Ollama's grammar, so
//! every part is safe to use as a path component: no `..`, no `/`, no
//! absolute paths. Finding the manifest on disk is the store's job.

use std::fmt;

/// The registry a bare name refers to.
pub const DEFAULT_HOST: &str = "registry.ollama.ai";
/// The namespace a bare name refers to.
pub const DEFAULT_NAMESPACE: &str = "library";
/// The tag a name without one refers to.
pub const DEFAULT_TAG: &str = "latest";

/// A fully qualified, validated model name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelName {
    /// Registry host, possibly with a port (`myhost:5000`).
    pub host: String,
    /// Namespace (`library`).
    pub namespace: String,
    /// Model (`gemma3`).
    pub model: String,
    /// Tag (`270m`).
    pub tag: String,
}

/// Why a name was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid model name")]
pub struct InvalidName;

impl ModelName {
    /// Parses `[scheme://][host/][namespace/]model[:tag]` with Ollama's defaults.
    pub fn parse(raw: &str) -> Result<ModelName, InvalidName> {
        let raw = raw.trim();
        let rest = raw
            .strip_prefix("https://")
            .or_else(|| raw.strip_prefix("http://"))
            .unwrap_or(raw);
        // The tag is split at the last ':' only if it comes after the last '/'.
        let (path, tag) = match (rest.rfind(':'), rest.rfind('/')) {
            (Some(c), Some(s)) if c > s => (&rest[..c], Some(&rest[c + 1..])),
            (Some(c), None) => (&rest[..c], Some(&rest[c + 1..])),
            _ => (rest, None),
        };
        let parts: Vec<&str> = path.split('/').collect();
        let (host, namespace, model) = match parts.as_slice() {
            [m] => (DEFAULT_HOST, DEFAULT_NAMESPACE, *m),
            [ns, m] => (DEFAULT_HOST, *ns, *m),
            [h, ns, m] => (*h, *ns, *m),
            _ => return Err(InvalidName),
        };
        let tag = tag.unwrap_or(DEFAULT_TAG);
        let ok = valid_part(host, 350, |c| c == '.' || c == ':' || c == '-')
            && valid_part(namespace, 80, |c| c == '-')
            && valid_part(model, 80, |c| c == '.' || c == '-')
            && valid_part(tag, 80, |c| c == '.' || c == '-');
        if !ok {
            return Err(InvalidName);
        }
        Ok(ModelName {
            host: host.to_string(),
            namespace: namespace.to_string(),
            model: model.to_string(),
            tag: tag.to_string(),
        })
    }

    /// The short form shown in `name`/`model` of list and ps: defaults left out, tag kept.
    pub fn display_short(&self) -> String {
        if !self.host.eq_ignore_ascii_case(DEFAULT_HOST) {
            format!(
                "{}/{}/{}:{}",
                self.host, self.namespace, self.model, self.tag
            )
        } else if !self.namespace.eq_ignore_ascii_case(DEFAULT_NAMESPACE) {
            format!("{}/{}:{}", self.namespace, self.model, self.tag)
        } else {
            format!("{}:{}", self.model, self.tag)
        }
    }

    /// The four path components of the manifest under `manifests/`.
    pub fn components(&self) -> [&str; 4] {
        [&self.host, &self.namespace, &self.model, &self.tag]
    }
}

/// The fully qualified form, used in capability errors.
impl fmt::Display for ModelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}:{}",
            self.host, self.namespace, self.model, self.tag
        )
    }
}

/// First char alphanumeric or `_`; the rest alphanumeric, `_` or `extra`.
fn valid_part(s: &str, max_len: usize, extra: impl Fn(char) -> bool) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    s.len() <= max_len
        && (first.is_ascii_alphanumeric() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || extra(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(raw: &str, expected: Option<(&str, &str, &str, &str)>) {
        let got = ModelName::parse(raw).ok();
        let got = got
            .as_ref()
            .map(|n| (&*n.host, &*n.namespace, &*n.model, &*n.tag));
        assert_eq!(got, expected, "{raw:?}");
    }

    #[test]
    fn parses_like_ollama() {
        let d = Some(("registry.ollama.ai", "library", "gemma3", "latest"));
        check("gemma3", d);
        check("gemma3:latest", d);
        check("library/gemma3", d);
        check("registry.ollama.ai/library/gemma3:latest", d);
        check("https://registry.ollama.ai/library/gemma3", d);
        check(
            "gemma3:270m",
            Some(("registry.ollama.ai", "library", "gemma3", "270m")),
        );
        check(
            "me/my-model:v1.2",
            Some(("registry.ollama.ai", "me", "my-model", "v1.2")),
        );
        check(
            "myhost:5000/ns/m",
            Some(("myhost:5000", "ns", "m", "latest")),
        );
        check(
            "Llama3.2",
            Some(("registry.ollama.ai", "library", "Llama3.2", "latest")),
        );
    }

    #[test]
    fn refuses_hostile_names() {
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "a/../b",
            "/abs",
            "ns/",
            "m:",
            ":tag",
            "a/b/c/d",
            "with space",
            "ns.dot/m",
            "m:.hidden",
            ".hidden",
            "a\\b",
            "m:../x",
            "m\0",
            "ünicode",
        ] {
            check(bad, None);
        }
        check(&"a".repeat(81), None);
    }

    #[test]
    fn display_forms() {
        let short = |raw: &str| ModelName::parse(raw).map(|n| n.display_short());
        assert_eq!(short("gemma3").as_deref(), Ok("gemma3:latest"));
        assert_eq!(short("me/m:v1").as_deref(), Ok("me/m:v1"));
        assert_eq!(short("h.io/ns/m").as_deref(), Ok("h.io/ns/m:latest"));
        let full = ModelName::parse("gemma3").map(|n| n.to_string());
        assert_eq!(
            full.as_deref(),
            Ok("registry.ollama.ai/library/gemma3:latest")
        );
    }
}
