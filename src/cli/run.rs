//! `hearth run`: a one-shot chat when a prompt is given or stdin is piped,
//! else a REPL with Ollama's `/` commands that keeps the conversation. The
//! REPL edits lines with `line.rs` (history in `~/.ollama/history`), Ctrl-C
//! stops a streaming answer and keeps the session, and answers are wrapped
//! between words at the terminal's width unless `--nowordwrap`.

use std::io::{IsTerminal as _, Read as _, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::Context as _;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use super::client::{status_of, Client};
use super::line::{Editor, Input};
use super::{modelfile, show, term};

/// Flags of `hearth run` that shape the requests.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// `--keepalive`: how long the model stays loaded (`5m`, `1h`, `-1`).
    pub keep_alive: Option<String>,
    /// `--format json`.
    pub format: Option<String>,
    /// `--verbose`: timings after each answer, on stderr.
    pub verbose: bool,
    /// `--think`: ask a thinking model to think.
    pub think: bool,
    /// `--hidethinking`: do not print the thinking.
    pub hide_thinking: bool,
    /// `--insecure`: a missing model is pulled over plain http.
    pub insecure: bool,
    /// `--nowordwrap`: print answers as they come, unbroken.
    pub no_word_wrap: bool,
}

/// Ctrl-C stopped an answer while it streamed.
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
struct Interrupted;

/// The state of a conversation.
struct Session {
    model: String,
    /// The model takes images: file paths in a prompt are sent as images.
    vision: bool,
    opts: RunOptions,
    options: Map<String, Value>,
    messages: Vec<Value>,
}

/// Runs `hearth run MODEL [PROMPT...]`.
pub fn run(
    client: &Client,
    model: &str,
    prompt: &[String],
    opts: RunOptions,
) -> anyhow::Result<()> {
    let info = match show::fetch(client, model, false) {
        Ok(info) => info,
        // As Ollama: a model that is not here is pulled first.
        Err(e) if status_of(&e) == Some(404) => {
            super::pull::pull(client, model, opts.insecure)?;
            show::fetch(client, model, false)?
        }
        Err(e) => return Err(e),
    };
    let mut parts = prompt.to_vec();
    let stdin = std::io::stdin();
    let piped = !stdin.is_terminal();
    if piped {
        let mut input = String::new();
        stdin
            .lock()
            .read_to_string(&mut input)
            .context("read the prompt from stdin")?;
        // Empty input (stdin closed, `< /dev/null`) adds nothing.
        if !input.trim().is_empty() {
            parts.insert(0, input);
        }
    }
    let text = parts.join(" ");
    let embedding = info["capabilities"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "embedding"));
    let vision = info["capabilities"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == "vision"));
    let mut session = Session {
        model: model.to_string(),
        vision,
        opts,
        options: Map::new(),
        messages: Vec::new(),
    };
    if embedding {
        if text.is_empty() {
            anyhow::bail!("embedding models require input text. Usage: hearth run {model} [TEXT]");
        }
        return embed(client, &session, &text);
    }
    if piped || !prompt.is_empty() {
        let message = session.user_message(&text)?;
        session.messages.push(message);
        session.chat(client)?;
        return super::out("\n");
    }
    session.load(client)?;
    session.repl(client)
}

/// Prints the embedding of `text` as a JSON array.
fn embed(client: &Client, session: &Session, text: &str) -> anyhow::Result<()> {
    let mut req = json!({"model": session.model, "input": text});
    if let Some(k) = &session.opts.keep_alive {
        req["keep_alive"] = keep_alive_value(k);
    }
    let resp = client.post("/api/embed", &req)?;
    super::out(&format!("{}\n", resp["embeddings"][0]))
}

/// A keep-alive flag as the server takes it: a bare number means seconds
/// and must be sent as a number, a Go duration as a string.
fn keep_alive_value(k: &str) -> Value {
    k.parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map_or_else(|| Value::String(k.to_string()), Value::Number)
}

impl Session {
    /// A user turn; for a vision model, image files named in the text are
    /// read and sent as images (and taken out of the text), as Ollama's CLI
    /// does.
    fn user_message(&self, text: &str) -> anyhow::Result<Value> {
        if !self.vision {
            return Ok(json!({"role": "user", "content": text}));
        }
        let (rest, paths) = image_paths(text);
        let mut images = Vec::new();
        for path in &paths {
            let bytes = std::fs::read(path)
                .with_context(|| format!("read the image {}", path.display()))?;
            eprintln!("Added image '{}'", path.display());
            images.push(Value::String(STANDARD.encode(bytes)));
        }
        let mut message = json!({"role": "user", "content": rest});
        if !images.is_empty() {
            message["images"] = Value::Array(images);
        }
        Ok(message)
    }

