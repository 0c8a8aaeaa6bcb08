//! The only file that calls into llama.cpp (`llama-cpp-sys-2`).
//!
//! It owns the raw pointers (model, context, batch, sampler chain) behind small
//! RAII types with safe methods, the one-time backend initialisation, and the
//! bridge from llama.cpp's log callback to the `log` crate. Everything above
//! this file is safe Rust: scheduling, slots and the public API live in
//! `runner.rs`, thread budgeting in `cpu.rs`.
//!
//! We use the raw bindings rather than `llama-cpp-2`'s safe wrapper because the
//! wrapper hides the context pointer, so there is no way to change a context's
//! thread count at run time (`llama_set_n_threads`), which the CPU budget
//! needs. Every call that can throw a C++ exception either catches it inside
//! llama.cpp (model load, context init, decode) or goes through the
//! `llama_rs_*` wrappers that catch it; an exception must never unwind into
//! Rust frames.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Once};

#[cfg(not(feature = "vision"))]
pub use no_vision::{Chunks, MediaPart, Mtmd};
pub use sampler::{Sampler, SamplerSpec};
#[cfg(feature = "vision")]
pub use vision::{Chunks, MediaPart, Mtmd};

pub use memory::{footprint, Footprint};

mod memory;
mod sampler;

use llama_cpp_sys_2 as ffi;

/// Seed value that tells llama.cpp's `dist` sampler to pick a random seed.
pub const RANDOM_SEED: u32 = 0xFFFF_FFFF;

static BACKEND: Once = Once::new();

/// Drops the resident pages of the read-only mappings of `path` after a
/// load. Loading reads the whole GGUF: the metadata (a 262k-token
/// vocabulary is megabytes of strings, already copied into llama.cpp's
/// tables) and the tensors llama.cpp repacked into its own buffers (their
/// file copies are never read again). Left alone, those pages stay in the
/// process's RSS; dropped, only the weights the next decode reads fault
/// back in, from the page cache. Linux only; elsewhere a no-op.
fn release_mapped_pages(path: &Path) {
    #[cfg(target_os = "linux")]
    {
        let Ok(target) = std::fs::canonicalize(path) else {
            return;
        };
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return;
        };
        let mut released = 0usize;
        for line in maps.lines() {
            // `start-end perms offset dev inode   path`
            let mut fields = line.splitn(6, ' ');
            let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
                continue;
            };
            let name = fields.nth(3).map(str::trim_start).unwrap_or("");
            if Path::new(name) != target || perms.contains('w') {
                continue;
            }
            let Some((start, end)) = range.split_once('-') else {
                continue;
            };
            let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            ) else {
                continue;
            };
            // SAFETY: the range is a mapping of the model file that is not
            // writable, so its pages are clean copies of the file: dropping
            // them loses nothing, and any later access (llama.cpp keeps
            // pointers into it) faults the same bytes back in from the file.
            // madvise only changes residency, never the mapping itself.
            let rc =
                unsafe { libc::madvise(start as *mut c_void, end - start, libc::MADV_DONTNEED) };
            if rc == 0 {
                released += end - start;
            }
        }
        log::debug!(
            "released {} MiB of mapped pages of {} after load",
            released >> 20,
            path.display()
        );
    }
}

thread_local! {
    /// The partial log line being assembled on this thread (llama.cpp emits
    /// lines in pieces, continued with the CONT level).
    static LOG_LINE: RefCell<(ffi::ggml_log_level, String)> = const { RefCell::new((0, String::new())) };
    /// The last error or warning line llama.cpp logged on this thread. LlamaModel
    /// loading reports failures only through the log, so `load` reads this
    /// to give the caller a reason.
    static LAST_PROBLEM: RefCell<String> = const { RefCell::new(String::new()) };
    /// While `Some`, every line llama.cpp logs on this thread is kept here
    /// too (the dry run of `memory.rs` reads its sizes from them).
    static CAPTURE: RefCell<Option<Vec<String>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns what llama.cpp logged on this thread meanwhile.
fn capturing<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    let _ = CAPTURE.try_with(|c| c.try_borrow_mut().map(|mut c| *c = Some(Vec::new())));
    let out = f();
    let lines = CAPTURE
        .try_with(|c| c.try_borrow_mut().ok().and_then(|mut c| c.take()))
        .ok()
        .flatten()
        .unwrap_or_default();
    (out, lines)
}

