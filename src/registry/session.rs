//! The requests of one pull or push: [`Session`] adds the registry's token
//! to every request for the registry's own host (never another), answers a
//! 401 challenge by fetching a token (`auth.rs`) and sending the request
//! once more, follows redirects only where they are safe, and turns an
//! upstream error into one short line.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;
use std::sync::Mutex;

use super::auth::{fetch_token, url_host, Challenge, Error};

/// The most of a registry's error body read.
const MAX_ERROR_BODY: u64 = 64 << 10;

/// A `Location` resolved against the URL it answered: absolute as it is,
/// `/path` on the same origin, anything else relative to the path.
fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("https://") || location.starts_with("http://") {
        return location.to_string();
    }
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let origin_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |i| scheme_end + i);
    if location.starts_with('/') {
        return format!("{}{location}", &base[..origin_end]);
    }
    let dir_end = base
        .rfind('/')
        .filter(|&i| i >= origin_end)
        .map_or(origin_end, |i| i);
    format!("{}/{location}", &base[..dir_end])
}

/// The longest piece of a registry's error body passed on to a client.
const MAX_ERROR_LINE: usize = 160;

/// A registry's error as a short status line: the message of a registry
/// error body (`{"errors": [{"message"}]}` or `{"error"}`), else the
/// body's first line, without control characters and cut to 160
/// characters. A pull can be pointed at any host on the LAN; what that host
/// answers must not come back to the client as more than a status line.
pub fn read_error_body(resp: ureq::Response) -> String {
    let mut body = Vec::new();
    let _ = resp
        .into_reader()
        .take(MAX_ERROR_BODY)
        .read_to_end(&mut body);
    short_line(&String::from_utf8_lossy(&body))
}

fn short_line(text: &str) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_str(text).ok();
    let message = parsed.as_ref().and_then(|v| {
        v["errors"][0]["message"]
            .as_str()
            .or_else(|| v["error"].as_str())
            .map(str::to_string)
    });
    let line = message.unwrap_or_else(|| {
        text.lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
            .to_string()
    });
    let mut out: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_ERROR_LINE)
        .collect();
    if line.chars().filter(|c| !c.is_control()).count() > MAX_ERROR_LINE {
        out.push('…');
    }
    out
}

/// How many redirects a registry request follows.
const MAX_REDIRECTS: usize = 5;

/// Why a registry request failed.
#[derive(Debug)]
pub enum Failure {
    /// The registry answered with an error status (not a 401 that a token fixed).
    Status {
        /// The status.
        code: u16,
        /// The registry's body, trimmed.
        body: String,
    },
    /// No answer: connection, TLS or timeout.
    Transport(String),
    /// Authentication failed.
    Auth(Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Status { code, body } => write!(f, "{code}: {body}"),
            Failure::Transport(e) => f.write_str(e),
            Failure::Auth(e) => e.fmt(f),
        }
    }
}

/// The requests of one pull or push to one registry: every request carries
/// the current token, and a 401 is answered by fetching a token for the
/// challenge's scope and sending the request once more, as Ollama does.
/// Tokens are kept per scope for the session, so parallel requests share
/// them. `Sync`: download workers share one session.
#[derive(Debug)]
pub struct Session {
    agent: ureq::Agent,
    key_dir: PathBuf,
    /// The registry's `host[:port]`, which a realm must share.
    host: String,
    tokens: Mutex<Tokens>,
}

#[derive(Debug, Default)]
struct Tokens {
    /// Sent with every request (Ollama keeps one token per pull or push).
    current: Option<String>,
    by_scope: HashMap<String, String>,
}

impl Session {
    /// A session with the registry at `host`, signing token requests with
    /// the key in `key_dir`.
    pub fn new(agent: ureq::Agent, key_dir: PathBuf, host: String) -> Session {
        Session {
            agent,
            key_dir,
            host,
            tokens: Mutex::new(Tokens::default()),
        }
    }

    /// A session that sends `key` as its token from the first request: the
    /// API key of another hearth box whose `/v2` routes want one
    /// (`HEARTH_REGISTRY_KEYS`).
    pub fn with_key(self, key: Option<String>) -> Session {
        self.lock().current = key;
        self
    }

    /// The agent, for requests that must not carry the token.
    pub fn agent(&self) -> &ureq::Agent {
        &self.agent
    }

