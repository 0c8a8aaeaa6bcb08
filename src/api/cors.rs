//! CORS and the DNS-rebinding guard, as Ollama applies them.

use std::net::IpAddr;

use hyper::header::{HeaderValue, ACCESS_CONTROL_ALLOW_ORIGIN};
use hyper::{Response, StatusCode};

use super::body::Body;
use crate::config::Config;

/// What to do with a request before routing it.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not a cross-origin request, or an allowed one.
    Pass,
    /// Allowed origin; an OPTIONS request is a preflight.
    Preflight,
    /// Disallowed origin or Host: 403 with an empty body.
    Forbidden,
}

const BUILTIN: &[&str] = &[
    "http://localhost",
    "https://localhost",
    "http://localhost:*",
    "https://localhost:*",
    "http://127.0.0.1",
    "https://127.0.0.1",
    "http://127.0.0.1:*",
    "https://127.0.0.1:*",
    "http://0.0.0.0",
    "https://0.0.0.0",
    "http://0.0.0.0:*",
    "https://0.0.0.0:*",
    "app://*",
    "file://*",
    "tauri://*",
    "vscode-webview://*",
    "vscode-file://*",
];

fn matches(pattern: &str, origin: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == origin,
        Some((pre, post)) => {
            origin.len() >= pre.len() + post.len()
                && origin.starts_with(pre)
                && origin.ends_with(post)
        }
    }
}

fn origin_allowed(config: &Config, origin: &str) -> bool {
    config
        .origins
        .iter()
        .any(|p| p == "*" || matches(p, origin))
        || BUILTIN.iter().any(|p| matches(p, origin))
}

/// The machine's host name, read once.
fn hostname() -> &'static str {
    static NAME: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/etc/hostname")
            .or_else(|_| std::fs::read_to_string("/proc/sys/kernel/hostname"))
            .map(|h| h.trim().to_ascii_lowercase())
            .unwrap_or_default()
    })
}

/// The `Host` header's name, without a port, lower case.
fn host_name(host: &str) -> String {
    // Strip a port, keeping bracketed IPv6 literals whole.
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    name.to_ascii_lowercase()
}

/// On a LAN bind a web page's DNS name could be rebound to this box, so
/// the name must be one the box answers to: an IP literal, `localhost`,
/// this machine's name (with or without `.local`) or one listed in
/// `HEARTH_ALLOWED_HOSTS`.
fn lan_host_allowed(config: &Config, name: &str) -> bool {
    let me = hostname();
    name.parse::<IpAddr>().is_ok()
        || name == "localhost"
        || (!me.is_empty() && (name == me || name.strip_suffix(".local") == Some(me)))
        || config.allowed_hosts.iter().any(|h| h == name)
}

fn host_allowed(config: &Config, host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let name = host_name(host);
    if !config.bind.ip().is_loopback() {
        return lan_host_allowed(config, &name);
    }
    if config.allowed_hosts.contains(&name) {
        return true;
    }
    if name.is_empty()
        || name == "localhost"
        || [".localhost", ".local", ".internal"]
            .iter()
            .any(|s| name.ends_with(s))
    {
        return true;
    }
    match name.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => {
            ip.is_loopback() || ip.is_private() || ip.is_unspecified() || ip.is_link_local()
        }
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.is_unspecified() || (ip.segments()[0] & 0xfe00) == 0xfc00
        }
        Err(_) => !hostname().is_empty() && hostname() == name,
    }
}

/// Decides whether a request may proceed.
pub fn check(config: &Config, origin: Option<&HeaderValue>, host: Option<&HeaderValue>) -> Verdict {
    if !host_allowed(config, host) {
        return Verdict::Forbidden;
    }
    let Some(origin) = origin.and_then(|o| o.to_str().ok()) else {
        return Verdict::Pass;
    };
    if let Some(h) = host.and_then(|h| h.to_str().ok()) {
        if origin == format!("http://{h}") || origin == format!("https://{h}") {
            return Verdict::Pass;
        }
    }
    if origin_allowed(config, origin) {
        Verdict::Preflight
    } else {
        Verdict::Forbidden
    }
}

/// The answer to an allowed preflight.
pub fn preflight() -> Response<Body> {
    let mut r = Response::new(Body::Full(None));
    *r.status_mut() = StatusCode::NO_CONTENT;
    let h = r.headers_mut();
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET,POST,PUT,PATCH,DELETE,HEAD"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("43200"));
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static(
            "Authorization, Content-Type, User-Agent, Accept, X-Requested-With, OpenAI-Beta, \
             x-stainless-arch, x-stainless-async, x-stainless-custom-poll-interval, x-stainless-helper-method, \
             x-stainless-lang, x-stainless-os, x-stainless-package-version, x-stainless-poll-helper, \
             x-stainless-retry-count, x-stainless-runtime, x-stainless-runtime-version, x-stainless-timeout",
        ),
    );
    r
}

/// Adds the allow-origin header to a response for an allowed origin.
pub fn decorate(config: &Config, origin: &HeaderValue, resp: &mut Response<Body>) {
    if resp.status() == StatusCode::FORBIDDEN {
        return;
    }
    let value = if config.origins.iter().any(|o| o == "*") {
        HeaderValue::from_static("*")
    } else {
        origin.clone()
    };
    resp.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(matches("http://localhost:*", "http://localhost:3000"));
        assert!(matches("chrome-extension://*", "chrome-extension://abc"));
        assert!(!matches("http://localhost", "http://localhost.evil.com"));
        assert!(!matches("http://localhost:*", "http://evil.com"));
    }
}