/// Forwards llama.cpp and ggml log lines to the `log` crate.
///
/// # Safety
///
/// Called by llama.cpp with a NUL-terminated string (or null).
unsafe extern "C" fn log_callback(
    level: ffi::ggml_log_level,
    text: *const c_char,
    _user_data: *mut c_void,
) {
    if text.is_null() {
        return;
    }
    // SAFETY: llama.cpp passes a valid NUL-terminated string that lives for
    // the duration of this call; we checked it is not null.
    let piece = unsafe { CStr::from_ptr(text) }.to_string_lossy();
    // A panic must not unwind into C, and the thread-local may already be gone
    // during thread teardown, so every access is fallible and nothing here can
    // panic.
    let _ = LOG_LINE.try_with(|cell| {
        let Ok(mut line) = cell.try_borrow_mut() else {
            return;
        };
        if level != ffi::GGML_LOG_LEVEL_CONT {
            line.0 = level;
        }
        line.1.push_str(&piece);
        if !line.1.ends_with('\n') {
            return;
        }
        let text = line.1.trim_end();
        let _ = CAPTURE.try_with(|c| {
            if let Ok(mut c) = c.try_borrow_mut() {
                if let Some(lines) = c.as_mut() {
                    lines.push(text.to_string());
                }
            }
        });
        match line.0 {
            ffi::GGML_LOG_LEVEL_ERROR => {
                log::warn!(target: "llama.cpp", "{text}");
                remember_problem(text);
            }
            ffi::GGML_LOG_LEVEL_WARN => {
                log::debug!(target: "llama.cpp", "{text}");
                remember_problem(text);
            }
            ffi::GGML_LOG_LEVEL_INFO => log::trace!(target: "llama.cpp", "{text}"),
            _ => log::trace!(target: "llama.cpp", "{text}"),
        }
        line.1.clear();
    });
}

fn remember_problem(text: &str) {
    let _ = LAST_PROBLEM.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            p.clear();
            p.push_str(text);
        }
    });
}

/// Takes the last error line llama.cpp logged on this thread, if any.
fn take_problem() -> Option<String> {
    LAST_PROBLEM
        .try_with(|p| p.try_borrow_mut().ok().map(|mut p| std::mem::take(&mut *p)))
        .ok()
        .flatten()
        .filter(|s| !s.is_empty())
}

/// Initialises the llama.cpp backend and log bridge once per process.
pub fn init_backend() {
    BACKEND.call_once(|| {
        // SAFETY: `llama_log_set` only stores the function pointer; our
        // callback is a plain `extern "C"` fn valid for the whole program.
        unsafe { ffi::llama_log_set(Some(log_callback), std::ptr::null_mut()) };
        // SAFETY: called exactly once (guarded by `Once`) before any other
        // llama.cpp use, as llama.h requires.
        unsafe { ffi::llama_backend_init() };
        // SAFETY: as for `llama_log_set`: mtmd (and its clip loader) only
        // store the function pointer, valid for the whole program.
        #[cfg(feature = "vision")]
        unsafe {
            ffi::mtmd_helper_log_set(Some(log_callback), std::ptr::null_mut())
        };
    });
}

/// A loaded model (weights and vocabulary). Immutable after load.
pub struct LlamaModel {
    ptr: NonNull<ffi::llama_model>,
    vocab: NonNull<ffi::llama_vocab>,
    n_vocab: i32,
}

// SAFETY: after loading, llama.cpp only reads the model; tokenization and
// metadata access take `const llama_model*`/`const llama_vocab*` and are
// documented as thread-safe. Creating contexts mutates nothing we share (we
// create one context per model, on one thread).
unsafe impl Send for LlamaModel {}
// SAFETY: see `Send`; all methods take `&self` and only read.
unsafe impl Sync for LlamaModel {}

impl LlamaModel {
    /// Loads a GGUF file. Errors carry llama.cpp's logged reason.
    pub fn load(path: &Path, use_mmap: bool) -> Result<LlamaModel, String> {
        LlamaModel::open(path, use_mmap, false, false)
    }

    /// Loads only a GGUF file's metadata and vocabulary, no tensors (for
    /// timing the vocabulary's share of a load).
    pub fn load_vocab(path: &Path) -> Result<LlamaModel, String> {
        LlamaModel::open(path, true, true, false)
    }

    /// `no_alloc`: only metadata, with allocations simulated (see
    /// `memory.rs`).
    fn open(
        path: &Path,
        use_mmap: bool,
        vocab_only: bool,
        no_alloc: bool,
    ) -> Result<LlamaModel, String> {
        init_backend();
        let path_str = path
            .to_str()
            .ok_or_else(|| "path is not valid UTF-8".to_string())?;
        let c_path = CString::new(path_str).map_err(|_| "path contains a NUL byte".to_string())?;
        // SAFETY: returns a plain struct of defaults.
        let mut params = unsafe { ffi::llama_model_default_params() };
        params.n_gpu_layers = 0;
        params.vocab_only = vocab_only;
        params.no_alloc = no_alloc;
        params.load_mode = if use_mmap {
            ffi::LLAMA_LOAD_MODE_MMAP
        } else {
            ffi::LLAMA_LOAD_MODE_NONE
        };
        let _ = take_problem();
        // SAFETY: `c_path` is a valid C string for the call; llama.cpp catches
        // its own exceptions during load and returns null on failure.
        let raw = unsafe { ffi::llama_model_load_from_file(c_path.as_ptr(), params) };
        let Some(ptr) = NonNull::new(raw) else {
            return Err(
                take_problem().unwrap_or_else(|| "llama.cpp could not load the file".into())
            );
        };
        // SAFETY: `ptr` is a live model.
        let vocab = unsafe { ffi::llama_model_get_vocab(ptr.as_ptr()) };
        let Some(vocab) = NonNull::new(vocab.cast_mut()) else {
            // SAFETY: `ptr` is live and owned by us; free it before bailing.
            unsafe { ffi::llama_model_free(ptr.as_ptr()) };
            return Err("model has no vocabulary".into());
        };
        // SAFETY: `vocab` belongs to the live model.
        let n_vocab = unsafe { ffi::llama_vocab_n_tokens(vocab.as_ptr()) };
        if use_mmap && !no_alloc {
            release_mapped_pages(path);
        }
        Ok(LlamaModel {
            ptr,
            vocab,
            n_vocab,
        })
    }

