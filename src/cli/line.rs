//! The REPL's line editor: the keys a shell user expects (arrows, Home/End,
//! Backspace/Delete, Ctrl-A/E/B/F/K/U/W/L, Up/Down through history), Ctrl-C
//! to drop a line, Ctrl-D to end, and a history file as Ollama keeps one
//! (`~/.ollama/history`, off with `OLLAMA_NOHISTORY` or `/set nohistory`).
//!
//! Decoding keys and editing are plain functions of bytes and state, tested
//! below; only [`Editor::read`] touches the terminal (through `term.rs`).
//! The REPL runs only on a terminal (`run.rs` answers piped input in one
//! shot), so the editor always has one.
//! Every character counts as one column (wide CJK characters are drawn
//! right but the cursor may sit off by their extra width).

use std::io::{self, Read as _, Write as _};
use std::path::PathBuf;

use super::term;

/// What reading a line ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Enter was pressed on this text.
    Line(String),
    /// Ctrl-C: the line is dropped (`empty`: there was none).
    Interrupted { empty: bool },
    /// Ctrl-D on an empty line, or the end of input.
    Eof,
}

/// One decoded key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Char(char),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    Up,
    Down,
    /// Ctrl-K.
    KillToEnd,
    /// Ctrl-U.
    KillToStart,
    /// Ctrl-W.
    KillWord,
    /// Ctrl-L.
    ClearScreen,
    /// Ctrl-C.
    Interrupt,
    /// Ctrl-D.
    EndOfInput,
    /// A key or sequence the editor has no use for.
    Ignored,
}

/// Turns terminal bytes into keys: control bytes, UTF-8 characters and
/// the escape sequences of xterm-like terminals.
#[derive(Default)]
struct Decoder {
    pending: Vec<u8>,
}

/// Longest escape sequence worth waiting for; anything longer is dropped.
const MAX_SEQUENCE: usize = 16;

impl Decoder {
    /// Feeds one byte; a key once the bytes so far make one.
    fn feed(&mut self, byte: u8) -> Option<Key> {
        if self.pending.is_empty() {
            return match byte {
                0x1b => {
                    self.pending.push(byte);
                    None
                }
                0x01 => Some(Key::Home),
                0x02 => Some(Key::Left),
                0x03 => Some(Key::Interrupt),
                0x04 => Some(Key::EndOfInput),
                0x05 => Some(Key::End),
                0x06 => Some(Key::Right),
                0x08 | 0x7f => Some(Key::Backspace),
                0x0b => Some(Key::KillToEnd),
                0x0c => Some(Key::ClearScreen),
                b'\r' | b'\n' => Some(Key::Enter),
                0x0e => Some(Key::Down),
                0x10 => Some(Key::Up),
                0x15 => Some(Key::KillToStart),
                0x17 => Some(Key::KillWord),
                0x00..=0x1f => Some(Key::Ignored),
                0x20..=0x7e => Some(Key::Char(char::from(byte))),
                0xc0..=0xf7 => {
                    self.pending.push(byte);
                    None
                }
                _ => Some(Key::Ignored),
            };
        }
        self.pending.push(byte);
        let key = if self.pending[0] == 0x1b {
            self.escape()?
        } else {
            self.utf8()?
        };
        self.pending.clear();
        Some(key)
    }

    /// An escape sequence so far: `None` while it is incomplete.
    fn escape(&self) -> Option<Key> {
        let seq = &self.pending[1..];
        let (&first, rest) = seq.split_first()?;
        if first != b'[' && first != b'O' {
            // Alt+key: nothing here uses it.
            return Some(Key::Ignored);
        }
        let &last = rest.last()?;
        // CSI parameters and intermediates are 0x20..=0x3f; a final byte ends it.
        if !(0x40..=0x7e).contains(&last) {
            return (self.pending.len() >= MAX_SEQUENCE).then_some(Key::Ignored);
        }
        Some(match rest {
            b"A" => Key::Up,
            b"B" => Key::Down,
            b"C" => Key::Right,
            b"D" => Key::Left,
            b"H" | b"1~" | b"7~" => Key::Home,
            b"F" | b"4~" | b"8~" => Key::End,
            b"3~" => Key::Delete,
            _ => Key::Ignored,
        })
    }

    /// A UTF-8 character so far: `None` while bytes are missing.
    fn utf8(&self) -> Option<Key> {
        let want = match self.pending[0] {
            0xc0..=0xdf => 2,
            0xe0..=0xef => 3,
            _ => 4,
        };
        if self.pending.len() < want {
            // A byte that cannot continue a character ends it early.
            let last = self.pending[self.pending.len() - 1];
            return (last & 0xc0 != 0x80).then_some(Key::Ignored);
        }
        Some(
            std::str::from_utf8(&self.pending)
                .ok()
                .and_then(|s| s.chars().next())
                .map_or(Key::Ignored, Key::Char),
        )
    }
}

