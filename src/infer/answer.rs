//! Drives a prepared job to its answer, the same way for every dialect:
//! whole ([`complete`]) or as a stream of [`Update`]s ([`stream`]). Each
//! dialect only decides how an answer or an update is written on the wire.

use std::time::Duration;

use super::prepare::Job;
use super::shape::{split_answer, Calls, Piece, Shaper};
use super::stream::{consume, resolve_logprobs, start, Logprob, Outcome};
use super::Error;
use crate::scheduler::Lease;
use crate::tools;

/// A whole answer.
pub(crate) struct Answer {
    /// Reasoning split from the answer (empty when none).
    pub(crate) thinking: String,
    /// The visible text, without tool calls.
    pub(crate) content: String,
    /// Tool calls found in the answer.
    pub(crate) calls: Vec<tools::Call>,
    /// Log probabilities, when asked for.
    pub(crate) logprobs: Option<Vec<Logprob>>,
    /// Statistics (its `text` is `content`) and an error that ended it.
    pub(crate) outcome: Outcome,
    /// How long loading the model took for this request.
    pub(crate) load: Duration,
}

/// Runs the job to the end and splits the answer into reasoning, text and
/// tool calls. An error before any text is the request's error; after
/// some, it stays in `outcome.error` for the dialect to decide.
pub(crate) async fn complete(job: &Job, lease: Lease) -> Result<Answer, Error> {
    let erx = start(job, &lease)?;
    let mut outcome = consume(erx, &job.opts.stop, |_, _| true).await;
    let load = lease.load_duration;
    let logprobs = job
        .logprobs
        .map(|top| resolve_logprobs(&lease, &outcome.logprobs, top));
    drop(lease);
    if let Some(e) = &outcome.error {
        if outcome.text.is_empty() {
            return Err(Error::Internal(e.clone()));
        }
    }
    let (thinking, content, calls) = split_answer(job.think, job.tools, &outcome.text);
    outcome.text.clone_from(&content);
    Ok(Answer {
        thinking,
        content,
        calls,
        logprobs,
        outcome,
        load,
    })
}

/// Something to send while an answer streams.
pub(crate) enum Update {
    /// Pieces of text ready to send, and the log probabilities of the
    /// tokens behind them (when asked for; they come with every token,
    /// also while its text is held back, so `pieces` may be empty).
    Text(Vec<Piece>, Option<Vec<Logprob>>),
    /// The end of an answer that held back tool calls.
    Calls(Calls),
}

/// How a streamed answer ended.
pub(crate) struct Streamed {
    /// Statistics and an error that ended it; `text` is what was sent as
    /// content (without held-back tool calls).
    pub(crate) outcome: Outcome,
    /// How long loading the model took for this request.
    pub(crate) load: Duration,
}

/// Starts the job; the caller then spawns [`stream`] with the receiver.
/// Split in two so that a job that cannot start is still the request's
/// error, answered with a status.
pub(crate) fn begin(job: &Job, lease: &Lease) -> Result<Started, Error> {
    Ok(Started(start(job, lease)?))
}

/// A job that has started on its runner.
pub(crate) struct Started(tokio::sync::mpsc::UnboundedReceiver<crate::engine::Event>);

/// Streams the answer: `send` gets each update and returns false when the
/// client is gone (generation then stops).
pub(crate) async fn stream(
    job: &Job,
    lease: Lease,
    started: Started,
    mut send: impl FnMut(Update) -> bool,
) -> Streamed {
    let mut shaper = Shaper::new(job.think, job.tools);
    let mut outcome = consume(started.0, &job.opts.stop, |text, lps| {
        let pieces = shaper.push(text);
        let logprobs = match (job.logprobs, lps.is_empty()) {
            (Some(top), false) => Some(resolve_logprobs(&lease, lps, top)),
            _ => None,
        };
        if pieces.is_empty() && logprobs.is_none() {
            return true;
        }
        send(Update::Text(pieces, logprobs))
    })
    .await;
    let load = lease.load_duration;
    drop(lease);
    let (rest, calls) = shaper.finish();
    if !rest.is_empty() {
        send(Update::Text(rest, None));
    }
    if let Some(calls) = calls {
        outcome.text.clone_from(&calls.rest);
        send(Update::Calls(calls));
    }
    Streamed { outcome, load }
}
