//! Config: the one place that reads the environment.
//!
//! Every other module receives a [`Config`] value; tests build one by hand
//! instead of touching process-wide environment variables.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::access::Secret;
use crate::engine::KvType;

/// Ollama's default port.
pub const DEFAULT_PORT: u16 = 11434;

/// Ollama's smallest download part, 100 MB.
pub const DEFAULT_PULL_PART_BYTES: u64 = 100_000_000;

/// Everything `hearth serve` needs to know, parsed once at start-up.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the server listens (`OLLAMA_HOST`).
    pub bind: SocketAddr,
    /// Store root (`OLLAMA_MODELS`).
    pub models_dir: PathBuf,
    /// Extra CORS origins (`OLLAMA_ORIGINS`).
    pub origins: Vec<String>,
    /// Store budget in bytes (`HEARTH_MAX_DISK`); `None` means the filesystem is the limit.
    pub max_disk_bytes: Option<u64>,
    /// Memory budget for the process and its models (`HEARTH_MAX_MEMORY`);
    /// `None`: what the machine has available at start, less a margin.
    pub max_memory_bytes: Option<u64>,
    /// Default keep-alive (`OLLAMA_KEEP_ALIVE`); `None` means forever.
    pub keep_alive: Option<Duration>,
    /// Default context length per sequence (`OLLAMA_CONTEXT_LENGTH`).
    pub context_length: u32,
    /// Parallel sequences per model (`OLLAMA_NUM_PARALLEL`).
    pub num_parallel: u32,
    /// Models loaded at once (`OLLAMA_MAX_LOADED_MODELS`).
    pub max_loaded_models: usize,
    /// Requests waiting for a model before 503 (`OLLAMA_MAX_QUEUE`).
    pub max_queue: usize,
    /// Cores all inference shares (`HEARTH_THREADS`, default: available cores).
    pub threads: usize,
    /// Skip blob pruning at start-up (`OLLAMA_NOPRUNE`).
    pub noprune: bool,
    /// Log detail (`OLLAMA_DEBUG`): 0 info, 1 debug, 2 trace (llama.cpp's own log).
    pub debug_level: u8,
    /// Serve the registry read endpoints under `/v2/` (`HEARTH_SERVE_REGISTRY`),
    /// so other boxes can pull this box's models.
    pub serve_registry: bool,
    /// KV cache element type (`OLLAMA_KV_CACHE_TYPE`: f16, q8_0, q4_0).
    pub kv_cache_type: KvType,
    /// Flash attention (`OLLAMA_FLASH_ATTENTION`); unset lets llama.cpp
    /// decide (on for CPUs).
    pub flash_attention: Option<bool>,
    /// Where the ed25519 key that signs registry token requests lives
    /// (`$HOME/.ollama`, as Ollama keeps `id_ed25519` there).
    pub key_dir: PathBuf,
    /// The smallest part of a parted blob download (`HEARTH_PULL_PART_SIZE`,
    /// default 100 MB, Ollama's minimum); blobs up to this size download
    /// as one stream. Small values are for tests and flaky links.
    pub pull_part_bytes: u64,
    /// Admin API keys (`HEARTH_API_KEYS`, comma-separated).
    pub api_keys: Vec<Secret>,
    /// Inference-only API keys (`HEARTH_INFERENCE_KEYS`).
    pub inference_keys: Vec<Secret>,
    /// A file of keys with roles (`HEARTH_API_KEYS_FILE`), re-read on SIGHUP.
    pub api_keys_file: Option<PathBuf>,
    /// Management routes refused for everyone (`HEARTH_READ_ONLY`).
    pub read_only: bool,
    /// Host names a LAN bind answers besides IP literals, `localhost` and
    /// this machine's name (`HEARTH_ALLOWED_HOSTS`, comma-separated).
    pub allowed_hosts: Vec<String>,
    /// PEM certificate chain and key for HTTPS (`HEARTH_TLS_CERT`,
    /// `HEARTH_TLS_KEY`); both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// A CA (PEM) that pulls and pushes trust besides the web roots
    /// (`HEARTH_TLS_CA`), for boxes with certificates of a private CA.
    pub tls_ca: Option<PathBuf>,
    /// API keys of other hearth boxes, sent on pulls from and pushes to
    /// them (`HEARTH_REGISTRY_KEYS=host:port=key,...`).
    pub registry_keys: Vec<(String, Secret)>,
    /// How long a connection may sit without sending a whole request head,
    /// before its first request or between keep-alive requests
    /// (`HEARTH_IDLE_TIMEOUT`, default 30 s).
    pub idle_timeout: Duration,
    /// How long a write to a client may make no progress before the
    /// connection is dropped and its generation stopped
    /// (`HEARTH_WRITE_TIMEOUT`, default 30 s): a client that stops reading
    /// frees its slot.
    pub write_timeout: Duration,
    /// Connections open at once (`HEARTH_MAX_CONNECTIONS`; default from the
    /// file-descriptor limit); one client address may hold half of them.
    pub max_connections: Option<usize>,
}