    fn request(&self, messages: &[Value]) -> Value {
        let mut req = json!({"model": self.model, "messages": messages, "stream": true});
        if !self.options.is_empty() {
            req["options"] = Value::Object(self.options.clone());
        }
        if let Some(k) = &self.opts.keep_alive {
            req["keep_alive"] = keep_alive_value(k);
        }
        if let Some(f) = &self.opts.format {
            req["format"] = Value::String(f.clone());
        }
        if self.opts.think {
            req["think"] = Value::Bool(true);
        }
        req
    }

    /// Loads the model before the first prompt, so the wait comes first.
    fn load(&self, client: &Client) -> anyhow::Result<()> {
        client.stream("/api/chat", &self.request(&[]), |_| Ok(()))
    }

    /// Sends the conversation, prints the answer as it streams, and keeps
    /// it in the history.
    fn chat(&mut self, client: &Client) -> anyhow::Result<()> {
        let mut stdout = std::io::stdout().lock();
        let mut wrap = WordWrap::for_terminal(!self.opts.no_word_wrap);
        let mut answer = String::new();
        let mut thinking = false;
        let mut last = Value::Null;
        let hide = self.opts.hide_thinking;
        // A Ctrl-C from before this answer is not for it.
        term::take_interrupt();
        stream_interruptibly(client, "/api/chat", self.request(&self.messages), |chunk| {
            let msg = &chunk["message"];
            if let Some(t) = msg["thinking"].as_str().filter(|t| !t.is_empty() && !hide) {
                if !thinking {
                    thinking = true;
                    writeln!(stdout, "Thinking...")?;
                }
                wrap.write(&mut stdout, t)?;
            }
            if let Some(c) = msg["content"].as_str().filter(|c| !c.is_empty()) {
                if thinking {
                    thinking = false;
                    wrap.finish(&mut stdout)?;
                    write!(stdout, "\n...done thinking.\n\n")?;
                }
                wrap.write(&mut stdout, c)?;
                answer.push_str(c);
            }
            if chunk["done"].as_bool() == Some(true) {
                wrap.finish(&mut stdout)?;
                last = chunk.clone();
            }
            stdout.flush()?;
            Ok(())
        })?;
        self.messages
            .push(json!({"role": "assistant", "content": answer}));
        if self.opts.verbose {
            eprint!("\n{}", stats(&last));
        }
        Ok(())
    }

