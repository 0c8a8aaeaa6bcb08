//! `hearth run`'s interactive REPL on a real pseudo-terminal: keys typed
//! into the terminal, the screen read back, the history file on disk and
//! the session saved as a model on the server.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::os::fd::{FromRawFd as _, OwnedFd};
use std::os::unix::process::CommandExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::harness::{gemma, inference_lock, Server, GEMMA_TEMPLATE};

/// A `hearth run` whose standard streams are a pseudo-terminal it controls.
struct Terminal {
    child: Child,
    master: File,
    /// Everything the program wrote to the screen so far.
    screen: Arc<Mutex<Vec<u8>>>,
}

impl Terminal {
    /// Starts `hearth ARGS` on a new terminal `cols` wide, with `home` as
    /// its HOME (where the history file goes).
    fn spawn(server: &Server, home: &std::path::Path, args: &[&str], cols: u16) -> Terminal {
        let (mut master_fd, mut slave_fd) = (-1, -1);
        let size = libc::winsize {
            ws_row: 40,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: both fd pointers are valid and writable, the name pointer
        // may be null, and the termios pointer is null (default settings).
        let rc = unsafe {
            libc::openpty(
                &mut master_fd,
                &mut slave_fd,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: openpty returned two fresh descriptors that nothing else owns.
        let (master, slave) = unsafe {
            (
                OwnedFd::from_raw_fd(master_fd),
                OwnedFd::from_raw_fd(slave_fd),
            )
        };
        let stdio = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup the terminal"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_hearth"));
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home)
            .env("TERM", "xterm")
            .env("OLLAMA_HOST", server.base.trim_start_matches("http://"))
            .stdin(stdio(&slave))
            .stdout(stdio(&slave))
            .stderr(stdio(&slave));
        // SAFETY: between fork and exec only async-signal-safe calls: a new
        // session, then the terminal on stdin becomes its controlling one, so
        // a typed Ctrl-C reaches the program as SIGINT when not in raw mode.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn hearth run");
        drop(slave);
        let master = File::from(master);
        let screen = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().expect("dup the master");
        let sink = Arc::clone(&screen);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once the program has exited and closed its side.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .expect("screen lock")
                    .extend_from_slice(&buf[..n]);
            }
        });
        Terminal {
            child,
            master,
            screen,
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.screen.lock().expect("screen lock")).into_owned()
    }

    /// Waits until the screen shows `want` `times` times in all.
    fn wait_for(&self, want: &str, times: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.text().matches(want).count() < times {
            assert!(
                Instant::now() < deadline,
                "waited for {want:?} x{times}; the screen: {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Fresh, empty prompts drawn so far. The editor redraws the prompt
    /// with every edit; a new prompt is the one drawn on a new line.
    fn prompts(&self) -> usize {
        self.text().matches(FRESH_PROMPT).count()
    }

    /// Waits for the program to end and checks it ended with status 0.
    fn exits_cleanly(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "still running: {:?}",
                self.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}: {:?}", self.text());
    }

    /// Types `keys` and waits for the prompt after them.
    fn enter(&mut self, keys: &[u8]) {
        let before = self.prompts();
        self.master.write_all(keys).expect("type into the terminal");
        self.wait_for(FRESH_PROMPT, before + 1, Duration::from_secs(60));
    }
}

/// What the screen shows after the typed line ending in `typed` (its
/// first appearance: the answer may repeat it).
fn answer_after<'a>(screen: &'a str, typed: &str) -> &'a str {
    screen
        .find(typed)
        .and_then(|i| screen[i..].find('\n').map(|j| &screen[i + j + 1..]))
        .unwrap_or_default()
}

/// A new line, then the editor drawing an empty `>>> ` prompt (clear to
/// the end of the screen, the prompt, the cursor back at column 4).
const FRESH_PROMPT: &str = "\n\r\x1b[J>>> \r\x1b[4C";

