//! The CLI verbs, run as the real `hearth` binary against a test server:
//! what they print, what they send, and how they fail.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{gemma, inference_lock, Server, GEMMA_TEMPLATE};

/// What a CLI run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &str {
        assert_eq!(
            self.code,
            Some(0),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        &self.stdout
    }

    /// Asserts exit code 1 and one `Error:` line on stderr; returns the message.
    fn err(&self) -> &str {
        assert_eq!(
            self.code,
            Some(1),
            "stdout: {}\nstderr: {}",
            self.stdout,
            self.stderr
        );
        let line = self.stderr.lines().last().unwrap_or_default();
        line.strip_prefix("Error: ")
            .unwrap_or_else(|| panic!("no Error: line in {:?}", self.stderr))
    }
}

/// Runs `hearth ARGS` against `host` (`127.0.0.1:PORT`) in `dir`, with
/// `stdin` piped in (empty when `None`).
fn hearth_at(host: &str, dir: Option<&Path>, args: &[&str], stdin: Option<&str>) -> Run {
    hearth_env(host, dir, args, stdin, &[])
}

/// [`hearth_at`] with extra environment variables.
fn hearth_env(
    host: &str,
    dir: Option<&Path>,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("OLLAMA_HOST", host)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(d) = dir {
        cmd.current_dir(d);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn hearth");
    let mut pipe = child.stdin.take().expect("stdin is piped");
    pipe.write_all(stdin.unwrap_or_default().as_bytes())
        .expect("write stdin");
    drop(pipe);
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().expect("wait for hearth");
    Run {
        code: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

fn host(s: &Server) -> String {
    s.base.trim_start_matches("http://").to_string()
}

fn hearth(s: &Server, args: &[&str]) -> Run {
    hearth_at(&host(s), None, args, None)
}

/// The rows of a table, split on runs of two or more spaces.
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| {
            l.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[test]
fn list_ls_copy_and_remove() {
    let s = Server::with_gemma(&[]);
    let (_, tags) = s.get("/api/tags");
    let digest = tags["models"][0]["digest"].as_str().unwrap_or_default();

    let out = hearth(&s, &["list"]);
    let table = rows(out.ok());
    assert_eq!(
        table[0],
        ["NAME", "ID", "SIZE", "MODIFIED"],
        "{out:?}",
        out = out.stdout
    );
    assert_eq!(table[1][0], "gemma3:270m");
    assert_eq!(table[1][1], digest[..12]);
    assert!(table[1][2].ends_with(" MB"), "{:?}", table[1]);
    assert!(table[1][3].ends_with(" ago"), "{:?}", table[1]);

    let out = hearth(&s, &["cp", "gemma3:270m", "other/copy:v1"]);
    assert_eq!(out.ok(), "copied 'gemma3:270m' to 'other/copy:v1'\n");
    let names = |run: &Run| -> Vec<String> {
        rows(run.ok())
            .into_iter()
            .skip(1)
            .map(|r| r[0].clone())
            .collect()
    };
    let mut all = names(&hearth(&s, &["ls"]));
    all.sort();
    assert_eq!(all, ["gemma3:270m", "other/copy:v1"]);
    assert_eq!(names(&hearth(&s, &["ls", "GEM"])), ["gemma3:270m"]);
    assert_eq!(names(&hearth(&s, &["list", "other/"])), ["other/copy:v1"]);

    let out = hearth(&s, &["rm", "other/copy:v1"]);
    assert_eq!(out.ok(), "deleted 'other/copy:v1'\n");
    assert_eq!(names(&hearth(&s, &["ls"])), ["gemma3:270m"]);
    let out = hearth(&s, &["rm", "other/copy:v1"]);
    assert_eq!(out.err(), "model 'other/copy:v1' not found");
}

#[test]
fn show_summary_and_fields() {
    let s = Server::with_gemma(&[]);
    let out = hearth(&s, &["show", "gemma3:270m"]);
    let text = out.ok();
    for want in [
        "  Model\n",
        "    architecture        gemma3\n",
        "    parameters          268.10M\n",
        "    context length      32768\n",
        "    embedding length    640\n",
        "    quantization        Q4_K_M\n",
        "  Capabilities\n    completion\n",
        "  Parameters\n    stop    \"<end_of_turn>\"\n",
    ] {
        assert!(text.contains(want), "{want:?} missing from:\n{text}");
    }
    let out = hearth(&s, &["show", "gemma3:270m", "--template"]);
    assert_eq!(out.ok(), format!("{GEMMA_TEMPLATE}\n"));
    let out = hearth(&s, &["show", "gemma3:270m", "--modelfile"]);
    assert!(out
        .ok()
        .starts_with("# Modelfile generated by \"ollama show\""));
    let out = hearth(&s, &["show", "gemma3:270m", "--parameters", "--system"]);
    assert!(out.err().starts_with("only one of"));
    let out = hearth(&s, &["show", "nope"]);
    assert_eq!(out.err(), "model 'nope:latest' not found");
}

/// Creates a model from a Modelfile next to a hard link of the GGUF (so
/// the CLI hashes and uploads it), then runs, lists, stops it.
#[test]
fn create_run_ps_stop() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let gguf = dir.path().join("gemma.gguf");
    if std::fs::hard_link(gemma(), &gguf).is_err() {
        std::fs::copy(gemma(), &gguf).expect("copy the test model");
    }
    let modelfile = format!(
        "# A tiny test model.\nFROM ./gemma.gguf\nparameter num_predict 8\nPARAMETER temperature 0\nPARAMETER stop <end_of_turn>\nSYSTEM \"\"\"You are terse.\nVery terse.\"\"\"\nTEMPLATE \"\"\"{GEMMA_TEMPLATE}\"\"\"\n"
    );
    std::fs::write(dir.path().join("Modelfile"), modelfile).expect("write Modelfile");

    let out = hearth_at(&host(&s), Some(dir.path()), &["create", "tiny"], None);
    let text = out.ok();
    assert!(text.contains("copying file sha256:"), "{text}");
    assert_eq!(text.lines().last(), Some("success"), "{text}");
    let out = hearth(&s, &["show", "tiny", "--system"]);
    assert_eq!(out.ok(), "You are terse.\nVery terse.\n");
    let out = hearth(&s, &["show", "tiny", "--parameters"]);
    let params = out.ok();
    assert!(
        params.contains("num_predict                    8"),
        "{params}"
    );
    assert!(
        params.contains("stop                           \"<end_of_turn>\""),
        "{params}"
    );

    // Again, from elsewhere with -f: the blob is there, so nothing is copied.
    let mf = dir.path().join("Modelfile");
    let mf = mf.to_str().expect("utf-8 temp path");
    let out = hearth(&s, &["create", "tiny2", "-f", mf]);
    assert!(!out.ok().contains("copying file"), "{}", out.stdout);
    // Identical manifests share a digest, and /api/ps names a runner by the
    // first model with its digest: drop the twin so ps below is unambiguous.
    assert_eq!(hearth(&s, &["rm", "tiny2"]).ok(), "deleted 'tiny2'\n");

    let _lock = inference_lock();
    let out = hearth(&s, &["run", "tiny", "Say", "hello."]);
    let answer = out.ok();
    assert!(
        answer.ends_with('\n') && !answer.trim().is_empty(),
        "{answer:?}"
    );
    let out = hearth_at(&host(&s), None, &["run", "tiny"], Some("Say hello."));
    assert!(!out.ok().trim().is_empty());

    let out = hearth(&s, &["ps"]);
    let table = rows(out.ok());
    assert_eq!(
        table[0],
        ["NAME", "ID", "SIZE", "PROCESSOR", "CONTEXT", "UNTIL"]
    );
    assert_eq!(table[1][0], "tiny:latest");
    assert_eq!(table[1][3], "100% CPU");
    assert!(table[1][5].ends_with("from now"), "{:?}", table[1]);

    hearth(&s, &["stop", "tiny"]).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, ps) = s.get("/api/ps");
        if ps["models"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(Instant::now() < deadline, "still loaded: {ps}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(rows(hearth(&s, &["ps"]).ok()).len(), 1);
}

#[test]
fn modelfile_errors_fail_before_sending() {
    let s = Server::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let write = |text: &str| {
        let p = dir.path().join("Modelfile");
        std::fs::write(&p, text).expect("write Modelfile");
        p.to_string_lossy().into_owned()
    };
    let mf = write("SYSTEM hi\n");
    assert_eq!(
        hearth(&s, &["create", "x", "-f", &mf]).err(),
        "no FROM line"
    );
    let mf = write("FROM gemma3\nPARAMETER bogus 1\n");
    assert_eq!(
        hearth(&s, &["create", "x", "-f", &mf]).err(),
        "unknown parameter 'bogus'"
    );
    let mf = write("FROM gemma3\nFROMAGE x\n");
    assert!(hearth(&s, &["create", "x", "-f", &mf])
        .err()
        .starts_with("(line 2): command must be one of \"from\""));
    // A FROM that names no file is a model the server does not have.
    let mf = write("FROM missing-base\n");
    assert!(hearth(&s, &["create", "x", "-f", &mf])
        .err()
        .contains("not found"));
    let (_, tags) = s.get("/api/tags");
    assert_eq!(tags["models"], serde_json::json!([]));
}

#[test]
fn unknown_models_and_failing_verbs() {
    let s = Server::start();
    // A model that is not here is pulled first, as Ollama does; the default
    // registry is out of reach from a test box, so that fails cleanly.
    assert!(hearth(&s, &["run", "nope", "hi"])
        .err()
        .starts_with("pull model manifest: "));
    assert_eq!(
        hearth(&s, &["stop", "nope"]).err(),
        "couldn't find model \"nope\" to stop"
    );
    // The default registry is out of reach from a test box: a clean error.
    assert!(hearth(&s, &["pull", "gemma3"])
        .err()
        .starts_with("pull model manifest: "));
    // Pushing a model this server does not have fails before any upload.
    assert_eq!(
        hearth(&s, &["push", "me/gemma3"]).err(),
        "model 'me/gemma3:latest' not found"
    );
    assert_eq!(rows(hearth(&s, &["ls"]).ok()).len(), 1);
    let version = hearth(&s, &["--version"]).ok().to_string();
    assert!(
        version.starts_with(&format!("hearth version {}\n", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    assert!(version.contains("kernels "), "{version}");
}

#[test]
fn no_server_is_one_error_line() {
    // Port 1 is privileged and nothing listens there in a test sandbox.
    let out = hearth_at("127.0.0.1:1", None, &["list"], None);
    assert!(out.err().starts_with("could not connect"), "{}", out.stderr);
}

/// `hearth run` of a model this box lacks pulls it first (here from another
/// box serving its registry), then answers.
#[test]
fn run_pulls_a_missing_model() {
    let _lock = inference_lock();
    let a = Server::start_with(&[("HEARTH_SERVE_REGISTRY", "1")]);
    a.create_linked(
        "gemma3:270m",
        &gemma(),
        serde_json::json!({"template": GEMMA_TEMPLATE, "parameters": {"stop": ["<end_of_turn>"], "num_predict": 6}}),
    );
    let b = Server::start();
    let name = format!("{}/library/gemma3:270m", host(&a));
    let out = hearth(&b, &["run", "--insecure", &name, "Say hi."]);
    let text = out.ok();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.first(), Some(&"pulling manifest"), "{text}");
    let done = lines
        .iter()
        .position(|l| *l == "success")
        .unwrap_or_else(|| panic!("no success line: {text}"));
    let answer = lines[done + 1..].join("\n");
    assert!(!answer.trim().is_empty(), "{text}");
    assert_eq!(
        rows(hearth(&b, &["ls"]).ok()).len(),
        2,
        "a header and the pulled model"
    );
}

#[test]
fn the_cli_sends_ollama_api_key_and_explains_refusals() {
    let s = Server::start_with(&[
        ("HEARTH_API_KEYS", "cli-admin-3f9a"),
        ("HEARTH_INFERENCE_KEYS", "cli-kiosk-77b2"),
    ]);
    s.create_gemma("gemma3:270m");
    let h = host(&s);
    // Without a key: a clear 401 message naming the variable.
    let run = hearth_env(&h, None, &["list"], None, &[]);
    let msg = run.err();
    assert!(msg.contains("unauthorized"), "{msg}");
    assert!(run.stderr.contains("OLLAMA_API_KEY"), "{}", run.stderr);
    // A wrong key says so.
    let run = hearth_env(&h, None, &["list"], None, &[("OLLAMA_API_KEY", "nope")]);
    run.err();
    assert!(
        run.stderr.contains("does not accept the key"),
        "{}",
        run.stderr
    );
    // The inference key lists but cannot delete.
    let kiosk = [("OLLAMA_API_KEY", "cli-kiosk-77b2")];
    let out = hearth_env(&h, None, &["list"], None, &kiosk);
    assert!(out.ok().contains("gemma3:270m"));
    let run = hearth_env(&h, None, &["rm", "gemma3:270m"], None, &kiosk);
    assert!(run.err().contains("forbidden"), "{}", run.stderr);
    // The admin key deletes.
    let admin = [("OLLAMA_API_KEY", "cli-admin-3f9a")];
    hearth_env(&h, None, &["rm", "gemma3:270m"], None, &admin).ok();
}