/// The history: entries oldest first, and where Up/Down is in them.
#[derive(Default)]
struct History {
    entries: Vec<String>,
    /// The entry shown; `entries.len()` is the line being typed.
    at: usize,
    /// The line being typed, kept while Up shows older entries.
    draft: String,
}

/// Entries kept in memory and in the file.
const HISTORY_LIMIT: usize = 1000;

/// The line being edited.
#[derive(Default)]
struct Line {
    text: Vec<char>,
    cursor: usize,
}

impl Line {
    fn set(&mut self, s: &str) {
        self.text = s.chars().collect();
        self.cursor = self.text.len();
    }

    fn string(&self) -> String {
        self.text.iter().collect()
    }
}

/// What a key did to the line.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// Redraw and read on.
    Edited,
    /// The line is done.
    Done(Input),
    /// Clear the screen, then redraw.
    Clear,
}

/// Applies one key to the line and the history.
fn apply(line: &mut Line, history: &mut History, key: Key) -> Step {
    match key {
        Key::Char(c) => {
            line.text.insert(line.cursor, c);
            line.cursor += 1;
        }
        Key::Enter => return Step::Done(Input::Line(line.string())),
        Key::Backspace if line.cursor > 0 => {
            line.cursor -= 1;
            line.text.remove(line.cursor);
        }
        Key::Delete if line.cursor < line.text.len() => {
            line.text.remove(line.cursor);
        }
        Key::Left => line.cursor = line.cursor.saturating_sub(1),
        Key::Right => line.cursor = (line.cursor + 1).min(line.text.len()),
        Key::Home => line.cursor = 0,
        Key::End => line.cursor = line.text.len(),
        Key::Up if history.at > 0 => {
            if history.at == history.entries.len() {
                history.draft = line.string();
            }
            history.at -= 1;
            line.set(&history.entries[history.at]);
        }
        Key::Down if history.at < history.entries.len() => {
            history.at += 1;
            match history.entries.get(history.at) {
                Some(entry) => line.set(entry),
                None => line.set(&std::mem::take(&mut history.draft)),
            }
        }
        Key::KillToEnd => line.text.truncate(line.cursor),
        Key::KillToStart => {
            line.text.drain(..line.cursor);
            line.cursor = 0;
        }
        Key::KillWord => {
            let mut start = line.cursor;
            while start > 0 && line.text[start - 1] == ' ' {
                start -= 1;
            }
            while start > 0 && line.text[start - 1] != ' ' {
                start -= 1;
            }
            line.text.drain(start..line.cursor);
            line.cursor = start;
        }
        Key::ClearScreen => return Step::Clear,
        Key::Interrupt => {
            return Step::Done(Input::Interrupted {
                empty: line.text.is_empty(),
            })
        }
        Key::EndOfInput if line.text.is_empty() => return Step::Done(Input::Eof),
        // Ctrl-D on a line deletes the character under the cursor.
        Key::EndOfInput if line.cursor < line.text.len() => {
            line.text.remove(line.cursor);
        }
        _ => {}
    }
    Step::Edited
}

/// The bytes that redraw `prompt` + `line` on a terminal `cols` wide, given
/// the row (within the drawn line) the cursor is on now; returns them and
/// the cursor's row afterwards. The line may wrap over several rows.
fn render(prompt: &str, line: &Line, cols: usize, cursor_row: usize) -> (String, usize) {
    let cols = cols.max(1);
    let mut out = String::new();
    if cursor_row > 0 {
        out.push_str(&format!("\x1b[{cursor_row}A"));
    }
    // Back to the prompt's first column, and clear everything below.
    out.push_str("\r\x1b[J");
    out.push_str(prompt);
    out.extend(line.text.iter());
    let width = prompt.chars().count();
    let end = width + line.text.len();
    // A line that ends exactly at the margin leaves the cursor there, not
    // on the next row; move it down so the arithmetic below holds.
    if end > 0 && end.is_multiple_of(cols) {
        out.push_str("\r\n");
    }
    let end_row = end / cols;
    let at = width + line.cursor;
    let (row, col) = (at / cols, at % cols);
    if end_row > row {
        out.push_str(&format!("\x1b[{}A", end_row - row));
    }
    out.push('\r');
    if col > 0 {
        out.push_str(&format!("\x1b[{col}C"));
    }
    (out, row)
}

/// Reads lines for the REPL, with editing and history on a terminal.
pub struct Editor {
    history: History,
    /// Where new entries are appended; `None` keeps history off.
    file: Option<PathBuf>,
    decoder: Decoder,
    /// Bytes read after the Enter that ended the last line.
    typed_ahead: Vec<u8>,
}