    pub fn n_vocab(&self) -> i32 {
        self.n_vocab
    }

    /// Sliding-window size of the model's local attention layers (0 = none).
    pub fn n_swa(&self) -> i32 {
        // SAFETY: reads a field of the live model.
        unsafe { ffi::llama_model_n_swa(self.ptr.as_ptr()) }
    }

    pub fn n_ctx_train(&self) -> u32 {
        // SAFETY: reads a field of the live model.
        let n = unsafe { ffi::llama_model_n_ctx_train(self.ptr.as_ptr()) };
        u32::try_from(n).unwrap_or(0)
    }

    pub fn n_embd(&self) -> u32 {
        // SAFETY: reads a field of the live model.
        let n = unsafe { ffi::llama_model_n_embd(self.ptr.as_ptr()) };
        u32::try_from(n).unwrap_or(0)
    }

    /// Width of the vectors `llama_get_embeddings_*` return.
    pub fn n_embd_out(&self) -> usize {
        // SAFETY: reads a field of the live model.
        let n = unsafe { ffi::llama_model_n_embd_out(self.ptr.as_ptr()) };
        usize::try_from(n).unwrap_or(0)
    }

    /// Bytes of weights.
    pub fn size(&self) -> u64 {
        // SAFETY: reads a field of the live model.
        unsafe { ffi::llama_model_size(self.ptr.as_ptr()) }
    }

    pub fn add_bos(&self) -> bool {
        // SAFETY: reads a field of the live vocabulary.
        unsafe { ffi::llama_vocab_get_add_bos(self.vocab.as_ptr()) }
    }

    pub fn is_eog(&self, token: i32) -> bool {
        if !self.valid_token(token) {
            return false;
        }
        // SAFETY: token is in range, so the vocabulary lookup cannot throw.
        unsafe { ffi::llama_vocab_is_eog(self.vocab.as_ptr(), token) }
    }

    pub fn valid_token(&self, token: i32) -> bool {
        (0..self.n_vocab).contains(&token)
    }

    /// The model's default chat template (raw Jinja text), if it has one.
    pub fn chat_template(&self) -> Option<String> {
        // SAFETY: a null name asks for the default template; the result is
        // null or a string owned by the model that lives as long as it.
        let p = unsafe { ffi::llama_model_chat_template(self.ptr.as_ptr(), std::ptr::null()) };
        if p.is_null() {
            return None;
        }
        // SAFETY: non-null, NUL-terminated, owned by the live model.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    /// A GGUF metadata value as a string, if the key exists.
    pub fn meta(&self, key: &str) -> Option<String> {
        let key = CString::new(key).ok()?;
        let mut buf = vec![0u8; 256];
        loop {
            // SAFETY: `buf` is writable for `buf.len()` bytes; llama.cpp writes
            // at most that many (snprintf semantics) and returns the full length.
            let n = unsafe {
                ffi::llama_model_meta_val_str(
                    self.ptr.as_ptr(),
                    key.as_ptr(),
                    buf.as_mut_ptr().cast::<c_char>(),
                    buf.len(),
                )
            };
            let n = usize::try_from(n).ok()?;
            if n < buf.len() {
                buf.truncate(n);
                return Some(String::from_utf8_lossy(&buf).into_owned());
            }
            buf.resize(n + 1, 0);
        }
    }

    /// Tokenizes `text`. Returns `None` if llama.cpp reports an overflow.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Option<Vec<i32>> {
        let len = i32::try_from(text.len()).ok()?;
        let mut out: Vec<i32> = vec![0; text.len() + 2];
        for _ in 0..2 {
            let cap = i32::try_from(out.len()).ok()?;
            // SAFETY: `text` is readable for `len` bytes (no NUL needed, the
            // length is passed); `out` is writable for `cap` tokens.
            let n = unsafe {
                ffi::llama_tokenize(
                    self.vocab.as_ptr(),
                    text.as_ptr().cast::<c_char>(),
                    len,
                    out.as_mut_ptr(),
                    cap,
                    add_special,
                    parse_special,
                )
            };
            if n >= 0 {
                out.truncate(usize::try_from(n).ok()?);
                return Some(out);
            }
            if n == i32::MIN {
                return None;
            }
            out.resize(usize::try_from(n.unsigned_abs()).ok()?, 0);
        }
        None
    }