    /// Builds a request with `build`, adds the token, sends it with `send`
    /// (which may be called twice, so it must be able to send its body
    /// again; its error is boxed, as `ureq::Error` is large), and retries
    /// once after a 401 with a fresh token.
    pub fn send(
        &self,
        build: &dyn Fn(&ureq::Agent) -> ureq::Request,
        send: &mut dyn FnMut(ureq::Request) -> Result<ureq::Response, Box<ureq::Error>>,
    ) -> Result<ureq::Response, Failure> {
        let mut retried = false;
        loop {
            let token = self.lock().current.clone();
            let mut req = build(&self.agent);
            // The token is the registry's: an upload URL or a mirror on
            // another host never sees it.
            if let (Some(t), true) = (&token, url_host(req.url()) == Some(self.host.as_str())) {
                req = req.set("Authorization", &format!("Bearer {t}"));
            }
            match send(req).map_err(|e| *e) {
                Ok(r) => return Ok(r),
                Err(ureq::Error::Status(401, r)) if !retried => {
                    let challenge = r.header("WWW-Authenticate").map(str::to_string);
                    drop(r);
                    let Some(challenge) = challenge else {
                        return Err(Failure::Auth(Error::Unauthorized));
                    };
                    if !challenge.contains("realm=") {
                        return Err(Failure::Auth(Error::KeyRequired(self.host.clone())));
                    }
                    self.refresh(&challenge, token.as_deref())
                        .map_err(Failure::Auth)?;
                    retried = true;
                }
                Err(ureq::Error::Status(401, _)) => return Err(Failure::Auth(Error::Unauthorized)),
                Err(ureq::Error::Status(code, r)) => {
                    return Err(Failure::Status {
                        code,
                        body: read_error_body(r),
                    })
                }
                Err(e) => return Err(Failure::Transport(e.to_string())),
            }
        }
    }

    /// [`Session::send`] for requests without a body. A GET or HEAD
    /// follows up to five redirects by hand (the agents follow none): to
    /// `https`, or to plain `http` only on the registry's own host when the
    /// request was plain `http` already (an insecure pull), never carrying
    /// the token to another host.
    pub fn call(
        &self,
        build: &dyn Fn(&ureq::Agent) -> ureq::Request,
    ) -> Result<ureq::Response, Failure> {
        let mut resp = self.send(build, &mut |r| r.call().map_err(Box::new))?;
        if !(300..400).contains(&resp.status()) {
            return Ok(resp);
        }
        // A redirect: the request again, for its method, URL and headers.
        let template = build(&self.agent);
        if !matches!(template.method(), "GET" | "HEAD") {
            return Ok(resp);
        }
        let mut url = template.url().to_string();
        let mut hops = 0;
        while (300..400).contains(&resp.status()) {
            let Some(location) = resp.header("Location").map(str::to_string) else {
                return Ok(resp);
            };
            hops += 1;
            if hops > MAX_REDIRECTS {
                return Err(Failure::Transport(format!(
                    "too many redirects (more than {MAX_REDIRECTS})"
                )));
            }
            let next = resolve(&url, &location);
            let next_host = url_host(&next);
            let allowed = next.starts_with("https://")
                || (next.starts_with("http://")
                    && url.starts_with("http://")
                    && next_host == Some(self.host.as_str()));
            if !allowed {
                return Err(Failure::Transport(format!(
                    "refusing a redirect to {}: only https, or the same host for an insecure pull",
                    next_host.unwrap_or("an unknown host")
                )));
            }
            let mut req = self.agent.request(template.method(), &next);
            for name in template.header_names() {
                if name.eq_ignore_ascii_case("authorization") {
                    continue;
                }
                if let Some(v) = template.header(&name) {
                    req = req.set(&name, v);
                }
            }
            if next_host == Some(self.host.as_str()) {
                if let Some(t) = self.lock().current.clone() {
                    req = req.set("Authorization", &format!("Bearer {t}"));
                }
            }
            resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => {
                    return Err(Failure::Status {
                        code,
                        body: read_error_body(r),
                    })
                }
                Err(e) => return Err(Failure::Transport(e.to_string())),
            };
            url = next;
        }
        Ok(resp)
    }

    /// Makes a token for the challenge's scope current: one this session
    /// already holds (fetched by a parallel request) unless it is the one
    /// just refused, else a new one from the realm.
    fn refresh(&self, header: &str, refused: Option<&str>) -> Result<(), Error> {
        let challenge = Challenge::parse(header)?;
        {
            let mut tokens = self.lock();
            if let Some(t) = tokens.by_scope.get(&challenge.scope).cloned() {
                if Some(t.as_str()) != refused {
                    tokens.current = Some(t);
                    return Ok(());
                }
            }
        }
        let token = fetch_token(&self.agent, &self.key_dir, &challenge, &self.host)?;
        let mut tokens = self.lock();
        tokens.by_scope.insert(challenge.scope, token.clone());
        tokens.current = Some(token);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_resolve_against_the_url_they_answered() {
        let base = "http://h:1/v2/a/b/manifests/latest";
        assert_eq!(resolve(base, "https://cdn/x"), "https://cdn/x");
        assert_eq!(
            resolve(base, "/v2/a/b/blobs/s"),
            "http://h:1/v2/a/b/blobs/s"
        );
        assert_eq!(resolve(base, "other"), "http://h:1/v2/a/b/manifests/other");
    }

    #[test]
    fn error_bodies_shrink_to_a_status_line() {
        let docker = r#"{"errors":[{"code":"DENIED","message":"no access"}]}"#;
        assert_eq!(short_line(docker), "no access");
        assert_eq!(short_line("\n  first\nsecond"), "first");
        let long = "y".repeat(500);
        assert_eq!(short_line(&long).chars().count(), MAX_ERROR_LINE + 1);
        assert_eq!(short_line("a\u{1b}[31mb"), "a[31mb");
    }
}