impl Editor {
    /// An editor whose history lives in `file` (`None`: no history).
    pub fn new(file: Option<PathBuf>) -> Editor {
        let entries = file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
            .map(|text| {
                let lines: Vec<String> = text
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect();
                let skip = lines.len().saturating_sub(HISTORY_LIMIT);
                lines.into_iter().skip(skip).collect()
            })
            .unwrap_or_default();
        let at = Vec::len(&entries);
        Editor {
            history: History {
                entries,
                at,
                draft: String::new(),
            },
            file,
            decoder: Decoder::default(),
            typed_ahead: Vec::new(),
        }
    }

    /// Turns history on (keeping it in `file`) or off.
    pub fn set_history(&mut self, file: Option<PathBuf>) {
        self.file = file;
    }

    /// Reads one line after `prompt` from the terminal.
    pub fn read(&mut self, prompt: &str) -> io::Result<Input> {
        let raw = term::RawMode::enable()?;
        let result = self.edit(prompt);
        drop(raw);
        // Raw mode left the cursor at the end of the line; the answer or
        // the next prompt starts on a fresh one.
        println!();
        let input = result?;
        if let Input::Line(text) = &input {
            self.remember(text);
        }
        Ok(input)
    }

    /// The raw-mode loop: keys in, redraws out, until the line is done.
    fn edit(&mut self, prompt: &str) -> io::Result<Input> {
        let mut stdin = io::stdin().lock();
        let mut stdout = io::stdout().lock();
        let mut line = Line::default();
        self.history.at = self.history.entries.len();
        self.history.draft.clear();
        let mut row = 0;
        let redraw = |line: &Line, row: &mut usize, out: &mut io::StdoutLock| {
            let (bytes, new_row) = render(prompt, line, term::columns(), *row);
            *row = new_row;
            out.write_all(bytes.as_bytes())?;
            out.flush()
        };
        redraw(&line, &mut row, &mut stdout)?;
        // Keys are applied as they arrive and the line is redrawn once per
        // read, so pasted text is drawn once, not once per character.
        let mut bytes = [0u8; 256];
        loop {
            let chunk = if self.typed_ahead.is_empty() {
                let n = stdin.read(&mut bytes)?;
                if n == 0 {
                    return Ok(Input::Eof);
                }
                bytes[..n].to_vec()
            } else {
                std::mem::take(&mut self.typed_ahead)
            };
            for (i, &byte) in chunk.iter().enumerate() {
                let Some(key) = self.decoder.feed(byte) else {
                    continue;
                };
                match apply(&mut line, &mut self.history, key) {
                    Step::Edited => {}
                    Step::Clear => {
                        stdout.write_all(b"\x1b[H\x1b[2J")?;
                        row = 0;
                    }
                    Step::Done(input) => {
                        // Leave the whole line on screen, cursor at its end.
                        // Bytes after Enter in the same read (a pasted
                        // block's next lines) are the next line's keys.
                        self.typed_ahead = chunk[i + 1..].to_vec();
                        line.cursor = line.text.len();
                        redraw(&line, &mut row, &mut stdout)?;
                        return Ok(input);
                    }
                }
            }
            redraw(&line, &mut row, &mut stdout)?;
        }
    }