    /// The raw bytes of one token's piece (special tokens rendered as text).
    pub fn token_piece(&self, token: i32) -> Vec<u8> {
        if !self.valid_token(token) {
            return Vec::new();
        }
        let mut buf = vec![0u8; 32];
        for _ in 0..2 {
            let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: token is in range (checked above, so no C++ exception);
            // `buf` is writable for `cap` bytes.
            let n = unsafe {
                ffi::llama_token_to_piece(
                    self.vocab.as_ptr(),
                    token,
                    buf.as_mut_ptr().cast::<c_char>(),
                    cap,
                    0,
                    true,
                )
            };
            if n >= 0 {
                buf.truncate(usize::try_from(n).unwrap_or(0));
                return buf;
            }
            buf.resize(usize::try_from(n.unsigned_abs()).unwrap_or(0), 0);
        }
        Vec::new()
    }

    /// Turns tokens back into bytes. Invalid ids are skipped.
    pub fn detokenize(&self, tokens: &[i32]) -> Vec<u8> {
        let tokens: Vec<i32> = tokens
            .iter()
            .copied()
            .filter(|t| self.valid_token(*t))
            .collect();
        let Ok(n_tokens) = i32::try_from(tokens.len()) else {
            return Vec::new();
        };
        let mut buf = vec![0u8; tokens.len() * 8 + 16];
        for _ in 0..2 {
            let cap = i32::try_from(buf.len()).unwrap_or(i32::MAX);
            // SAFETY: every id is in range; `tokens` is readable for
            // `n_tokens` ids and `buf` writable for `cap` bytes.
            let n = unsafe {
                ffi::llama_detokenize(
                    self.vocab.as_ptr(),
                    tokens.as_ptr(),
                    n_tokens,
                    buf.as_mut_ptr().cast::<c_char>(),
                    cap,
                    false,
                    true,
                )
            };
            if n >= 0 {
                buf.truncate(usize::try_from(n).unwrap_or(0));
                return buf;
            }
            buf.resize(usize::try_from(n.unsigned_abs()).unwrap_or(0), 0);
        }
        Vec::new()
    }
}

impl Drop for LlamaModel {
    fn drop(&mut self) {
        // SAFETY: we own the model; every context holds an `Arc<LlamaModel>`, so
        // none outlives it.
        unsafe { ffi::llama_model_free(self.ptr.as_ptr()) };
        // The vocabulary and metadata were many small allocations; without
        // a trim glibc keeps their pages, and an unloaded model would still
        // cost the box tens of MiB (99 MiB for Gemma 3 270M, measured).
        memory::give_back_heap();
    }
}

/// Settings for [`Context::new`].
pub struct ContextSettings {
    pub n_ctx_total: u32,
    pub n_batch: u32,
    pub n_seq_max: u32,
    pub n_threads: i32,
    pub embeddings: bool,
    pub kv_type: super::KvType,
    pub flash_attention: Option<bool>,
    /// Sliding-window layers get a cache as long as the context, as
    /// llama.cpp's defaults have it (the server never asks for this; the
    /// load-phase bench compares with it).
    pub full_swa_cache: bool,
}

/// llama.cpp's context parameters for our settings.
fn context_params(s: &ContextSettings) -> ffi::llama_context_params {
    // SAFETY: returns a plain struct of defaults.
    let mut p = unsafe { ffi::llama_context_default_params() };
    p.n_ctx = s.n_ctx_total;
    p.n_batch = s.n_batch;
    p.n_ubatch = s.n_batch;
    p.n_seq_max = s.n_seq_max;
    p.n_threads = s.n_threads;
    p.n_threads_batch = s.n_threads;
    p.embeddings = s.embeddings;
    p.flash_attn_type = match s.flash_attention {
        None => ffi::LLAMA_FLASH_ATTN_TYPE_AUTO,
        Some(true) => ffi::LLAMA_FLASH_ATTN_TYPE_ENABLED,
        Some(false) => ffi::LLAMA_FLASH_ATTN_TYPE_DISABLED,
    };
    let kv = match s.kv_type {
        super::KvType::F16 => ffi::GGML_TYPE_F16,
        super::KvType::Q8_0 => ffi::GGML_TYPE_Q8_0,
        super::KvType::Q4_0 => ffi::GGML_TYPE_Q4_0,
    };
    p.type_k = kv;
    p.type_v = kv;
    // One KV stream per sequence: each slot gets exactly its own n_ctx
    // cells and attention only looks at its own stream.
    p.kv_unified = false;
    // Sliding-window layers keep only their window of cells: for Gemma 3
    // that is 5 of 6 layers, and a full-size cache would cost 45 MB more
    // at 4096 tokens. The price: no context shift for SWA models (they
    // stop with `length` instead) and prefix reuse only when the cells
    // the window needs are still there (see `Worker::start`).
    p.swa_full = s.full_swa_cache;
    // A generation asks for one row of logits per sequence per decode (the
    // last prompt token, then each new token); left at 0, llama.cpp plans
    // its graphs for logits of every token in a batch: for Gemma 3's 262k
    // vocabulary, 512 MiB of compute buffer never touched. Embeddings keep
    // every token's output.
    if !s.embeddings {
        p.n_outputs_max = s.n_seq_max;
    }
    p.no_perf = true;
    p
}

