//! The sampler chain of one request (penalties, top-k/p, min-p, typical,
//! temperature, seeded pick) with an optional grammar sampler kept apart so
//! it can be checked before the chain runs.

use std::ffi::CString;
use std::ptr::NonNull;

use super::{ffi, take_problem, LlamaModel};

/// Which samplers to chain; built by the runner from the request.
pub struct SamplerSpec<'a> {
    pub grammar: Option<&'a str>,
    pub penalty_last_n: i32,
    pub repeat: f32,
    pub frequency: f32,
    pub presence: f32,
    pub top_k: i32,
    pub typical_p: f32,
    pub top_p: f32,
    pub min_p: f32,
    pub temperature: f32,
    pub seed: u32,
}

/// A llama.cpp sampler chain owned by one generation.
pub struct Sampler {
    pub(super) ptr: NonNull<ffi::llama_sampler>,
    /// Chain index of the penalties sampler, which alone is fed the prompt.
    pub(super) penalties_at: Option<i32>,
    /// The grammar, kept out of the chain (see `Context::sample_checked`).
    pub(super) grammar: Option<NonNull<ffi::llama_sampler>>,
    pub(super) cur: Vec<ffi::llama_token_data>,
}

// SAFETY: a sampler chain is plain heap state used from one thread at a time.
unsafe impl Send for Sampler {}

impl Sampler {
    pub fn new(model: &LlamaModel, s: &SamplerSpec<'_>) -> Result<Sampler, String> {
        // SAFETY: returns a plain struct of defaults.
        let params = unsafe { ffi::llama_sampler_chain_default_params() };
        // SAFETY: creates an empty chain; null only on allocation failure.
        let chain = NonNull::new(unsafe { ffi::llama_sampler_chain_init(params) })
            .ok_or_else(|| "could not allocate a sampler chain".to_string())?;
        let mut me = Sampler {
            ptr: chain,
            penalties_at: None,
            grammar: None,
            cur: Vec::new(),
        };
        let mut n: i32 = 0;
        let mut add = |me: &mut Sampler, p: *mut ffi::llama_sampler| -> Result<i32, String> {
            if p.is_null() {
                return Err("could not create a sampler".into());
            }
            // SAFETY: the chain takes ownership of the non-null sampler `p`.
            unsafe { ffi::llama_sampler_chain_add(me.ptr.as_ptr(), p) };
            n += 1;
            Ok(n - 1)
        };
        if let Some(g) = s.grammar {
            let g = CString::new(g).map_err(|_| "grammar contains a NUL byte".to_string())?;
            let _ = take_problem();
            // SAFETY: valid C strings for the call; the wrapper catches parse
            // exceptions and returns null on any failure.
            let p = unsafe {
                ffi::llama_rs_sampler_init_grammar(
                    model.vocab.as_ptr(),
                    g.as_ptr(),
                    c"root".as_ptr(),
                )
            };
            me.grammar = Some(
                NonNull::new(p)
                    .ok_or_else(|| take_problem().unwrap_or_else(|| "invalid grammar".into()))?,
            );
        }
        if s.penalty_last_n != 0 && (s.repeat != 1.0 || s.frequency != 0.0 || s.presence != 0.0) {
            // SAFETY: plain constructor.
            let p = unsafe {
                ffi::llama_sampler_init_penalties(
                    model.n_vocab,
                    s.penalty_last_n,
                    s.repeat,
                    s.frequency,
                    s.presence,
                )
            };
            me.penalties_at = Some(add(&mut me, p)?);
        }
        if s.temperature <= 0.0 {
            // SAFETY: plain constructor.
            add(&mut me, unsafe { ffi::llama_sampler_init_greedy() })?;
            return Ok(me);
        }
        if s.top_k > 0 {
            // SAFETY: plain constructor.
            add(&mut me, unsafe { ffi::llama_sampler_init_top_k(s.top_k) })?;
        }
        if s.typical_p > 0.0 && s.typical_p < 1.0 {
            // SAFETY: plain constructor.
            add(&mut me, unsafe {
                ffi::llama_sampler_init_typical(s.typical_p, 1)
            })?;
        }
        if s.top_p > 0.0 && s.top_p < 1.0 {
            // SAFETY: plain constructor.
            add(&mut me, unsafe {
                ffi::llama_sampler_init_top_p(s.top_p, 1)
            })?;
        }
        if s.min_p > 0.0 {
            // SAFETY: plain constructor.
            add(&mut me, unsafe {
                ffi::llama_sampler_init_min_p(s.min_p, 1)
            })?;
        }
        // SAFETY: plain constructors.
        add(&mut me, unsafe {
            ffi::llama_sampler_init_temp(s.temperature)
        })?;
        // SAFETY: plain constructor; RANDOM_SEED asks llama.cpp for a random seed.
        add(&mut me, unsafe { ffi::llama_sampler_init_dist(s.seed) })?;
        Ok(me)
    }

    /// Feeds prompt tokens to the repetition penalties only (never to the
    /// grammar, which must see only generated text).
    pub fn accept_prompt(&mut self, tokens: &[i32]) {
        let Some(i) = self.penalties_at else {
            return;
        };
        // SAFETY: `i` is the index we added the penalties sampler at; the
        // chain owns it and returns a valid pointer.
        let p = unsafe { ffi::llama_sampler_chain_get(self.ptr.as_ptr(), i) };
        if p.is_null() {
            return;
        }
        for &t in tokens {
            // SAFETY: the penalties sampler accepts any token id without
            // throwing (it only records counts).
            unsafe { ffi::llama_sampler_accept(p, t) };
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        // SAFETY: we own the chain, which frees its samplers.
        unsafe { ffi::llama_sampler_free(self.ptr.as_ptr()) };
        if let Some(g) = self.grammar {
            // SAFETY: we own the grammar sampler; it is in no chain.
            unsafe { ffi::llama_sampler_free(g.as_ptr()) };
        }
    }
}
