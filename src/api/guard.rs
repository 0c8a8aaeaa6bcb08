//! The checks in front of `route()`: API keys (which role a route needs,
//! 401 without a known key, 403 for an inference key on a management
//! route) and read-only mode (management refused for everyone). Refusals
//! are written in the shape the route's clients read: Ollama's
//! `{"error": ...}`, OpenAI's error object on `/v1`, Anthropic's on
//! `/v1/messages`, the registry's `{"errors": [...]}` on `/v2`.

use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, WWW_AUTHENTICATE};
use hyper::{Method, Response, StatusCode};
use serde_json::json;

use super::body::{response, Body};
use super::AppState;
use crate::access::Role;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: liveness, version and readiness.
    Open,
    /// Any key: running and reading models.
    Inference,
    /// An admin key: everything else.
    Admin,
}

/// The role a route needs, and whether it changes the store (a management
/// route, refused in read-only mode).
pub fn classify(method: &Method, path: &str) -> (Need, bool) {
    let read = *method == Method::GET || *method == Method::HEAD;
    match path {
        "/" | "/api/version" if read => (Need::Open, false),
        "/api/ready" if read => (Need::Open, false),
        "/api/tags" | "/api/ps" | "/api/status" | "/metrics" if read => (Need::Inference, false),
        "/api/generate" | "/api/chat" | "/api/embed" | "/api/embeddings" | "/api/show"
        | "/api/tokenize" | "/api/detokenize"
            if *method == Method::POST =>
        {
            (Need::Inference, false)
        }
        p if p.starts_with("/v1/") => (Need::Inference, false),
        p if p == "/v2" || p.starts_with("/v2/") => {
            if read {
                (Need::Inference, false)
            } else {
                (Need::Admin, true)
            }
        }
        "/api/create" | "/api/copy" | "/api/delete" | "/api/pull" | "/api/push" => {
            (Need::Admin, true)
        }
        p if p.starts_with("/api/blobs/") && *method == Method::POST => (Need::Admin, true),
        _ => (Need::Admin, false),
    }
}

/// The token a client presents: `Authorization: Bearer <key>` (Ollama's
/// and OpenAI's clients), or `x-api-key` (Anthropic's).
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let (scheme, token) = v.trim().split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Lets the request through (`None`) or answers it with 401 or 403.
pub fn check(
    state: &AppState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
) -> Option<Response<Body>> {
    let (need, management) = classify(method, path);
    if management && state.config.read_only {
        return Some(refuse(
            path,
            StatusCode::FORBIDDEN,
            "forbidden: this server is read-only (HEARTH_READ_ONLY); it runs models but does not change them",
        ));
    }
    if need == Need::Open {
        return None;
    }
    let keys = state.keys.current();
    if keys.is_empty() {
        return None;
    }
    match presented(headers).and_then(|t| keys.role_of(t)) {
        None => {
            let message = if presented(headers).is_some() {
                "unauthorized: the API key is not valid"
            } else {
                "unauthorized: this server requires an API key (Authorization: Bearer <key>)"
            };
            let mut r = refuse(path, StatusCode::UNAUTHORIZED, message);
            r.headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            Some(r)
        }
        Some(Role::Inference) if need == Need::Admin => Some(refuse(
            path,
            StatusCode::FORBIDDEN,
            "forbidden: this API key may only run and read models",
        )),
        Some(_) => None,
    }
}

/// A refusal in the shape the route's clients read.
fn refuse(path: &str, status: StatusCode, message: &str) -> Response<Body> {
    let unauthorized = status == StatusCode::UNAUTHORIZED;
    let body = if path.starts_with("/v1/messages") {
        let kind = if unauthorized {
            "authentication_error"
        } else {
            "permission_error"
        };
        json!({"type": "error", "error": {"type": kind, "message": message}})
    } else if path.starts_with("/v1/") {
        let code = if unauthorized {
            "invalid_api_key"
        } else {
            "insufficient_permissions"
        };
        json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": code}})
    } else if path == "/v2" || path.starts_with("/v2/") {
        let code = if unauthorized {
            "UNAUTHORIZED"
        } else {
            "DENIED"
        };
        json!({"errors": [{"code": code, "message": message}]})
    } else {
        json!({ "error": message })
    };
    response(status, "application/json; charset=utf-8", body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_roles_the_interface_names() {
        let (get, post, head, delete) = (Method::GET, Method::POST, Method::HEAD, Method::DELETE);
        for (m, p) in [
            (&get, "/"),
            (&head, "/"),
            (&get, "/api/version"),
            (&get, "/api/ready"),
        ] {
            assert_eq!(classify(m, p), (Need::Open, false), "{m} {p}");
        }
        for (m, p) in [
            (&post, "/api/generate"),
            (&post, "/api/chat"),
            (&post, "/api/embed"),
            (&post, "/api/embeddings"),
            (&get, "/api/tags"),
            (&post, "/api/show"),
            (&get, "/api/ps"),
            (&post, "/v1/chat/completions"),
            (&get, "/v1/models"),
            (&get, "/v2/library/m/manifests/latest"),
        ] {
            assert_eq!(classify(m, p), (Need::Inference, false), "{m} {p}");
        }
        for (m, p) in [
            (&post, "/api/create"),
            (&post, "/api/copy"),
            (&delete, "/api/delete"),
            (&post, "/api/pull"),
            (&post, "/api/push"),
            (&post, "/api/blobs/sha256:00"),
            (&Method::PUT, "/v2/library/m/manifests/latest"),
        ] {
            assert_eq!(classify(m, p), (Need::Admin, true), "{m} {p}");
        }
        assert_eq!(classify(&post, "/"), (Need::Admin, false));
        assert_eq!(
            classify(&head, "/api/blobs/sha256:00"),
            (Need::Admin, false)
        );
    }

    #[test]
    fn tokens_come_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, HeaderValue::from_static("Bearer  k1 "));
        assert_eq!(presented(&h), Some("k1"));
        h.insert(AUTHORIZATION, HeaderValue::from_static("Basic k1"));
        assert_eq!(presented(&h), None);
        let mut h = HeaderMap::new();
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(presented(&h), Some("k2"));
    }
}