/// How long a pool's workers busy-wait for the next graph before they sleep
/// on a condition variable: ggml's polling level (0 = never, 100 = mostly),
/// the value llama.cpp's `common` gives `llama-server` and `llama-bench`.
/// Between two tokens of one stream the gap is the sampling and the event
/// hand-off, far shorter than the polling window, so workers start the next
/// token without a wake-up.
const POOL_POLL: u32 = 50;

/// A persistent ggml CPU threadpool of `n` threads (the calling thread is
/// thread 0, so it owns `n - 1` OS threads). Without one, ggml creates and
/// joins its workers for every graph, that is for every token; see the
/// README, "Decode speed with a streaming client", for what that cost.
///
/// Created paused: its workers sleep until the first graph. [`pause`] puts
/// them back to sleep at once (they would otherwise poll for a while after
/// each graph); the next graph wakes them.
///
/// [`pause`]: ThreadPool::pause
struct ThreadPool {
    ptr: NonNull<ffi::ggml_threadpool>,
    n_threads: i32,
}

impl ThreadPool {
    fn new(n_threads: i32) -> Result<ThreadPool, String> {
        // SAFETY: returns a plain struct of defaults for `n_threads`.
        let mut p = unsafe { ffi::ggml_threadpool_params_default(n_threads) };
        p.poll = POOL_POLL;
        p.paused = true;
        // SAFETY: `p` is a valid, initialised parameter struct that ggml only
        // reads. ggml starts the workers here (it aborts if the OS refuses a
        // thread, as every ggml graph would without a pool).
        let raw = unsafe { ffi::ggml_threadpool_new(&mut p) };
        let ptr = NonNull::new(raw)
            .ok_or_else(|| format!("ggml could not create a pool of {n_threads} threads"))?;
        Ok(ThreadPool { ptr, n_threads })
    }

    fn pause(&self) {
        // SAFETY: the pool is live; pausing takes its mutex and only flips a
        // flag the workers check.
        unsafe { ffi::ggml_threadpool_pause(self.ptr.as_ptr()) };
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        // SAFETY: we own the pool, and no context still points at it (the
        // owning `Context` frees its llama context before its pools).
        unsafe { ffi::ggml_threadpool_free(self.ptr.as_ptr()) };
    }
}

/// A llama.cpp context: KV cache, compute buffers, logits. Not thread-safe;
/// it lives on its runner thread.
pub struct Context {
    ptr: NonNull<ffi::llama_context>,
    model: Arc<LlamaModel>,
    n_threads: i32,
    /// Persistent pools by thread count, made when a decode first asks for
    /// that many threads (at most one per count the CPU budget grants). A
    /// single thread needs none: ggml then computes on the caller's thread
    /// and starts nothing. Dropped after the llama context (see `Drop`).
    pools: Vec<ThreadPool>,
    /// Index into `pools` of the pool attached to the llama context.
    attached: Option<usize>,
}

// SAFETY: llama.cpp contexts are not tied to a thread; we only ever use one
// from one thread at a time (the runner thread owns it, `&mut self` methods).
unsafe impl Send for Context {}

impl Context {
    pub fn new(model: Arc<LlamaModel>, s: &ContextSettings) -> Result<Context, String> {
        let p = context_params(s);
        let _ = take_problem();
        // SAFETY: the model pointer is live (we hold an Arc); llama.cpp
        // catches its exceptions and returns null on failure.
        let raw = unsafe { ffi::llama_init_from_model(model.ptr.as_ptr(), p) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            take_problem().unwrap_or_else(|| "llama.cpp could not create a context".into())
        })?;
        let mut ctx = Context {
            ptr,
            model,
            n_threads: 0,
            pools: Vec::new(),
            attached: None,
        };
        ctx.set_threads(s.n_threads)?;
        Ok(ctx)
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    /// Cells per sequence (llama.cpp pads the requested size up to 256).
    pub fn n_ctx_seq(&self) -> u32 {
        // SAFETY: reads a field of the live context.
        unsafe { ffi::llama_n_ctx_seq(self.ptr.as_ptr()) }
    }

    /// The most tokens one decode may hold. llama.cpp lowers the requested
    /// batch to the requested context, and aborts on a larger decode.
    pub fn n_batch(&self) -> u32 {
        // SAFETY: reads a field of the live context.
        unsafe { ffi::llama_n_batch(self.ptr.as_ptr()) }
    }

    /// Sets the threads used by the next decode; no-op when unchanged. Two
    /// or more threads compute on a persistent pool of exactly that many
    /// (made on first use); the pool used before is paused, so its workers
    /// do not poll on cores the budget now gives to another model.
    pub fn set_threads(&mut self, n: i32) -> Result<(), String> {
        let n = n.max(1);
        if n == self.n_threads {
            return Ok(());
        }
        let want = if n > 1 {
            match self.pools.iter().position(|p| p.n_threads == n) {
                Some(i) => Some(i),
                None => {
                    self.pools.push(ThreadPool::new(n)?);
                    Some(self.pools.len() - 1)
                }
            }
        } else {
            None
        };
        self.pause_threads();
        let pool = want.map_or(std::ptr::null_mut(), |i| self.pools[i].ptr.as_ptr());
        // SAFETY: plain setters on the live context, used from its thread.
        // The pool (or null: ggml's per-graph default, with no extra thread
        // for one) lives in `self.pools` until after the context is freed.
        unsafe {
            ffi::llama_attach_threadpool(self.ptr.as_ptr(), pool, pool);
            ffi::llama_set_n_threads(self.ptr.as_ptr(), n, n);
        }
        self.attached = want;
        self.n_threads = n;
        Ok(())
    }

