//! The runner thread's loop: slots, the batch scheduler and sampling.
//!
//! Every loop iteration builds one batch with one token for every
//! generating slot plus prompt chunks of newly admitted slots, decodes it
//! once, then samples for every slot whose logits are ready. Each slot
//! remembers the tokens in its cells; a new request takes the free slot
//! sharing the longest prefix with its prompt and only evaluates the rest.
//! `runner.rs` is the handle callers hold; this file is what its thread runs.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use super::cpu::{Busy, CpuBudget};
use super::runner::{Command, Pending};
use super::sys::{Batch, Context, Mtmd, Sampler};
use super::{DoneReason, Error, Event, LoadParams, Sink};

/// Where a slot's active request is.
enum Phase {
    /// Prompt tokens from `prompt[next..]` still need evaluating.
    Prompt { next: usize },
    /// Waiting to feed the last sampled token back.
    Generate { token: i32 },
}

/// The active request of a slot.
struct Active {
    sink: Sink,
    sampler: Sampler,
    prompt: Vec<i32>,
    phase: Phase,
    cached: usize,
    num_predict: i32,
    stop_at_eog: bool,
    num_keep: usize,
    shift: bool,
    generated: usize,
    started: Instant,
    prompt_done: Option<Instant>,
    /// Batch row whose logits belong to this job in the current decode.
    row: Option<i32>,
    /// Whether the current batch holds tokens of this job.
    in_batch: bool,
    /// Alternatives to report with each token's log probability.
    logprobs: Option<usize>,
    /// Prompt tokens this request evaluated (reported in `PromptDone`).
    evaluated: usize,
}

/// One sequence of the context.
struct Slot {
    seq: i32,
    /// Tokens whose KV sits at positions `0..cache.len()` of this sequence.
    cache: Vec<i32>,
    job: Option<Active>,
    last_used: u64,
}

/// State of the runner thread.
pub(super) struct Worker<'a> {
    ctx: Context,
    mtmd: Option<Arc<Mtmd>>,
    batch: Batch,
    slots: Vec<Slot>,
    queue: VecDeque<Command>,
    cpu: &'a CpuBudget,
    busy: Option<Busy<'a>>,
    n_threads: usize,
    n_ctx: usize,
    embeddings_ctx: bool,
    tick: u64,
}