    /// Adds a typed line to the history (and its file), skipping blank
    /// lines and a repeat of the last entry.
    fn remember(&mut self, text: &str) {
        let Some(file) = &self.file else {
            return;
        };
        if text.trim().is_empty() || self.history.entries.last().is_some_and(|l| l == text) {
            return;
        }
        self.history.entries.push(text.to_string());
        if self.history.entries.len() > HISTORY_LIMIT {
            self.history.entries.remove(0);
        }
        // History is a convenience: a file that cannot be written costs
        // only the history.
        let written = file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(file)
            })
            .and_then(|mut f| writeln!(f, "{text}"));
        if let Err(e) = written {
            log::debug!("history not saved to {}: {e}", file.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `bytes` into keys.
    fn keys(bytes: &[u8]) -> Vec<Key> {
        let mut d = Decoder::default();
        bytes.iter().filter_map(|&b| d.feed(b)).collect()
    }

    /// Types `bytes` into an empty line with `history`; the line and its
    /// cursor afterwards, or how it ended.
    fn check(history: &[&str], bytes: &[u8], want: &str, want_cursor: usize) {
        let mut h = History {
            entries: history.iter().map(|s| s.to_string()).collect(),
            at: history.len(),
            draft: String::new(),
        };
        let mut line = Line::default();
        for key in keys(bytes) {
            if let Step::Done(end) = apply(&mut line, &mut h, key) {
                panic!("ended with {end:?}");
            }
        }
        assert_eq!(line.string(), want, "{bytes:?}");
        assert_eq!(line.cursor, want_cursor, "{bytes:?}");
    }

    #[test]
    fn decodes_keys() {
        use Key::*;
        assert_eq!(
            keys(b"a\x1b[A\x1b[B\x1b[C\x1b[D\x1bOH\x1b[F\x1b[3~\x1b[1~\x7f\r"),
            [
                Char('a'),
                Up,
                Down,
                Right,
                Left,
                Home,
                End,
                Delete,
                Home,
                Backspace,
                Enter
            ]
        );
        assert_eq!(keys("é€😀".as_bytes()), [Char('é'), Char('€'), Char('😀')]);
        assert_eq!(
            keys(b"\x03\x04\x0b\x15\x17\x0c"),
            [
                Interrupt,
                EndOfInput,
                KillToEnd,
                KillToStart,
                KillWord,
                ClearScreen
            ]
        );
        // Unknown sequences, Alt+key and broken UTF-8 are dropped whole,
        // and decoding goes on after them.
        assert_eq!(
            keys(b"\x1b[15~x\x1bbx\xc3x"),
            [Ignored, Char('x'), Ignored, Char('x'), Ignored]
        );
        assert_eq!(keys(b"\x1b[1;5C"), [Ignored]);
        let mut endless = vec![0x1b, b'['];
        endless.extend([b'1'; 20]);
        endless.push(b'z');
        assert_eq!(keys(&endless).last(), Some(&Char('z')));
    }

    #[test]
    fn edits() {
        check(&[], b"helo\x1b[Dl", "hello", 4);
        check(&[], b"hello\x01X\x05!", "Xhello!", 7);
        check(&[], b"hello\x7f\x7f", "hel", 3);
        check(&[], b"hello\x01\x1b[3~\x04", "llo", 0);
        check(&[], b"hello world\x02\x02\x0b", "hello wor", 9);
        check(&[], b"hello world\x02\x02\x15", "ld", 0);
        check(&[], b"say hello  \x17", "say ", 4);
        check(&[], b"\x7f\x1b[D\x1b[3~x", "x", 1);
    }

    #[test]
    fn walks_history() {
        let h = ["first", "second"];
        check(&h, b"\x1b[A", "second", 6);
        check(&h, b"\x1b[A\x1b[A\x1b[A", "first", 5);
        check(&h, b"draft\x1b[A\x1b[A\x1b[B\x1b[B", "draft", 5);
        check(&h, b"\x1b[A\x1b[B\x1b[B", "", 0);
        check(&[], b"x\x1b[A", "x", 1);
    }

    #[test]
    fn ends_lines() {
        let mut h = History::default();
        let mut line = Line::default();
        assert_eq!(
            apply(&mut line, &mut h, Key::EndOfInput),
            Step::Done(Input::Eof)
        );
        line.set("typed");
        assert_eq!(
            apply(&mut line, &mut h, Key::Interrupt),
            Step::Done(Input::Interrupted { empty: false })
        );
        assert_eq!(
            apply(&mut line, &mut h, Key::Enter),
            Step::Done(Input::Line("typed".into()))
        );
    }

    #[test]
    fn renders_wrapped_lines() {
        let mut line = Line::default();
        line.set("abcdef");
        // One row: draw, then step back to the cursor's column.
        assert_eq!(
            render("> ", &line, 80, 0),
            ("\r\x1b[J> abcdef\r\x1b[8C".into(), 0)
        );
        // 2 + 6 = 8 columns on a 5-column terminal: rows 0 and 1.
        line.cursor = 1;
        assert_eq!(
            render("> ", &line, 5, 1),
            ("\x1b[1A\r\x1b[J> abcdef\x1b[1A\r\x1b[3C".into(), 0)
        );
        // Exactly at the margin: the cursor is moved onto the next row.
        line.set("abc");
        assert_eq!(render("> ", &line, 5, 0), ("\r\x1b[J> abc\r\n\r".into(), 1));
    }

    #[test]
    fn keeps_history_in_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("sub").join("history");
        let mut e = Editor::new(Some(file.clone()));
        e.remember("one");
        e.remember("one");
        e.remember("  ");
        e.remember("two");
        assert_eq!(
            std::fs::read_to_string(&file).expect("history"),
            "one\ntwo\n"
        );
        let e = Editor::new(Some(file.clone()));
        assert_eq!(e.history.entries, ["one", "two"]);
        assert_eq!(e.history.at, 2);
        let mut off = Editor::new(None);
        off.remember("three");
        assert!(off.history.entries.is_empty());
    }
}