    /// Puts the attached pool's workers to sleep now instead of after their
    /// polling window: for a runner that goes idle, or one that shares the
    /// cores with another busy runner. The next decode wakes them.
    pub fn pause_threads(&self) {
        if let Some(pool) = self.attached.and_then(|i| self.pools.get(i)) {
            pool.pause();
        }
    }

    /// Whether the context pools embeddings itself (mean/cls/last/rank).
    pub fn pools(&self) -> bool {
        // SAFETY: reads a field of the live context.
        let t = unsafe { ffi::llama_pooling_type(self.ptr.as_ptr()) };
        t != ffi::LLAMA_POOLING_TYPE_NONE && t != ffi::LLAMA_POOLING_TYPE_UNSPECIFIED
    }

    /// Runs the model over `batch`. Returns llama.cpp's status code on failure
    /// (1: no KV slot, 2: aborted, negative: error).
    pub fn decode(&mut self, batch: &Batch) -> Result<(), i32> {
        if batch.len() == 0 {
            return Ok(());
        }
        // SAFETY: the batch was built by `Batch::push` with valid token ids
        // and sequence ids below `n_seq_max`; llama.cpp validates it again and
        // catches its own exceptions inside `llama_decode`.
        let rc = unsafe { ffi::llama_decode(self.ptr.as_ptr(), batch.raw) };
        if rc == 0 {
            Ok(())
        } else {
            Err(rc)
        }
    }

    fn memory(&self) -> ffi::llama_memory_t {
        // SAFETY: the memory object is owned by the live context.
        unsafe { ffi::llama_get_memory(self.ptr.as_ptr()) }
    }

    /// The smallest position `seq` still has cells for (-1 when empty).
    pub fn seq_pos_min(&mut self, seq: i32) -> i32 {
        // SAFETY: memory of the live context; seq ids are below n_seq_max.
        unsafe { ffi::llama_memory_seq_pos_min(self.memory(), seq) }
    }

    /// Removes positions `[p0, p1)` of `seq` (`-1` = open end). Returns
    /// false when a partial removal is not possible for this memory type.
    pub fn seq_rm(&mut self, seq: i32, p0: i32, p1: i32) -> bool {
        // SAFETY: memory of the live context; llama.cpp bounds-checks seq ids
        // against n_seq_max (our seq ids always are).
        unsafe { ffi::llama_memory_seq_rm(self.memory(), seq, p0, p1) }
    }

    /// Adds `delta` to positions `[p0, p1)` of `seq`.
    pub fn seq_add(&mut self, seq: i32, p0: i32, p1: i32, delta: i32) {
        // SAFETY: as for `seq_rm`.
        unsafe { ffi::llama_memory_seq_add(self.memory(), seq, p0, p1, delta) }
    }

    pub fn can_shift(&self) -> bool {
        // SAFETY: reads a property of the live context's memory.
        unsafe { ffi::llama_memory_can_shift(self.memory()) }
    }