    /// The interactive loop: `>>> ` prompts until `/bye` or end of input.
    fn repl(&mut self, client: &Client) -> anyhow::Result<()> {
        let mut editor = Editor::new(crate::config::history_file());
        term::catch_interrupts();
        loop {
            let mut line = match editor.read(">>> ")? {
                Input::Line(line) => line,
                Input::Interrupted { empty } => {
                    if empty {
                        println!("Use Ctrl + d or /bye to exit.");
                    }
                    continue;
                }
                Input::Eof => return Ok(()),
            };
            // An odd number of `"""` opens a multi-line block that runs to
            // the line ending in `"""`; Ctrl-C drops the whole block.
            if line.matches("\"\"\"").count() % 2 == 1 {
                loop {
                    match editor.read("... ")? {
                        Input::Line(more) => {
                            line.push('\n');
                            line.push_str(&more);
                            if more.trim_end().ends_with("\"\"\"") {
                                break;
                            }
                        }
                        Input::Interrupted { .. } => {
                            line.clear();
                            break;
                        }
                        Input::Eof => break,
                    }
                }
            }
            let input = line.trim();
            if input.is_empty() {
                continue;
            }
            if input.starts_with('/') {
                match self.command(client, &mut editor, input) {
                    Ok(true) => continue,
                    Ok(false) => return Ok(()),
                    Err(e) => {
                        eprintln!("error: {e:#}");
                        continue;
                    }
                }
            }
            let message = match self.user_message(&strip_quotes(input)) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    continue;
                }
            };
            self.messages.push(message);
            match self.chat(client) {
                Ok(()) => println!("\n"),
                // The stopped or failed turn is dropped so the next prompt
                // starts clean.
                Err(e) if e.is::<Interrupted>() => {
                    self.messages.pop();
                    println!("\n");
                }
                Err(e) => {
                    self.messages.pop();
                    eprintln!("\nerror: {e:#}");
                }
            }
        }
    }

    /// One `/` command; `Ok(false)` ends the session.
    fn command(
        &mut self,
        client: &Client,
        editor: &mut Editor,
        input: &str,
    ) -> anyhow::Result<bool> {
        let mut words = input.split_whitespace();
        let cmd = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        match (cmd, args.first().copied()) {
            ("/bye" | "/exit", _) => return Ok(false),
            ("/?" | "/help", _) => print!("{HELP}"),
            ("/clear", _) => {
                self.messages.retain(|m| m["role"] == "system");
                println!("Cleared session context");
            }
            ("/set", Some("parameter")) => {
                let (Some(key), Some(_)) = (args.get(1), args.get(2)) else {
                    println!("Usage: /set parameter <name> <value>");
                    return Ok(true);
                };
                let value = args[2..].join(" ");
                let (params, _) = modelfile::parameters(&[(key.to_string(), value.clone())])?;
                self.options.extend(params);
                println!("Set parameter '{key}' to '{value}'");
            }
            ("/set", Some("system")) => {
                let rest = input
                    .split_once("system")
                    .map(|(_, r)| strip_quotes(r.trim()))
                    .unwrap_or_default();
                let msg = json!({"role": "system", "content": rest});
                // A system message set twice in a row replaces the first.
                match self.messages.last_mut() {
                    Some(last) if last["role"] == "system" => *last = msg,
                    _ => self.messages.push(msg),
                }
                println!("Set system message.");
            }
            ("/set", Some("format")) if args.get(1) == Some(&"json") => {
                self.opts.format = Some("json".into());
                println!("Set format to 'json' mode.");
            }
            ("/set", Some("noformat")) => {
                self.opts.format = None;
                println!("Disabled format.");
            }
            ("/set", Some("verbose")) => {
                self.opts.verbose = true;
                println!("Set 'verbose' mode.");
            }
            ("/set", Some("quiet")) => {
                self.opts.verbose = false;
                println!("Set 'quiet' mode.");
            }
            ("/set", Some("history")) => editor.set_history(Some(crate::config::history_path())),
            ("/set", Some("nohistory")) => editor.set_history(None),
            ("/set", Some("wordwrap")) => {
                self.opts.no_word_wrap = false;
                println!("Set 'wordwrap' mode.");
            }
            ("/set", Some("nowordwrap")) => {
                self.opts.no_word_wrap = true;
                println!("Set 'nowordwrap' mode.");
            }
            ("/set", Some("think")) => {
                self.opts.think = true;
                println!("Set 'think' mode.");
            }
            ("/set", Some("nothink")) => {
                self.opts.think = false;
                println!("Set 'nothink' mode.");
            }
            ("/show", Some(what)) => {
                let resp = show::fetch(client, &self.model, false)?;
                let field = match what {
                    "info" => {
                        print!("{}", show::summary(&resp, false));
                        return Ok(true);
                    }
                    "license" | "modelfile" | "parameters" | "system" | "template" => what,
                    _ => {
                        println!("Unknown command '/show {what}'. Type /? for help");
                        return Ok(true);
                    }
                };
                // What this session set wins over what the model was created with.
                let system = self.messages.iter().rev().find(|m| m["role"] == "system");
                match (field, system) {
                    ("system", Some(m)) => {
                        println!("{}", m["content"].as_str().unwrap_or_default())
                    }
                    ("parameters", _) if !self.options.is_empty() => {
                        println!("{}", crate::options::show_parameters(&self.options));
                    }
                    _ => match resp[field].as_str() {
                        Some(v) if !v.is_empty() => println!("{v}"),
                        _ => println!("No {field} was specified for this model."),
                    },
                }
            }
            ("/load", Some(model)) => {
                show::fetch(client, model, false)?;
                self.model = model.to_string();
                self.messages.clear();
                self.options.clear();
                println!("Loading model '{model}'");
                self.load(client)?;
            }
            ("/save", Some(name)) if args.len() == 1 => {
                self.save(client, name)?;
                println!("Created new model '{name}'");
            }
            ("/save", _) => println!("Usage:\n  /save <modelname>"),
            _ => println!("Unknown command '{input}'. Type /? for help"),
        }
        Ok(true)
    }

    /// `/save NAME`: a new model made from this one with the session's
    /// system message, parameters and conversation, as Ollama saves one.
    fn save(&self, client: &Client, name: &str) -> anyhow::Result<()> {
        let mut req = json!({"model": name, "from": self.model, "stream": false});
        if let Some(system) = self.messages.iter().rev().find(|m| m["role"] == "system") {
            req["system"] = system["content"].clone();
        }
        if !self.options.is_empty() {
            req["parameters"] = Value::Object(self.options.clone());
        }
        if !self.messages.is_empty() {
            req["messages"] = Value::Array(self.messages.clone());
        }
        client.post("/api/create", &req)?;
        Ok(())
    }
}