impl Drop for Terminal {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A server with Gemma as `tiny` (greedy, `num_predict` tokens), and
/// `hearth run tiny` at its first prompt on a terminal `cols` wide whose
/// HOME is the returned directory.
fn repl(num_predict: u32, cols: u16) -> (Server, tempfile::TempDir, Terminal) {
    let s = Server::start();
    s.create_linked(
        "tiny",
        &gemma(),
        serde_json::json!({"template": GEMMA_TEMPLATE, "parameters": {"stop": ["<end_of_turn>"], "temperature": 0, "num_predict": num_predict}}),
    );
    let home = tempfile::tempdir().expect("tempdir");
    let t = Terminal::spawn(&s, home.path(), &["run", "tiny"], cols);
    t.wait_for(">>> ", 1, Duration::from_secs(60));
    (s, home, t)
}

#[test]
fn repl_edits_recalls_interrupts_and_saves() {
    let _lock = inference_lock();
    let (s, home, mut t) = repl(6, 60);

    // Typing with edits: "breif" fixed with Left, Backspace and an insert,
    // then Home and End before Enter.
    t.enter(b"/set system Be breif.\x1b[D\x1b[D\x7f\x1b[Di\x01\x05\r");
    // Up recalls that line; Ctrl-W drops its last word.
    t.enter(b"\x1b[A\x17short.\r");
    t.enter(b"/show system\r");
    let screen = t.text();
    assert_eq!(
        screen.matches("Set system message.").count(),
        2,
        "{screen:?}"
    );
    assert!(screen.contains("Be short."), "{screen:?}");

    // Ctrl-C on an empty line says how to leave and keeps the session.
    t.enter(b"\x03");
    assert!(t.text().contains("Use Ctrl + d or /bye to exit."));

    // A real answer, then Ctrl-C while a long one streams: the session
    // goes on and the stopped turn is not kept.
    t.enter(b"Say hello.\r");
    t.enter(b"/set parameter num_predict 400\r");
    let before = t.prompts();
    let started = t.text().len();
    t.master
        .write_all(b"Count from one to one hundred in words.\r")
        .expect("type");
    let deadline = Instant::now() + Duration::from_secs(60);
    while answer_after(&t.text()[started..], "in words.")
        .chars()
        .count()
        < 30
    {
        assert!(Instant::now() < deadline, "no answer: {:?}", t.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    t.master.write_all(b"\x03").expect("type Ctrl-C");
    t.wait_for(FRESH_PROMPT, before + 1, Duration::from_secs(30));
    t.enter(b"/set parameter num_predict 6\r");

    // /save makes a model with the system message and the kept turn.
    t.enter(b"/save tiny-session\r");
    assert!(
        t.text().contains("Created new model 'tiny-session'"),
        "{:?}",
        t.text()
    );
    let (status, show) = s.post("/api/show", serde_json::json!({"model": "tiny-session"}));
    assert_eq!(status, 200, "{show}");
    assert_eq!(show["system"], "Be short.");
    let messages = show["messages"].as_array().cloned().unwrap_or_default();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(roles, ["system", "user", "assistant"], "{show}");
    assert_eq!(messages[1]["content"], "Say hello.");

    // Ctrl-D on an empty line ends the program cleanly.
    t.master.write_all(b"\x04").expect("type Ctrl-D");
    t.exits_cleanly();

    // Every line typed is in the history file, in order, once each.
    let history =
        std::fs::read_to_string(home.path().join(".ollama").join("history")).expect("history file");
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(
        lines,
        [
            "/set system Be brief.",
            "/set system Be short.",
            "/show system",
            "Say hello.",
            "/set parameter num_predict 400",
            "Count from one to one hundred in words.",
            "/set parameter num_predict 6",
            "/save tiny-session",
        ]
    );
}

#[test]
fn repl_wraps_answers_between_words() {
    let _lock = inference_lock();
    let (_server, _home, mut t) = repl(60, 30);
    let start = t.text().len();
    t.enter(b"Tell me about the sea in three sentences.\r");
    let screen = t.text();
    let answer = answer_after(&screen[start..], "sentences.");
    let answer = answer.split(FRESH_PROMPT).next().unwrap_or_default();
    // The answer's lines fit in 30 - 5 columns, and there are several.
    let lines: Vec<&str> = answer.split("\r\n").collect();
    assert!(
        lines.iter().filter(|l| !l.trim().is_empty()).count() >= 2,
        "{answer:?}"
    );
    for line in &lines {
        assert!(line.chars().count() <= 25, "{line:?} in {answer:?}");
    }

    // A `"""` block spans lines (here a two-line system message, with the
    // `... ` prompt between), and /bye ends the program cleanly.
    t.master.write_all(b"/set system \"\"\"Be\r").expect("type");
    t.wait_for("... ", 1, Duration::from_secs(10));
    t.enter(b"brief.\"\"\"\r");
    t.enter(b"/show system\r");
    assert!(t.text().contains("Be\r\nbrief."), "{:?}", t.text());
    t.master.write_all(b"/bye\r").expect("type");
    t.exits_cleanly();
}

/// Ctrl-C while the request still waits for the model (here: queued behind
/// another client's long answer, so no chunk has come) gives the prompt
/// back at once, and the next turn works once the model is free.
#[test]
fn repl_ctrl_c_before_the_first_chunk() {
    let _lock = inference_lock();
    let (s, _home, mut t) = repl(6, 60);
    // Another client keeps the model's only slot busy until the test lets
    // it go (it then hangs up), however fast the machine decodes.
    let url = s.url("/api/generate");
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let busy = std::thread::spawn(move || {
        let body = serde_json::json!({
            "model": "tiny", "prompt": "Count to a thousand.",
            "options": {"num_predict": 100_000, "temperature": 0}
        });
        let resp = ureq::post(&url)
            .timeout(Duration::from_secs(300))
            .send_string(&body.to_string())
            .ok()?;
        let status = resp.status();
        let mut reader = std::io::BufReader::new(resp.into_reader());
        let mut first = String::new();
        std::io::BufRead::read_line(&mut reader, &mut first).ok()?;
        let _ = held_tx.send(first);
        let _ = release_rx.recv();
        Some(status)
    });
    // Its first chunk means the generation holds the slot.
    let first = held_rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the busy generation never started");
    assert!(first.contains("\"done\":false"), "{first}");

    let before = t.prompts();
    let start = t.text().len();
    t.master.write_all(b"Say hi.\r").expect("type");
    // The line is taken (the editor ends it with a new line), then Ctrl-C.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !t.text()[start..]
        .find("Say hi.")
        .is_some_and(|i| t.text()[start + i..].contains('\n'))
    {
        assert!(Instant::now() < deadline, "line not taken: {:?}", t.text());
        std::thread::sleep(Duration::from_millis(10));
    }
    t.master.write_all(b"\x03").expect("type Ctrl-C");
    t.wait_for(FRESH_PROMPT, before + 1, Duration::from_secs(5));
    assert!(
        !busy.is_finished(),
        "the prompt should be back while the other answer still runs"
    );
    let screen = t.text();
    let shown = answer_after(&screen[start..], "Say hi.");
    // The terminal itself echoes the Ctrl-C as ^C.
    let stopped = shown.split(FRESH_PROMPT).next().unwrap_or_default();
    assert!(
        stopped.replace("^C", "").trim().is_empty(),
        "nothing of the stopped answer is shown: {shown:?}"
    );
    let _ = release_tx.send(());
    assert_eq!(busy.join().expect("busy client"), Some(200));
    // The model is free again; a new turn gets its answer.
    let start = t.text().len();
    t.enter(b"Say hello.\r");
    let answer = answer_after(&t.text()[start..], "Say hello.").to_string();
    let answer = answer.split(FRESH_PROMPT).next().unwrap_or_default();
    assert!(!answer.trim().is_empty(), "{:?}", t.text());
}