impl<'a> Worker<'a> {
    pub(super) fn new(
        ctx: Context,
        mtmd: Option<Arc<Mtmd>>,
        params: &LoadParams,
        cpu: &'a CpuBudget,
    ) -> Worker<'a> {
        let n_ctx = ctx.n_ctx_seq() as usize;
        let slots = (0..params.n_parallel)
            .map(|i| Slot {
                seq: i32::try_from(i).unwrap_or(0),
                cache: Vec::new(),
                job: None,
                last_used: 0,
            })
            .collect();
        Worker {
            // What the context takes, which may be less than asked for (a
            // small num_ctx lowers the batch): a larger decode would abort.
            batch: Batch::new(params.n_batch.min(ctx.n_batch()).max(1) as usize),
            ctx,
            mtmd,
            slots,
            queue: VecDeque::new(),
            cpu,
            busy: None,
            n_threads: params.n_threads.max(1),
            n_ctx,
            embeddings_ctx: params.embeddings,
            tick: 0,
        }
    }

    fn has_work(&self) -> bool {
        !self.queue.is_empty() || self.slots.iter().any(|s| s.job.is_some())
    }

    pub(super) fn run(&mut self, rx: &mpsc::Receiver<Command>) {
        loop {
            // Block only when there is nothing to do, and hold no claim on the
            // CPU budget while idle.
            if !self.has_work() {
                self.busy = None;
                self.ctx.pause_threads();
                match rx.recv() {
                    Ok(cmd) => self.queue.push_back(cmd),
                    Err(_) => break,
                }
            }
            while let Ok(cmd) = rx.try_recv() {
                self.queue.push_back(cmd);
            }
            if self.queue.iter().any(|c| matches!(c, Command::Stop)) {
                break;
            }
            if self.busy.is_none() {
                self.busy = Some(self.cpu.busy());
            }
            self.admit();
            self.step();
        }
        self.shutdown();
    }

    /// Fails every queued and active request because the runner is stopping.
    fn shutdown(&mut self) {
        for slot in &mut self.slots {
            if let Some(mut job) = slot.job.take() {
                (job.sink)(Event::Error(Error::RunnerGone));
            }
        }
        for cmd in self.queue.drain(..) {
            match cmd {
                Command::Generate(mut p) => {
                    (p.sink)(Event::Error(Error::RunnerGone));
                }
                Command::Embed(_, reply) => {
                    let _ = reply.send(Err(Error::RunnerGone));
                }
                Command::Stop => {}
            }
        }
        self.busy = None;
    }

    /// Moves queued requests into free slots, in arrival order.
    fn admit(&mut self) {
        while self.slots.iter().any(|s| s.job.is_none()) {
            match self.queue.pop_front() {
                Some(Command::Generate(p)) => self.start(*p),
                Some(Command::Embed(inputs, reply)) => {
                    let r = self.embed(&inputs);
                    let _ = reply.send(r);
                }
                Some(Command::Stop) | None => return,
            }
        }
    }

    /// Starts a generation in the free slot with the longest shared prefix.
    fn start(&mut self, p: Pending) {
        if p.req.media.is_some() {
            return self.start_media(p);
        }
        let Pending {
            req,
            mut sampler,
            mut sink,
        } = p;
        let n_ctx = self.n_ctx;
        let mut prompt = req.prompt;
        let mut num_keep = (req.num_keep as usize).min(n_ctx.saturating_sub(2));
        if prompt.len() > n_ctx {
            if !req.shift {
                sink(Event::Error(Error::PromptTooLong {
                    tokens: prompt.len(),
                    n_ctx,
                }));
                return;
            }
            // Keep the first `num_keep` tokens and the newest tail, leaving
            // room to generate (Ollama's rule: n_ctx - max((n_ctx-keep)/2, 1)).
            num_keep = num_keep.min(prompt.len());
            let target = n_ctx - ((n_ctx - num_keep) / 2).max(1);
            let tail = target - num_keep;
            let mut cut = prompt[..num_keep].to_vec();
            cut.extend_from_slice(&prompt[prompt.len() - tail..]);
            prompt = cut;
        }
        // Pick the free slot with the longest common prefix; among equals the
        // least recently used, so hot caches survive longer.
        let Some(idx) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.job.is_none())
            .max_by_key(|(_, s)| (common_prefix(&s.cache, &prompt), u64::MAX - s.last_used))
            .map(|(i, _)| i)
        else {
            return;
        };
        self.tick += 1;
        let slot = &mut self.slots[idx];
        slot.last_used = self.tick;
        let mut cached = common_prefix(&slot.cache, &prompt);
        log::debug!(
            "slot {}: {} tokens cached, prompt {} tokens, {} shared",
            slot.seq,
            slot.cache.len(),
            prompt.len(),
            cached
        );
        if cached == prompt.len() {
            // Re-evaluate the last prompt token so its logits exist.
            cached -= 1;
        }
        // A sliding-window cache drops cells older than its window; if the
        // window before `cached` is gone, the prefix cannot be reused.
        let n_swa = self.ctx.model().n_swa();
        if cached > 0 && n_swa > 0 {
            let pos_min = self.ctx.seq_pos_min(slot.seq);
            let needed = i32::try_from(cached)
                .unwrap_or(i32::MAX)
                .saturating_sub(n_swa)
                .max(0);
            if pos_min > needed {
                cached = 0;
            }
        }
        let p0 = i32::try_from(cached).unwrap_or(0);
        if !self.ctx.seq_rm(slot.seq, p0, -1) {
            // This memory type cannot drop a suffix; start the slot over.
            self.ctx.seq_rm(slot.seq, -1, -1);
            cached = 0;
        }
        slot.cache.truncate(cached);
        let history = prompt
            .len()
            .saturating_sub(req.sampling.repeat_last_n.max(0) as usize);
        let history = if req.sampling.repeat_last_n < 0 {
            0
        } else {
            history
        };
        sampler.accept_prompt(&prompt[history..]);
        slot.job = Some(Active {
            sink,
            sampler,
            prompt,
            phase: Phase::Prompt { next: cached },
            cached,
            num_predict: req.num_predict,
            stop_at_eog: req.stop_at_eog,
            logprobs: req.logprobs,
            num_keep,
            shift: req.shift,
            generated: 0,
            started: Instant::now(),
            prompt_done: None,
            row: None,
            in_batch: false,
            evaluated: 0,
        });
    }

    /// Starts a generation whose prompt has images: evaluates the whole
    /// prompt now (mtmd's helper decodes text and image embeddings into the
    /// slot's sequence), then samples the first token, so the slot joins the
    /// next batch already generating. The least recently used free slot is
    /// cleared for it; nothing is reused from its cache.
    fn start_media(&mut self, p: Pending) {
        let Pending {
            req,
            mut sampler,
            mut sink,
        } = p;
        let Some(media) = req.media else {
            return;
        };
        let Some(mtmd) = self.mtmd.clone() else {
            sink(Event::Error(Error::NoVision));
            return;
        };
        if media.n_pos() >= self.n_ctx {
            sink(Event::Error(Error::PromptTooLong {
                tokens: media.n_pos(),
                n_ctx: self.n_ctx,
            }));
            return;
        }
        let Some(idx) = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.job.is_none())
            .min_by_key(|(_, s)| s.last_used)
            .map(|(i, _)| i)
        else {
            return;
        };
        self.tick += 1;
        let started = Instant::now();
        let seq = self.slots[idx].seq;
        self.slots[idx].last_used = self.tick;
        self.slots[idx].cache.clear();
        self.ctx.seq_rm(seq, -1, -1);
        let text = media.text_tokens();
        let history = if req.sampling.repeat_last_n < 0 {
            0
        } else {
            text.len()
                .saturating_sub(req.sampling.repeat_last_n as usize)
        };
        sampler.accept_prompt(&text[history..]);
        let n_batch = i32::try_from(self.batch.capacity()).unwrap_or(i32::MAX);
        let result = self.compute(|ctx, _| mtmd.eval(ctx, &media.chunks, seq, n_batch));
        let n_past = match result {
            Ok(n) => n,
            Err(code) => {
                self.ctx.seq_rm(seq, -1, -1);
                sink(Event::Error(Error::MediaEval { code }));
                return;
            }
        };
        let mut layout = media.layout.as_ref().clone();
        layout.resize(n_past, -1);
        self.slots[idx].cache = layout;
        self.slots[idx].job = Some(Active {
            sink,
            sampler,
            prompt: text,
            phase: Phase::Generate { token: -1 },
            cached: 0,
            num_predict: req.num_predict,
            stop_at_eog: req.stop_at_eog,
            logprobs: req.logprobs,
            num_keep: 0,
            // Shifting would move image embeddings around; stop with
            // `length` when the context fills instead.
            shift: false,
            generated: 0,
            started,
            prompt_done: None,
            // The helper's last decode left the prompt's logits in the
            // context's last output row.
            row: Some(-1),
            in_batch: false,
            evaluated: media.n_tokens(),
        });
        self.after_decode(idx);
    }

    /// Runs `f` (one decode) with the threads the CPU budget grants now.
    /// While another runner is busy too, the pool's workers are put to sleep
    /// right after, so they do not poll on the cores that runner computes on.
    fn compute<R>(&mut self, f: impl FnOnce(&mut Context, &Batch) -> R) -> R {
        let grant = self.cpu.acquire(self.n_threads);
        let threads = i32::try_from(grant.threads()).unwrap_or(1);
        if let Err(e) = self.ctx.set_threads(threads) {
            log::warn!("{e}; decoding on one thread");
            let _ = self.ctx.set_threads(1);
        }
        let result = f(&mut self.ctx, &self.batch);
        drop(grant);
        if self.cpu.others_busy() {
            self.ctx.pause_threads();
        }
        result
    }

    /// One scheduler iteration: build a batch, decode it, sample.
    fn step(&mut self) {
        self.batch.clear();
        let can_shift = self.ctx.can_shift();
        // Generating slots first: one token each, so streams never starve
        // behind a long prompt.
        for i in 0..self.slots.len() {
            let Some(job) = self.slots[i].job.as_ref() else {
                continue;
            };
            let Phase::Generate { token } = job.phase else {
                continue;
            };
            let shift = job.shift && can_shift;
            if self.slots[i].cache.len() >= self.n_ctx {
                if shift {
                    self.shift_slot(i);
                } else {
                    self.finish(i, DoneReason::Length);
                    continue;
                }
            }
            let slot = &mut self.slots[i];
            let pos = i32::try_from(slot.cache.len()).unwrap_or(i32::MAX);
            let row = self.batch.push(token, pos, slot.seq, true);
            if let Some(job) = slot.job.as_mut() {
                job.row = row;
                job.in_batch = row.is_some();
            }
        }
        // Then prompt chunks, as many as fit.
        for slot in &mut self.slots {
            let Some(job) = slot.job.as_mut() else {
                continue;
            };
            let Phase::Prompt { next } = job.phase else {
                continue;
            };
            let room = self.batch.capacity() - self.batch.len();
            if room == 0 {
                break;
            }
            let end = job.prompt.len().min(next + room);
            job.in_batch = true;
            for (k, &t) in job.prompt[next..end].iter().enumerate() {
                let pos = i32::try_from(next + k).unwrap_or(i32::MAX);
                let last = next + k + 1 == job.prompt.len();
                let row = self.batch.push(t, pos, slot.seq, last);
                if last {
                    job.row = row;
                }
            }
            job.phase = Phase::Prompt { next: end };
        }
        if self.batch.len() == 0 {
            return;
        }
        let result = self.compute(|ctx, batch| ctx.decode(batch));
        if let Err(code) = result {
            self.fail_batch(code);
            return;
        }
        // The batch is in the KV cache now: record what each slot holds.
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            let Some(job) = slot.job.as_mut() else {
                continue;
            };
            match job.phase {
                Phase::Generate { token } if job.in_batch => slot.cache.push(token),
                Phase::Prompt { next } => {
                    let have = slot.cache.len();
                    if next > have {
                        slot.cache.extend_from_slice(&job.prompt[have..next]);
                    }
                }
                Phase::Generate { .. } => {}
            }
            self.after_decode(i);
        }
    }

    /// Handles a slot after a successful decode: prompt completion and sampling.
    fn after_decode(&mut self, i: usize) {
        let Some(mut job) = self.slots[i].job.take() else {
            return;
        };
        job.in_batch = false;
        let Some(row) = job.row.take() else {
            self.slots[i].job = Some(job);
            return;
        };
        if job.prompt_done.is_none() {
            let now = Instant::now();
            job.prompt_done = Some(now);
            let evaluated = if job.evaluated > 0 {
                job.evaluated
            } else {
                job.prompt.len() - job.cached
            };
            let ev = Event::PromptDone {
                prompt_tokens: evaluated,
                cached_tokens: job.cached,
                duration: now - job.started,
            };
            if !(job.sink)(ev) {
                return;
            }
            if job.num_predict == 0 {
                return done(job, DoneReason::Length);
            }
        }
        let Some(token) = self.ctx.sample(&mut job.sampler, row) else {
            (job.sink)(Event::Error(Error::Sampling));
            return;
        };
        if job.stop_at_eog && self.ctx.model().is_eog(token) {
            return done(job, DoneReason::Stop);
        }
        let bytes = self.ctx.model().token_piece(token);
        let logprob = job.logprobs.and_then(|n| self.ctx.logprob(row, token, n));
        job.generated += 1;
        if !(job.sink)(Event::Token {
            id: token,
            bytes,
            logprob,
        }) {
            // Client gone: the slot is free from now on. Its cache stays
            // valid for prefix reuse.
            return;
        }
        if job.num_predict > 0 && job.generated >= job.num_predict as usize {
            return done(job, DoneReason::Length);
        }
        job.phase = Phase::Generate { token };
        self.slots[i].job = Some(job);
    }

    /// Ends slot `i`'s request with `Done`.
    fn finish(&mut self, i: usize, reason: DoneReason) {
        if let Some(job) = self.slots[i].job.take() {
            done(job, reason);
        }
    }

    /// Discards half of the tokens after `num_keep` to make room, moving the
    /// rest back (llama.cpp re-ropes the shifted keys on the next decode).
    fn shift_slot(&mut self, i: usize) {
        let slot = &mut self.slots[i];
        let Some(job) = slot.job.as_ref() else {
            return;
        };
        let n_past = slot.cache.len();
        let keep = job.num_keep.min(n_past.saturating_sub(1));
        let discard = ((n_past - keep) / 2).max(1);
        let to_i32 = |v: usize| i32::try_from(v).unwrap_or(i32::MAX);
        self.ctx
            .seq_rm(slot.seq, to_i32(keep), to_i32(keep + discard));
        self.ctx.seq_add(
            slot.seq,
            to_i32(keep + discard),
            to_i32(n_past),
            -to_i32(discard),
        );
        slot.cache.drain(keep..keep + discard);
    }

    /// A decode failed: every request in the batch gets the error and its
    /// slot is cleared, since its KV state is now unknown.
    fn fail_batch(&mut self, code: i32) {
        for slot in &mut self.slots {
            let in_batch = slot.job.as_ref().is_some_and(|j| j.in_batch);
            if !in_batch {
                continue;
            }
            if let Some(mut job) = slot.job.take() {
                (job.sink)(Event::Error(Error::Decode { code }));
            }
            self.ctx.seq_rm(slot.seq, -1, -1);
            slot.cache.clear();
        }
    }

    /// Embeds `inputs`, packing as many as fit into each decode, one free
    /// slot (sequence) per input: a BERT-style model embeds a batch of short
    /// sentences in about the time of one.
    fn embed(&mut self, inputs: &[Vec<i32>]) -> Result<Vec<Vec<f32>>, Error> {
        // A generation context plans one output row per sequence (see
        // `context_params`); a model with no pooling needs one per token.
        if !self.embeddings_ctx {
            return Err(Error::Embeddings(
                "the model was loaded for generation; load it for embeddings".into(),
            ));
        }
        let mut free: Vec<usize> = (0..self.slots.len())
            .filter(|&i| self.slots[i].job.is_none())
            .collect();
        if free.is_empty() {
            return Err(Error::Embeddings("no free slot".into()));
        }
        // Least recently used slots first, so hot prefix caches survive.
        free.sort_by_key(|&i| self.slots[i].last_used);
        let seqs: Vec<i32> = free.iter().map(|&i| self.slots[i].seq).collect();
        for &i in &free {
            self.slots[i].cache.clear();
        }
        for &seq in &seqs {
            self.ctx.seq_rm(seq, -1, -1);
        }
        let result = self.embed_groups(inputs, &seqs);
        for &seq in &seqs {
            self.ctx.seq_rm(seq, -1, -1);
        }
        result
    }

    fn embed_groups(&mut self, inputs: &[Vec<i32>], seqs: &[i32]) -> Result<Vec<Vec<f32>>, Error> {
        let limit = self.batch.capacity().min(self.n_ctx);
        let mut out = Vec::with_capacity(inputs.len());
        let mut next = 0;
        while next < inputs.len() {
            self.batch.clear();
            // (first batch row, token count) of each input in this decode.
            let mut group: Vec<(usize, usize)> = Vec::new();
            while next + group.len() < inputs.len() && group.len() < seqs.len() {
                let input = &inputs[next + group.len()];
                if input.len() > limit {
                    return Err(Error::PromptTooLong {
                        tokens: input.len(),
                        n_ctx: limit,
                    });
                }
                if self.batch.len() + input.len() > self.batch.capacity() {
                    break;
                }
                let seq = seqs[group.len()];
                let first = self.batch.len();
                for (k, &t) in input.iter().enumerate() {
                    self.batch
                        .push(t, i32::try_from(k).unwrap_or(i32::MAX), seq, true);
                }
                group.push((first, input.len()));
            }
            let result = self.compute(|ctx, batch| ctx.decode(batch));
            result.map_err(|code| Error::Decode { code })?;
            for (k, &(first, len)) in group.iter().enumerate() {
                let v = if self.ctx.pools() {
                    self.ctx
                        .embedding_seq(seqs[k])
                        .ok_or_else(|| Error::Embeddings("no pooled output".into()))?
                } else {
                    // No pooling in the model: average the token embeddings.
                    let mut sum: Vec<f32> = Vec::new();
                    for row in first..first + len {
                        let e = self
                            .ctx
                            .embedding_ith(i32::try_from(row).unwrap_or(i32::MAX))
                            .ok_or_else(|| Error::Embeddings("no token output".into()))?;
                        if sum.is_empty() {
                            sum = e;
                        } else {
                            sum.iter_mut().zip(&e).for_each(|(a, b)| *a += b);
                        }
                    }
                    let n = len as f32;
                    sum.iter_mut().for_each(|a| *a /= n);
                    sum
                };
                out.push(normalised(v));
            }
            for &seq in &seqs[..group.len()] {
                self.ctx.seq_rm(seq, -1, -1);
            }
            next += group.len();
        }
        Ok(out)
    }
}

/// Scales a vector to unit length (a zero vector stays zero).
fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

/// Sends the final `Done` event of a job.
fn done(mut job: Active, reason: DoneReason) {
    let since = job.prompt_done.unwrap_or(job.started);
    (job.sink)(Event::Done {
        reason,
        eval_count: job.generated,
        eval_duration: since.elapsed(),
    });
}

fn common_prefix(a: &[i32], b: &[i32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}