/// Streams `path` like [`Client::stream`], but from a helper thread, so a
/// Ctrl-C is seen at once, also while the server is still loading the model
/// or reading the prompt and no chunk has come: it returns [`Interrupted`]
/// straight away. The helper then drops the connection when the next chunk
/// arrives (and the server frees the slot).
fn stream_interruptibly(
    client: &Client,
    path: &str,
    body: Value,
    mut each: impl FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    enum Msg {
        Chunk(Value),
        End(anyhow::Result<()>),
    }
    let (tx, rx) = mpsc::channel();
    let worker = client.clone();
    let path = path.to_string();
    std::thread::spawn(move || {
        let end = worker.stream(&path, &body, |chunk| {
            tx.send(Msg::Chunk(chunk.clone()))
                .map_err(|_| anyhow::Error::new(Interrupted))
        });
        let _ = tx.send(Msg::End(end));
    });
    loop {
        if term::take_interrupt() {
            return Err(Interrupted.into());
        }
        match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(Msg::Chunk(chunk)) => each(&chunk)?,
            Ok(Msg::End(end)) => return end,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => anyhow::bail!("the answer stopped unexpectedly"),
        }
    }
}

/// Prints streamed text so that lines break between words before the
/// terminal's edge (Ollama's word wrap). A word is held until the space or
/// newline after it shows whether it still fits, and the spaces before it
/// until the word is printed, so a broken line has no trailing space. A
/// word wider than the line is printed in pieces of the line's width.
struct WordWrap {
    /// Columns to fill; `None` prints text unchanged.
    width: Option<usize>,
    /// The column the cursor is at.
    col: usize,
    /// Spaces seen since the last word, not printed yet.
    spaces: usize,
    word: String,
}

impl WordWrap {
    /// Wraps at the terminal's width less a margin, when stdout is a
    /// terminal at least 10 columns wide and `on`.
    fn for_terminal(on: bool) -> WordWrap {
        let cols = term::columns();
        let on = on && std::io::stdout().is_terminal() && cols >= 10;
        WordWrap::new(on.then(|| cols - 5))
    }

    fn new(width: Option<usize>) -> WordWrap {
        WordWrap {
            width,
            col: 0,
            spaces: 0,
            word: String::new(),
        }
    }