impl Config {
    /// The API key to send to the registry at `host` (`host[:port]`).
    pub fn registry_key(&self, host: &str) -> Option<String> {
        self.registry_keys
            .iter()
            .find(|(h, _)| h.eq_ignore_ascii_case(host))
            .map(|(_, k)| k.0.clone())
    }
}

impl Config {
    /// Reads the process environment, warning about (and ignoring) values
    /// that do not parse, as Ollama does.
    pub fn from_env() -> Config {
        let var = |k: &str| {
            std::env::var(k)
                .ok()
                .map(|v| clean(&v))
                .filter(|v| !v.is_empty())
        };
        let key_dir = ollama_home();
        let models_dir = var("OLLAMA_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| key_dir.join("models"));
        let bind = parse_host(var("OLLAMA_HOST").as_deref().unwrap_or(""));
        let origins = var("OLLAMA_ORIGINS")
            .map(|v| v.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        let max_disk_bytes = var("HEARTH_MAX_DISK").and_then(|v| {
            let parsed = parse_size(&v);
            if parsed.is_none() {
                log::warn!("HEARTH_MAX_DISK={v:?} is not a size such as 8GB; no budget set");
            }
            parsed
        });
        let max_memory_bytes = var("HEARTH_MAX_MEMORY").and_then(|v| {
            let parsed = parse_size(&v);
            if parsed.is_none() {
                log::warn!("HEARTH_MAX_MEMORY={v:?} is not a size such as 2GB; using the default");
            }
            parsed
        });
        let keep_alive = match var("OLLAMA_KEEP_ALIVE") {
            None => Some(Duration::from_secs(300)),
            Some(v) => match parse_env_keep_alive(&v) {
                Some(k) => k,
                None => {
                    log::warn!("OLLAMA_KEEP_ALIVE={v:?} is not a duration; using 5m");
                    Some(Duration::from_secs(300))
                }
            },
        };
        let num = |k: &str, default: u64| -> u64 {
            match var(k) {
                None => default,
                Some(v) => v.parse().unwrap_or_else(|_| {
                    log::warn!("{k}={v:?} is not a number; using {default}");
                    default
                }),
            }
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let context_length = match num("OLLAMA_CONTEXT_LENGTH", 0) {
            0 => 4096,
            n => n.min(u64::from(u32::MAX)) as u32,
        };
        let flash_attention = var("OLLAMA_FLASH_ATTENTION").map(|v| parse_bool(&v));
        let kv_cache_type = match var("OLLAMA_KV_CACHE_TYPE") {
            None => KvType::F16,
            Some(v) => match KvType::parse(&v) {
                // As Ollama: a quantized cache needs flash attention.
                Some(t) if t != KvType::F16 && flash_attention == Some(false) => {
                    log::warn!("OLLAMA_KV_CACHE_TYPE={v} needs flash attention, which OLLAMA_FLASH_ATTENTION turns off; using f16");
                    KvType::F16
                }
                Some(t) => t,
                None => {
                    log::warn!("OLLAMA_KV_CACHE_TYPE={v:?} is not f16, q8_0 or q4_0; using f16");
                    KvType::F16
                }
            },
        };
        let keys = |k: &str| -> Vec<Secret> {
            var(k)
                .map(|v| {
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(|s| Secret(s.to_string()))
                        .collect()
                })
                .unwrap_or_default()
        };
        let tls = match (var("HEARTH_TLS_CERT"), var("HEARTH_TLS_KEY")) {
            (Some(c), Some(k)) => Some((PathBuf::from(c), PathBuf::from(k))),
            (None, None) => None,
            _ => {
                log::warn!("HEARTH_TLS_CERT and HEARTH_TLS_KEY go together; serving plain HTTP");
                None
            }
        };
        let timeout = |k: &str, default: u64| -> Duration {
            match var(k) {
                None => Duration::from_secs(default),
                Some(v) => {
                    match parse_go_duration(&v).or_else(|_| v.parse::<f64>()) {
                        Ok(secs) if secs > 0.0 => Duration::from_secs_f64(secs.min(1e9)),
                        _ => {
                            log::warn!("{k}={v:?} is not a positive duration such as 30s; using {default}s");
                            Duration::from_secs(default)
                        }
                    }
                }
            }
        };
        Config {
            idle_timeout: timeout("HEARTH_IDLE_TIMEOUT", 30),
            write_timeout: timeout("HEARTH_WRITE_TIMEOUT", 30),
            max_connections: match num("HEARTH_MAX_CONNECTIONS", 0) {
                0 => None,
                n => Some(usize::try_from(n).unwrap_or(usize::MAX).max(2)),
            },
            api_keys: keys("HEARTH_API_KEYS"),
            inference_keys: keys("HEARTH_INFERENCE_KEYS"),
            api_keys_file: var("HEARTH_API_KEYS_FILE").map(PathBuf::from),
            read_only: var("HEARTH_READ_ONLY").is_some_and(|v| parse_bool(&v)),
            allowed_hosts: var("HEARTH_ALLOWED_HOSTS")
                .map(|v| {
                    v.split(',')
                        .map(|s| s.trim().to_ascii_lowercase())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            tls,
            tls_ca: var("HEARTH_TLS_CA").map(PathBuf::from),
            registry_keys: var("HEARTH_REGISTRY_KEYS")
                .map(|v| {
                    v.split(',')
                        .filter_map(|pair| {
                            let (host, key) = pair.trim().split_once('=')?;
                            Some((host.trim().to_string(), Secret(key.trim().to_string())))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            kv_cache_type,
            flash_attention,
            bind,
            models_dir,
            origins,
            max_disk_bytes,
            max_memory_bytes,
            keep_alive,
            context_length,
            num_parallel: num("OLLAMA_NUM_PARALLEL", 1).clamp(1, 64) as u32,
            max_loaded_models: match num("OLLAMA_MAX_LOADED_MODELS", 0) {
                0 => 3,
                n => n as usize,
            },
            max_queue: num("OLLAMA_MAX_QUEUE", 512) as usize,
            threads: num("HEARTH_THREADS", cores as u64).max(1) as usize,
            noprune: var("OLLAMA_NOPRUNE").is_some_and(|v| parse_bool(&v)),
            serve_registry: var("HEARTH_SERVE_REGISTRY").is_some_and(|v| parse_bool(&v)),
            key_dir,
            pull_part_bytes: var("HEARTH_PULL_PART_SIZE")
                .and_then(|v| {
                    let parsed = parse_size(&v).filter(|&n| n > 0);
                    if parsed.is_none() {
                        log::warn!(
                            "HEARTH_PULL_PART_SIZE={v:?} is not a size such as 100MB; using 100MB"
                        );
                    }
                    parsed
                })
                .unwrap_or(DEFAULT_PULL_PART_BYTES),
            debug_level: match var("OLLAMA_DEBUG") {
                None => 0,
                Some(v) => v.parse::<u8>().unwrap_or(u8::from(parse_bool(&v))),
            },
        }
    }
}

/// Strips surrounding quotes and spaces, as Ollama does for every variable.
fn clean(v: &str) -> String {
    v.trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .trim()
        .to_string()
}

/// Go's `strconv.ParseBool`, where an unparsable non-empty value counts as true.
fn parse_bool(v: &str) -> bool {
    !matches!(v, "0" | "f" | "F" | "false" | "FALSE" | "False")
}

/// Parses `OLLAMA_HOST`: `[scheme://]host[:port][/path]`.
pub fn parse_host(raw: &str) -> SocketAddr {
    let default_ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, r)) => (Some(s), r),
        None => (None, raw),
    };
    let rest = rest.split('/').next().unwrap_or("");
    let default_port = match scheme {
        Some("http") => 80,
        Some("https") => 443,
        _ => DEFAULT_PORT,
    };
    // A bracketed IPv6 literal may carry a port after the bracket.
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        match stripped.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (stripped, None),
        }
    } else if rest.matches(':').count() > 1 {
        (rest, None)
    } else {
        match rest.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    let port = match port {
        None | Some("") => default_port,
        Some(p) => p.parse().unwrap_or_else(|_| {
            log::warn!("invalid port in OLLAMA_HOST {raw:?}; using {default_port}");
            default_port
        }),
    };
    let ip = match host {
        "" => {
            if rest.starts_with(':') {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                default_ip
            }
        }
        "localhost" => default_ip,
        h => h.parse().unwrap_or_else(|_| {
            log::warn!("OLLAMA_HOST {raw:?} is not an IP address; binding 127.0.0.1");
            default_ip
        }),
    };
    SocketAddr::new(ip, port)
}

/// The server URL the CLI talks to: `OLLAMA_HOST` parsed as the server
/// parses it, with an unspecified address (`0.0.0.0`, `::`) replaced by
/// loopback, since a client cannot connect to "any address".
pub fn client_base_url() -> String {
    let raw = std::env::var("OLLAMA_HOST")
        .map(|v| clean(&v))
        .unwrap_or_default();
    client_url_for(&raw)
}

fn client_url_for(raw: &str) -> String {
    let addr = parse_host(raw);
    let ip = if addr.ip().is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        addr.ip()
    };
    // `https://` stays: a server with a certificate is reached over TLS.
    let scheme = if raw.trim_start().starts_with("https://") {
        "https"
    } else {
        "http"
    };
    format!("{scheme}://{}", SocketAddr::new(ip, addr.port()))
}

/// The CA the CLI trusts besides the web roots (`HEARTH_TLS_CA`).
pub fn client_tls_ca() -> Option<PathBuf> {
    std::env::var("HEARTH_TLS_CA")
        .ok()
        .map(|v| clean(&v))
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The API key the CLI sends (`OLLAMA_API_KEY`), if set.
pub fn client_api_key() -> Option<String> {
    std::env::var("OLLAMA_API_KEY")
        .ok()
        .map(|v| clean(&v))
        .filter(|v| !v.is_empty())
}

/// `$HOME/.ollama`, where Ollama keeps its key, models and REPL history.
fn ollama_home() -> PathBuf {
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".ollama")
}

/// Where the REPL keeps typed lines: `$HOME/.ollama/history`, as Ollama.
pub fn history_path() -> PathBuf {
    ollama_home().join("history")
}

/// The REPL's history file, or `None` when `OLLAMA_NOHISTORY` turns it off.
pub fn history_file() -> Option<PathBuf> {
    let off = std::env::var("OLLAMA_NOHISTORY").is_ok_and(|v| parse_bool(&clean(&v)));
    (!off).then(history_path)
}

/// Parses a size such as `8GB`, `512MiB`, `1.5G` or a bare byte count.
pub fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let num: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0f64.powi(4),
        _ => return None,
    };
    let bytes = num * mult;
    (bytes.is_finite() && bytes >= 0.0).then_some(bytes as u64)
}

/// Parses a Go duration string (`5m`, `1h30m`, `300ms`, `-1m`, `0`).
/// Returns seconds as a float; negative means forever.
pub fn parse_go_duration(s: &str) -> Result<f64, String> {
    let orig = s;
    let (neg, mut s) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if s == "0" {
        return Ok(0.0);
    }
    if s.is_empty() {
        return Err(format!("time: invalid duration {orig:?}"));
    }
    let mut total = 0.0;
    while !s.is_empty() {
        let end = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(s.len());
        if end == 0 {
            return Err(format!("time: invalid duration {orig:?}"));
        }
        let n: f64 = s[..end]
            .parse()
            .map_err(|_| format!("time: invalid duration {orig:?}"))?;
        s = &s[end..];
        let uend = s
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(s.len());
        let unit = &s[..uend];
        s = &s[uend..];
        let mult = match unit {
            "" => return Err(format!("time: missing unit in duration {orig:?}")),
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(format!("time: unknown unit {unit:?} in duration {orig:?}")),
        };
        total += n * mult;
    }
    Ok(if neg { -total } else { total })
}

/// Turns seconds into a keep-alive: negative is forever (`None`).
pub fn keep_alive_from_secs(secs: f64) -> Option<Duration> {
    if secs < 0.0 {
        None
    } else {
        Some(Duration::from_secs_f64(secs.min(1e12)))
    }
}

/// `OLLAMA_KEEP_ALIVE` also accepts a bare integer (seconds), unlike the request field.
fn parse_env_keep_alive(v: &str) -> Option<Option<Duration>> {
    if let Ok(n) = v.parse::<i64>() {
        return Some(keep_alive_from_secs(n as f64));
    }
    parse_go_duration(v).ok().map(keep_alive_from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_host(raw: &str, expected: &str) {
        assert_eq!(parse_host(raw).to_string(), expected, "OLLAMA_HOST={raw:?}");
    }

    #[test]
    fn client_urls() {
        assert_eq!(client_url_for(""), "http://127.0.0.1:11434");
        assert_eq!(client_url_for("0.0.0.0:9000"), "http://127.0.0.1:9000");
        assert_eq!(client_url_for("[::]:9000"), "http://127.0.0.1:9000");
        assert_eq!(client_url_for("[::1]:9000"), "http://[::1]:9000");
        assert_eq!(client_url_for("10.0.0.2"), "http://10.0.0.2:11434");
    }

    #[test]
    fn hosts() {
        check_host("", "127.0.0.1:11434");
        check_host("0.0.0.0", "0.0.0.0:11434");
        check_host(":8080", "0.0.0.0:8080");
        check_host("127.0.0.1:9000", "127.0.0.1:9000");
        check_host("http://10.0.0.1", "10.0.0.1:80");
        check_host("https://10.0.0.1", "10.0.0.1:443");
        check_host("http://127.0.0.1:1234/path", "127.0.0.1:1234");
        check_host("[::1]:5000", "[::1]:5000");
        check_host("127.0.0.1:notaport", "127.0.0.1:11434");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8GB"), Some(8_000_000_000));
        assert_eq!(parse_size("512MiB"), Some(512 * 1024 * 1024));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("1.5k"), Some(1500));
        assert_eq!(parse_size("lots"), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("5m"), Ok(300.0));
        assert_eq!(parse_go_duration("1h30m"), Ok(5400.0));
        assert_eq!(parse_go_duration("300ms"), Ok(0.3));
        assert_eq!(parse_go_duration("-1m"), Ok(-60.0));
        assert_eq!(parse_go_duration("0"), Ok(0.0));
        assert_eq!(
            parse_go_duration("300"),
            Err("time: missing unit in duration \"300\"".into())
        );
        assert!(parse_go_duration("5x").is_err());
        assert_eq!(
            parse_env_keep_alive("60"),
            Some(Some(Duration::from_secs(60)))
        );
        assert_eq!(parse_env_keep_alive("-1"), Some(None));
    }
}
