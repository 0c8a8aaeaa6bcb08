//! Thinking: separating a model's reasoning (`<think>...</think>`) from its
//! answer, as text streams in, for models whose template has thinking tags.

const OPEN: &str = "<think>";
const CLOSE: &str = "</think>";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Nothing but whitespace seen: an opening tag may still come.
    Start,
    /// Inside the reasoning.
    Thinking,
    /// Past the reasoning (or there was none).
    Content,
}

/// Splits streamed text into thinking and content pieces.
#[derive(Debug)]
pub struct Splitter {
    state: State,
    held: String,
}

impl Splitter {
    /// `in_thinking`: the prompt itself opened the tag (the template ends
    /// with `<think>`), so the answer starts inside the reasoning.
    pub fn new(in_thinking: bool) -> Splitter {
        Splitter {
            state: if in_thinking {
                State::Thinking
            } else {
                State::Start
            },
            held: String::new(),
        }
    }

    /// Adds text; returns the (thinking, content) that is certain so far.
    pub fn push(&mut self, text: &str) -> (String, String) {
        self.held.push_str(text);
        let (mut thinking, mut content) = (String::new(), String::new());
        loop {
            match self.state {
                State::Start => {
                    let trimmed = self.held.trim_start();
                    if let Some(rest) = trimmed.strip_prefix(OPEN) {
                        self.held = rest.to_string();
                        self.state = State::Thinking;
                    } else if OPEN.starts_with(trimmed) {
                        // Whitespace or a partial tag: wait for more.
                        return (thinking, content);
                    } else {
                        self.state = State::Content;
                    }
                }
                State::Thinking => {
                    if let Some(at) = self.held.find(CLOSE) {
                        thinking.push_str(&self.held[..at]);
                        let rest = self.held[at + CLOSE.len()..].trim_start().to_string();
                        self.held = rest;
                        self.state = State::Content;
                    } else {
                        let keep = partial_suffix(&self.held, CLOSE);
                        let ready = self.held.len() - keep;
                        thinking.push_str(&self.held[..ready]);
                        self.held.drain(..ready);
                        return (thinking, content);
                    }
                }
                State::Content => {
                    content.push_str(&self.held);
                    self.held.clear();
                    return (thinking, content);
                }
            }
        }
    }

    /// Whatever is still held back, at the end of the answer.
    pub fn finish(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.held);
        match self.state {
            State::Thinking => (rest, String::new()),
            _ => (String::new(), rest),
        }
    }
}

/// Length of the longest suffix of `text` that is a proper prefix of `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len().min(text.len() + 1))
        .rev()
        .find(|&n| text.is_char_boundary(text.len() - n) && text.ends_with(&tag[..n]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(in_thinking: bool, pieces: &[&str], thinking: &str, content: &str) {
        let mut s = Splitter::new(in_thinking);
        let (mut t, mut c) = (String::new(), String::new());
        for p in pieces {
            let (a, b) = s.push(p);
            t.push_str(&a);
            c.push_str(&b);
        }
        let (a, b) = s.finish();
        t.push_str(&a);
        c.push_str(&b);
        assert_eq!((t.as_str(), c.as_str()), (thinking, content), "{pieces:?}");
    }

    #[test]
    fn splits_across_pieces() {
        check(
            false,
            &["<th", "ink>Let me", " see.</th", "ink>\n\nIt is 4."],
            "Let me see.",
            "It is 4.",
        );
        check(false, &["  <think>a</think>b"], "a", "b");
        check(false, &["No tags at all."], "", "No tags at all.");
        check(false, &["<", "b>bold</b>"], "", "<b>bold</b>");
        check(
            true,
            &["reasoning only, then", "</think>answer"],
            "reasoning only, then",
            "answer",
        );
        check(true, &["never closed"], "never closed", "");
    }
}