    fn write(&mut self, out: &mut impl Write, text: &str) -> std::io::Result<()> {
        let Some(width) = self.width else {
            return out.write_all(text.as_bytes());
        };
        for c in text.chars() {
            match c {
                '\n' => {
                    self.finish(out)?;
                    out.write_all(b"\n")?;
                    self.col = 0;
                    self.spaces = 0;
                }
                ' ' => {
                    self.finish(out)?;
                    self.spaces += 1;
                }
                c => {
                    self.word.push(c);
                    if self.word.chars().count() >= width {
                        self.finish(out)?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Prints the held spaces and word, on a new line (without the spaces)
    /// if they do not fit on this one.
    fn finish(&mut self, out: &mut impl Write) -> std::io::Result<()> {
        let (Some(width), n) = (self.width, self.word.chars().count()) else {
            return Ok(());
        };
        if n == 0 {
            return Ok(());
        }
        if self.col > 0 && self.col + self.spaces + n > width {
            out.write_all(b"\n")?;
            self.col = 0;
        } else {
            out.write_all(" ".repeat(self.spaces).as_bytes())?;
            self.col += self.spaces;
        }
        self.spaces = 0;
        out.write_all(self.word.as_bytes())?;
        self.col += n;
        self.word.clear();
        Ok(())
    }
}

/// The image files a prompt names (words starting with `/`, `./` or `~/`,
/// optionally quoted, ending in .png, .jpg, .jpeg or .webp, that exist), and
/// the prompt without them.
fn image_paths(text: &str) -> (String, Vec<PathBuf>) {
    let mut paths = Vec::new();
    let mut kept = Vec::new();
    for word in text.split(' ') {
        let bare = word
            .trim_end_matches(['?', '!', ',', ';', ':'])
            .trim_matches(['\'', '"']);
        let lower = bare.to_ascii_lowercase();
        let image = [".png", ".jpg", ".jpeg", ".webp"]
            .iter()
            .any(|e| lower.ends_with(e));
        let pathlike = bare.starts_with('/') || bare.starts_with("./") || bare.starts_with("~/");
        let path = match bare.strip_prefix("~/") {
            Some(rest) => std::env::var_os("HOME")
                .map_or_else(|| PathBuf::from(bare), |h| Path::new(&h).join(rest)),
            None => PathBuf::from(bare),
        };
        if image && pathlike && path.is_file() {
            paths.push(path);
        } else {
            kept.push(word);
        }
    }
    (kept.join(" ").trim().to_string(), paths)
}

/// Strips the `"""` that delimit a multi-line block.
fn strip_quotes(s: &str) -> String {
    let s = s.strip_prefix("\"\"\"").unwrap_or(s);
    let s = s.strip_suffix("\"\"\"").unwrap_or(s);
    s.trim_matches('\n').to_string()
}

/// `--verbose` timings from the final chunk, as Ollama lays them out.
fn stats(last: &Value) -> String {
    let dur = |k: &str| std::time::Duration::from_nanos(last[k].as_u64().unwrap_or(0));
    let count = |k: &str| last[k].as_u64().unwrap_or(0);
    let rate = |c: &str, d: &str| {
        let secs = dur(d).as_secs_f64();
        if secs > 0.0 {
            count(c) as f64 / secs
        } else {
            0.0
        }
    };
    format!(
        "total duration:       {:?}\nload duration:        {:?}\nprompt eval count:    {} token(s)\nprompt eval duration: {:?}\nprompt eval rate:     {:.2} tokens/s\neval count:           {} token(s)\neval duration:        {:?}\neval rate:            {:.2} tokens/s\n",
        dur("total_duration"),
        dur("load_duration"),
        count("prompt_eval_count"),
        dur("prompt_eval_duration"),
        rate("prompt_eval_count", "prompt_eval_duration"),
        count("eval_count"),
        dur("eval_duration"),
        rate("eval_count", "eval_duration"),
    )
}

const HELP: &str = "Available Commands:
  /set            Set session variables
  /show           Show model information
  /load <model>   Load a session or model
  /clear          Clear session context
  /bye            Exit
  /?, /help       Help for a command

Session variables:
  /set parameter <name> <value>   Set a parameter (e.g. temperature, num_ctx, stop)
  /set system <string>            Set the system message
  /set format json                Answer in JSON
  /set noformat                   Answer in free text
  /set verbose | quiet            Show or hide timings after each answer
  /set think | nothink            Turn thinking on or off
  /set history | nohistory        Keep typed lines in ~/.ollama/history or not
  /set wordwrap | nowordwrap      Break answers between words or not
  /save <model>                   Save this session as a new model

Model information:
  /show info | license | modelfile | parameters | system | template

Use \"\"\" to begin a multi-line message.
";

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` streamed in `pieces`-sized chunks through a wrap `width` wide.
    fn wrapped(text: &str, width: usize, pieces: usize) -> String {
        let mut wrap = WordWrap::new(Some(width));
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for chunk in chars.chunks(pieces) {
            let chunk: String = chunk.iter().collect();
            wrap.write(&mut out, &chunk).expect("write to a Vec");
        }
        wrap.finish(&mut out).expect("write to a Vec");
        String::from_utf8(out).expect("utf-8")
    }

    #[test]
    fn wraps_between_words() {
        let text = "the quick brown fox jumps over the lazy dog";
        for pieces in [1, 3, 100] {
            assert_eq!(
                wrapped(text, 10, pieces),
                "the quick\nbrown fox\njumps over\nthe lazy\ndog",
                "{pieces}"
            );
        }
        // Newlines in the text start the count again.
        assert_eq!(
            wrapped("one two\nthree four five", 10, 2),
            "one two\nthree four\nfive"
        );
        // A word wider than the line is printed whole in pieces of the width.
        assert_eq!(wrapped("a abcdefghijkl b", 5, 4), "a\nabcde\nfghij\nkl b");
        // Off: text passes through untouched.
        let mut off = WordWrap::new(None);
        let mut out = Vec::new();
        off.write(&mut out, text).expect("write");
        assert_eq!(out, text.as_bytes());
    }

    #[test]
    fn finds_image_paths_that_exist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let png = dir.path().join("cat.PNG");
        std::fs::write(&png, b"not really a png").expect("write");
        let text = format!("What is in '{}'? And /no/such.png too", png.display());
        let (rest, paths) = image_paths(&text);
        assert_eq!(paths, vec![png]);
        assert_eq!(rest, "What is in And /no/such.png too");
        let (rest, paths) = image_paths("just words.png here");
        assert!(paths.is_empty());
        assert_eq!(rest, "just words.png here");
    }
}