    /// The embedding of output row `i` of the last decode.
    pub fn embedding_ith(&mut self, i: i32) -> Option<Vec<f32>> {
        let n = self.model.n_embd_out();
        // SAFETY: returns null for an invalid index (no exception crosses:
        // llama.cpp catches it and logs); otherwise n_embd_out floats owned
        // by the context, valid until the next decode. We copy them out.
        let p = unsafe { ffi::llama_get_embeddings_ith(self.ptr.as_ptr(), i) };
        if p.is_null() {
            return None;
        }
        // SAFETY: see above.
        Some(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
    }

    /// The pooled embedding of `seq` from the last decode.
    pub fn embedding_seq(&mut self, seq: i32) -> Option<Vec<f32>> {
        let n = self.model.n_embd_out();
        // SAFETY: returns null when pooling is off or the sequence had no
        // output; otherwise n_embd_out floats owned by the context.
        let p = unsafe { ffi::llama_get_embeddings_seq(self.ptr.as_ptr(), seq) };
        if p.is_null() {
            return None;
        }
        // SAFETY: see above; copied out before any further call.
        Some(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
    }

    /// Samples a token from output row `idx` of the last decode and feeds it
    /// back to the sampler's state.
    pub fn sample(&mut self, sampler: &mut Sampler, idx: i32) -> Option<i32> {
        if sampler.grammar.is_some() {
            return self.sample_checked(sampler, idx);
        }
        // SAFETY: `idx` is an output row of the last decode (the runner only
        // asks for rows it requested logits for). Without a grammar no sampler
        // in the chain throws from `accept`.
        let t = unsafe { ffi::llama_sampler_sample(sampler.ptr.as_ptr(), self.ptr.as_ptr(), idx) };
        self.model.valid_token(t).then_some(t)
    }

    /// Log probability of `token` under the raw distribution of row `idx`,
    /// with the `top` most likely tokens.
    pub fn logprob(&mut self, idx: i32, token: i32, top: usize) -> Option<super::TokenLogprob> {
        // SAFETY: returns null for an invalid row; otherwise n_vocab floats.
        let logits = unsafe { ffi::llama_get_logits_ith(self.ptr.as_ptr(), idx) };
        if logits.is_null() {
            return None;
        }
        let n = usize::try_from(self.model.n_vocab).ok()?;
        // SAFETY: see above; only read before the next decode.
        let logits = unsafe { std::slice::from_raw_parts(logits, n) };
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits.iter().map(|&l| f64::from(l - max).exp()).sum();
        let log_z = f64::from(max) + sum.ln();
        let lp = |l: f32| (f64::from(l) - log_z) as f32;
        let chosen = lp(*logits.get(usize::try_from(token).ok()?)?);
        let mut best: Vec<(i32, f32)> = Vec::new();
        if top > 0 {
            let mut ids: Vec<usize> = (0..n).collect();
            let k = top.min(n);
            ids.select_nth_unstable_by(k - 1, |&a, &b| logits[b].total_cmp(&logits[a]));
            ids.truncate(k);
            ids.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
            best = ids
                .into_iter()
                .map(|i| (i32::try_from(i).unwrap_or(0), lp(logits[i])))
                .collect();
        }
        Some(super::TokenLogprob {
            logprob: chosen,
            top: best,
        })
    }

    /// Sampling with a grammar, the way llama.cpp's own sampler does it:
    /// sample from the chain as if unconstrained, then check only that one
    /// token against the grammar. Only when the grammar rejects it is the
    /// grammar applied to the whole vocabulary (262k tokens for Gemma), which
    /// is far too slow to do for every token. Accepting goes through the
    /// exception-catching wrapper, so a grammar error becomes `None`.
    fn sample_checked(&mut self, sampler: &mut Sampler, idx: i32) -> Option<i32> {
        let grammar = sampler.grammar?;
        let t = self.apply_chain(sampler, idx, None)?;
        let mut single = [ffi::llama_token_data {
            id: t,
            logit: 1.0,
            p: 0.0,
        }];
        let mut arr = ffi::llama_token_data_array {
            data: single.as_mut_ptr(),
            size: 1,
            selected: -1,
            sorted: false,
        };
        // SAFETY: `arr` points at `single`, which outlives the call; applying
        // a grammar only marks rejected candidates with -inf.
        unsafe { ffi::llama_sampler_apply(grammar.as_ptr(), &mut arr) };
        let t = if single[0].logit.is_finite() {
            t
        } else {
            self.apply_chain(sampler, idx, Some(grammar))?
        };
        // SAFETY: the wrapper catches any C++ exception from the grammar.
        let rc = unsafe { ffi::llama_rs_sampler_accept(grammar.as_ptr(), t) };
        if rc != ffi::LLAMA_RS_STATUS_OK {
            return None;
        }
        // SAFETY: the chain holds no grammar, so accepting cannot throw.
        unsafe { ffi::llama_sampler_accept(sampler.ptr.as_ptr(), t) };
        Some(t)
    }

    /// Runs the chain (after `first`, when given) over our own copy of the
    /// logits of row `idx` and returns the selected token.
    fn apply_chain(
        &mut self,
        sampler: &mut Sampler,
        idx: i32,
        first: Option<NonNull<ffi::llama_sampler>>,
    ) -> Option<i32> {
        // SAFETY: returns null for an invalid row; otherwise n_vocab floats.
        let logits = unsafe { ffi::llama_get_logits_ith(self.ptr.as_ptr(), idx) };
        if logits.is_null() {
            return None;
        }
        let n = usize::try_from(self.model.n_vocab).ok()?;
        // SAFETY: see above; the slice is only read before the next decode.
        let logits = unsafe { std::slice::from_raw_parts(logits, n) };
        sampler.cur.clear();
        sampler
            .cur
            .extend((0..).zip(logits).map(|(id, &logit)| ffi::llama_token_data {
                id,
                logit,
                p: 0.0,
            }));
        let mut arr = ffi::llama_token_data_array {
            data: sampler.cur.as_mut_ptr(),
            size: sampler.cur.len(),
            selected: -1,
            sorted: false,
        };
        if let Some(g) = first {
            // Checking every token of a large vocabulary against a grammar
            // takes most of a second, so try the most likely tokens first;
            // the top-k/top-p samplers that follow never reach further down.
            const SHORTLIST: usize = 512;
            if sampler.cur.len() > SHORTLIST {
                sampler
                    .cur
                    .select_nth_unstable_by(SHORTLIST, |a, b| b.logit.total_cmp(&a.logit));
                arr.size = SHORTLIST;
                // SAFETY: `arr` points into `sampler.cur`, which outlives the call.
                unsafe { ffi::llama_sampler_apply(g.as_ptr(), &mut arr) };
                // SAFETY: the grammar may only lower logits of the first `arr.size` entries.
                let any = unsafe { std::slice::from_raw_parts(arr.data, arr.size) }
                    .iter()
                    .any(|c| c.logit.is_finite());
                if !any {
                    // Nothing likely fits: check the whole vocabulary.
                    sampler.cur.clear();
                    sampler.cur.extend(
                        (0..).zip(logits).map(|(id, &logit)| ffi::llama_token_data {
                            id,
                            logit,
                            p: 0.0,
                        }),
                    );
                    arr.data = sampler.cur.as_mut_ptr();
                    arr.size = sampler.cur.len();
                    // SAFETY: as above.
                    unsafe { ffi::llama_sampler_apply(g.as_ptr(), &mut arr) };
                }
            } else {
                // SAFETY: `arr` points into `sampler.cur`, which outlives the call.
                unsafe { ffi::llama_sampler_apply(g.as_ptr(), &mut arr) };
            }
        }
        // SAFETY: as above.
        unsafe { ffi::llama_sampler_apply(sampler.ptr.as_ptr(), &mut arr) };
        let sel = usize::try_from(arr.selected).ok()?;
        if sel >= arr.size {
            return None;
        }
        // SAFETY: `sel < arr.size` and `arr.data` is valid for `arr.size`
        // entries (samplers may shrink the array, never grow it past ours).
        let t = unsafe { (*arr.data.add(sel)).id };
        self.model.valid_token(t).then_some(t)
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: we own the context; the model outlives it via our Arc. The
        // pools are fields, so they are freed after this, when nothing
        // points at them any more.
        unsafe { ffi::llama_free(self.ptr.as_ptr()) };
    }
}

/// A reusable token batch (`llama_batch`), one sequence id per token.
pub struct Batch {
    raw: ffi::llama_batch,
    cap: usize,
}

// SAFETY: the batch is plain heap memory owned by this value.
unsafe impl Send for Batch {}

impl Batch {
    pub fn new(cap: usize) -> Batch {
        let cap = cap.max(1);
        let n = i32::try_from(cap).unwrap_or(i32::MAX);
        // SAFETY: allocates arrays for `n` tokens with one seq id each.
        let raw = unsafe { ffi::llama_batch_init(n, 0, 1) };
        Batch {
            raw,
            cap: usize::try_from(n).unwrap_or(0),
        }
    }

    pub fn clear(&mut self) {
        self.raw.n_tokens = 0;
    }

    pub fn len(&self) -> usize {
        usize::try_from(self.raw.n_tokens).unwrap_or(0)
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Appends a token; returns its row index, or `None` when full.
    pub fn push(&mut self, token: i32, pos: i32, seq: i32, logits: bool) -> Option<i32> {
        let i = self.len();
        if i >= self.cap {
            return None;
        }
        // SAFETY: `i < cap`, and `llama_batch_init` allocated every array for
        // `cap` entries, with one seq id slot per token.
        unsafe {
            *self.raw.token.add(i) = token;
            *self.raw.pos.add(i) = pos;
            *self.raw.n_seq_id.add(i) = 1;
            *(*self.raw.seq_id.add(i)) = seq;
            *self.raw.logits.add(i) = i8::from(logits);
        }
        self.raw.n_tokens += 1;
        Some(self.raw.n_tokens - 1)
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        // SAFETY: allocated by `llama_batch_init`, freed once.
        unsafe { ffi::llama_batch_free(self.raw) };
    }
}

/// Quantizes the GGUF at `input` into `output` with llama.cpp's quantizer.
/// `ftype` is a `llama_ftype` value. Returns llama.cpp's complaint on failure.
pub fn quantize(input: &Path, output: &Path, ftype: u32, threads: i32) -> Result<(), String> {
    init_backend();
    let c = |p: &Path| -> Result<CString, String> {
        let s = p
            .to_str()
            .ok_or_else(|| "path is not valid UTF-8".to_string())?;
        CString::new(s).map_err(|_| "path contains a NUL byte".to_string())
    };
    let (c_in, c_out) = (c(input)?, c(output)?);
    // SAFETY: returns a plain struct of defaults.
    let mut params = unsafe { ffi::llama_model_quantize_default_params() };
    params.nthread = threads;
    params.ftype = ftype as ffi::llama_ftype;
    let _ = take_problem();
    // SAFETY: both paths are valid C strings for the duration of the call and
    // `params` is a valid struct; llama_model_quantize catches its own
    // exceptions and reports them as a non-zero return.
    let rc = unsafe { ffi::llama_model_quantize(c_in.as_ptr(), c_out.as_ptr(), &params) };
    if rc == 0 {
        Ok(())
    } else {
        Err(take_problem().unwrap_or_else(|| format!("llama_model_quantize returned {rc}")))
    }
}

/// The multimodal projector (llama.cpp's `mtmd` library): loading a clip
/// GGUF next to the text model, decoding image files, tokenizing prompts
/// with images into chunks and evaluating those chunks into a sequence.
#[cfg(feature = "vision")]
mod vision;

/// Stand-ins for a build without the `vision` feature: the types exist so
/// the engine compiles unchanged, but none can be created.
#[cfg(not(feature = "vision"))]
mod no_vision;
