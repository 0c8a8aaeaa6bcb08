//! Shapes generated text into what clients receive: reasoning split from
//! the answer (`think`), and text that may be a tool call held back until
//! it clearly is one or is not. Native and OpenAI answers share it; each
//! only decides how a piece is written on the wire.

use crate::think;
use crate::tools;

/// A piece of a streamed answer, ready to send.
#[derive(Debug, PartialEq)]
pub(crate) enum Piece {
    /// Reasoning (`thinking`, or `reasoning` on /v1).
    Thinking(String),
    /// Visible answer text.
    Content(String),
}

/// The end of an answer that held back a tool call: the calls and the text
/// around them, sent together in one last chunk.
pub(crate) struct Calls {
    pub(crate) calls: Vec<tools::Call>,
    pub(crate) rest: String,
}

/// Streaming state of one answer.
pub(crate) struct Shaper {
    splitter: Option<think::Splitter>,
    /// Text that may be the start of a tool call.
    held: String,
    /// Once text is clearly not a call, everything passes straight through.
    passthrough: bool,
}

impl Shaper {
    /// `think`: reasoning is split off (`Some(true)` when the prompt already
    /// opened the thinking tag). `tools`: the request offered tools.
    pub(crate) fn new(think: Option<bool>, tools: bool) -> Shaper {
        Shaper {
            splitter: think.map(think::Splitter::new),
            held: String::new(),
            passthrough: !tools,
        }
    }

    /// Text from the engine; returns the pieces ready to send.
    pub(crate) fn push(&mut self, text: &str) -> Vec<Piece> {
        let mut out = Vec::new();
        let content = match self.splitter.as_mut() {
            None => text.to_string(),
            Some(sp) => {
                let (t, c) = sp.push(text);
                if !t.is_empty() {
                    out.push(Piece::Thinking(t));
                }
                c
            }
        };
        self.content(content, &mut out);
        out
    }

    fn content(&mut self, text: String, out: &mut Vec<Piece>) {
        if text.is_empty() {
            return;
        }
        if self.passthrough {
            out.push(Piece::Content(text));
            return;
        }
        self.held.push_str(&text);
        if !tools::may_be_call(&self.held) {
            self.passthrough = true;
            out.push(Piece::Content(std::mem::take(&mut self.held)));
        }
    }

    /// The answer ended: the pieces still to send, then the tool calls in
    /// held-back text (`None` when it held none).
    pub(crate) fn finish(&mut self) -> (Vec<Piece>, Option<Calls>) {
        let mut out = Vec::new();
        if let Some(sp) = self.splitter.as_mut() {
            let (t, c) = sp.finish();
            if !t.is_empty() {
                out.push(Piece::Thinking(t));
            }
            self.content(c, &mut out);
        }
        if self.held.is_empty() {
            return (out, None);
        }
        let held = std::mem::take(&mut self.held);
        let (calls, rest) = tools::parse(&held);
        if calls.is_empty() {
            out.push(Piece::Content(held));
            return (out, None);
        }
        (out, Some(Calls { calls, rest }))
    }
}

/// A whole answer at once: its reasoning, its visible text and the tool
/// calls found anywhere in it (a non-streamed answer can look at all of it).
pub(crate) fn split_answer(
    think: Option<bool>,
    tools: bool,
    text: &str,
) -> (String, String, Vec<tools::Call>) {
    let (mut thinking, mut content) = (String::new(), text.to_string());
    if let Some(in_thinking) = think {
        let mut sp = think::Splitter::new(in_thinking);
        let (t1, c1) = sp.push(text);
        let (t2, c2) = sp.finish();
        thinking = t1 + &t2;
        content = c1 + &c2;
    }
    if tools {
        let (calls, rest) = tools::parse(&content);
        if !calls.is_empty() {
            return (thinking, rest, calls);
        }
    }
    (thinking, content, Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(pieces: &[Piece]) -> String {
        pieces
            .iter()
            .map(|p| match p {
                Piece::Thinking(t) => format!("T[{t}]"),
                Piece::Content(c) => format!("C[{c}]"),
            })
            .collect()
    }

    #[test]
    fn plain_text_passes_through() {
        let mut s = Shaper::new(None, false);
        assert_eq!(texts(&s.push("Hello")), "C[Hello]");
        assert_eq!(texts(&s.push(" world")), "C[ world]");
        let (rest, calls) = s.finish();
        assert!(rest.is_empty() && calls.is_none());
    }

    #[test]
    fn reasoning_is_split_off() {
        let mut s = Shaper::new(Some(false), false);
        let mut all = texts(&s.push("<think>why"));
        all += &texts(&s.push(" not</think>Because"));
        let (rest, calls) = s.finish();
        all += &texts(&rest);
        assert!(calls.is_none());
        assert!(!all.contains("<think>"), "{all}");
        assert!(all.contains("T[why") && all.contains("C[Because]"), "{all}");
    }

    #[test]
    fn a_tool_call_is_held_back_and_parsed() {
        let mut s = Shaper::new(None, true);
        let call =
            r#"<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>"#;
        let (a, b) = call.split_at(20);
        assert!(s.push(a).is_empty());
        assert!(s.push(b).is_empty());
        let (rest, calls) = s.finish();
        assert!(rest.is_empty());
        let calls = calls.expect("a call");
        assert_eq!(calls.calls.len(), 1);
        assert_eq!(calls.calls[0].name, "get_weather");
    }

    #[test]
    fn text_that_is_not_a_call_is_released() {
        let mut s = Shaper::new(None, true);
        let out = texts(&s.push("The weather is fine."));
        assert_eq!(out, "C[The weather is fine.]");
        assert_eq!(texts(&s.push(" <tool_call>")), "C[ <tool_call>]");
    }

    #[test]
    fn whole_answers_split_the_same_way() {
        let (t, c, calls) = split_answer(Some(false), false, "<think>hm</think>Yes");
        assert_eq!((t.as_str(), c.as_str()), ("hm", "Yes"));
        assert!(calls.is_empty());
        let text = r#"<tool_call>{"name": "f", "arguments": {}}</tool_call>"#;
        let (_, c, calls) = split_answer(None, true, text);
        assert_eq!(calls.len(), 1);
        assert!(c.trim().is_empty());
    }
}
