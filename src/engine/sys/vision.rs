use std::ffi::{c_char, CString};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use super::{ffi, init_backend, take_problem, Context, LlamaModel};

/// Where mtmd's image helper would look for `ffmpeg`/`ffprobe` when a
/// buffer is not an image stb_image can decode (WebP, video). hearth
/// starts no child processes, so it points at a directory that does not
/// exist and the spawn fails at once; the caller also refuses anything
/// that does not look like a PNG, JPEG, GIF or BMP before it gets here.
const NO_FFMPEG: &std::ffi::CStr = c"/nonexistent/hearth-starts-no-ffmpeg";

/// A decoded image (RGB pixels) ready for [`Mtmd::tokenize`].
pub struct Bitmap {
    ptr: NonNull<ffi::mtmd_bitmap>,
}

// SAFETY: a bitmap is plain heap memory owned by this value; mtmd only
// reads it.
unsafe impl Send for Bitmap {}

impl Drop for Bitmap {
    fn drop(&mut self) {
        // SAFETY: allocated by mtmd, owned by us, freed once.
        unsafe { ffi::mtmd_bitmap_free(self.ptr.as_ptr()) };
    }
}

/// One piece of a prompt for [`Mtmd::tokenize`], in order.
pub enum MediaPart<'a> {
    /// Text, tokenized with special tokens parsed.
    Text(&'a str),
    /// An image, replaced by its embedding tokens.
    Image(&'a Bitmap),
}

/// A tokenized prompt with images: text chunks (token ids) and image
/// chunks (preprocessed pixels, encoded when evaluated). Immutable.
pub struct Chunks {
    ptr: NonNull<ffi::mtmd_input_chunks>,
}

// SAFETY: after `mtmd_tokenize_from_parts` the chunk list is never
// modified; evaluating it only reads it, so it may move between and be
// shared by threads.
unsafe impl Send for Chunks {}
// SAFETY: see `Send`.
unsafe impl Sync for Chunks {}

impl Drop for Chunks {
    fn drop(&mut self) {
        // SAFETY: allocated by `mtmd_input_chunks_init`, freed once.
        unsafe { ffi::mtmd_input_chunks_free(self.ptr.as_ptr()) };
    }
}

impl Chunks {
    /// Tokens the prompt occupies, image embeddings included.
    pub fn n_tokens(&self) -> usize {
        // SAFETY: reads the live chunk list.
        unsafe { ffi::mtmd_helper_get_n_tokens(self.ptr.as_ptr()) }
    }

    /// What the sequence's KV cells will hold after evaluation, one
    /// entry per position: the token id for text, `-1` for image
    /// positions (which no text prompt can match, so prefix reuse stops
    /// there).
    pub fn layout(&self) -> Vec<i32> {
        let mut out = Vec::new();
        // SAFETY: reads the live chunk list.
        let n = unsafe { ffi::mtmd_input_chunks_size(self.ptr.as_ptr()) };
        for i in 0..n {
            // SAFETY: `i` is below the list's size; the chunk is owned
            // by the list and lives as long as it.
            let chunk = unsafe { ffi::mtmd_input_chunks_get(self.ptr.as_ptr(), i) };
            if chunk.is_null() {
                continue;
            }
            // SAFETY: `chunk` is a live chunk of the list.
            let kind = unsafe { ffi::mtmd_input_chunk_get_type(chunk) };
            if kind == ffi::MTMD_INPUT_CHUNK_TYPE_TEXT {
                let mut len = 0usize;
                // SAFETY: returns the chunk's own token array and its
                // length; it lives as long as the chunk.
                let p = unsafe { ffi::mtmd_input_chunk_get_tokens_text(chunk, &mut len) };
                if !p.is_null() && len > 0 {
                    // SAFETY: see above.
                    out.extend_from_slice(unsafe { std::slice::from_raw_parts(p, len) });
                }
            } else {
                // SAFETY: `chunk` is a live chunk of the list.
                let n_pos = unsafe { ffi::mtmd_input_chunk_get_n_pos(chunk) };
                out.extend(std::iter::repeat_n(-1, usize::try_from(n_pos).unwrap_or(0)));
            }
        }
        out
    }
}

/// A loaded projector bound to its text model.
pub struct Mtmd {
    ptr: NonNull<ffi::mtmd_context>,
    /// mtmd keeps a pointer to the text model (for its vocabulary and
    /// embedding width); holding the Arc keeps the model alive.
    _model: Arc<LlamaModel>,
    /// Encoding mutates the clip context; mtmd documents only
    /// tokenizing and bitmap decoding as thread-safe.
    encode: Mutex<()>,
}

// SAFETY: the mtmd context is not tied to a thread. Tokenizing and
// bitmap decoding are documented thread-safe on a shared context;
// encoding (the one mutating use) is serialised by `encode`.
unsafe impl Send for Mtmd {}
// SAFETY: see `Send`.
unsafe impl Sync for Mtmd {}

impl Drop for Mtmd {
    fn drop(&mut self) {
        // SAFETY: we own the context; the text model outlives it (we
        // hold an Arc to it until after this call).
        unsafe { ffi::mtmd_free(self.ptr.as_ptr()) };
    }
}

impl Mtmd {
    /// Loads the projector GGUF at `path` for `model`. Errors carry
    /// llama.cpp's logged reason (wrong embedding width, unknown
    /// projector type, missing tensor ...).
    pub fn load(path: &Path, model: Arc<LlamaModel>, n_threads: i32) -> Result<Mtmd, String> {
        init_backend();
        let path_str = path
            .to_str()
            .ok_or_else(|| "projector path is not valid UTF-8".to_string())?;
        let c_path =
            CString::new(path_str).map_err(|_| "projector path contains a NUL byte".to_string())?;
        // SAFETY: returns a plain struct of defaults.
        let mut p = unsafe { ffi::mtmd_context_params_default() };
        p.use_gpu = false;
        p.print_timings = false;
        p.n_threads = n_threads.max(1);
        // No warm-up encode at load: it costs a full image's compute
        // before the first request; buffers are sized on first use.
        p.warmup = false;
        let _ = take_problem();
        // SAFETY: `c_path` is a valid C string and the model pointer is
        // live (we keep an Arc to it inside the result); mtmd catches
        // its exceptions and returns null on failure.
        let raw = unsafe { ffi::mtmd_init_from_file(c_path.as_ptr(), model.ptr.as_ptr(), p) };
        let ptr = NonNull::new(raw).ok_or_else(|| {
            take_problem().unwrap_or_else(|| "llama.cpp could not load the projector".into())
        })?;
        let me = Mtmd {
            ptr,
            _model: model,
            encode: Mutex::new(()),
        };
        // SAFETY: reads a property of the live context.
        if !unsafe { ffi::mtmd_support_vision(me.ptr.as_ptr()) } {
            return Err("the projector has no vision encoder".into());
        }
        Ok(me)
    }

    /// Decodes an image file (anything stb_image reads: PNG, JPEG, GIF,
    /// BMP ...). `None` when it is not an image.
    pub fn bitmap(&self, bytes: &[u8]) -> Option<Bitmap> {
        if bytes.is_empty() {
            return None;
        }
        // SAFETY: returns a plain struct of defaults.
        let mut opt = unsafe { ffi::mtmd_helper_init_opt_default() };
        opt.video_params.ffmpeg_bin_dir = NO_FFMPEG.as_ptr();
        // SAFETY: `bytes` is readable for its length for the call;
        // `NO_FFMPEG` is a static C string; the helper is documented
        // thread-safe and returns null pointers on failure.
        let w = unsafe {
            ffi::mtmd_helper_bitmap_init_from_buf(
                self.ptr.as_ptr(),
                bytes.as_ptr(),
                bytes.len(),
                false,
                opt,
            )
        };
        if !w.video_ctx.is_null() {
            // A video cannot happen without ffmpeg, but free it if it did.
            if !w.bitmap.is_null() {
                // SAFETY: allocated by the helper, owned by us.
                unsafe { ffi::mtmd_bitmap_free(w.bitmap) };
            }
            // SAFETY: allocated by the helper, owned by us.
            unsafe { ffi::mtmd_helper_video_free(w.video_ctx) };
            return None;
        }
        let bitmap = Bitmap {
            ptr: NonNull::new(w.bitmap)?,
        };
        // SAFETY: reads a property of the live bitmap.
        if unsafe { ffi::mtmd_bitmap_is_audio(bitmap.ptr.as_ptr()) } {
            return None;
        }
        Some(bitmap)
    }

    /// Tokenizes text and images, in order, into chunks. `add_special`
    /// adds the model's BOS (and the like) at the start.
    pub fn tokenize(&self, parts: &[MediaPart<'_>], add_special: bool) -> Result<Chunks, String> {
        let texts: Vec<ffi::mtmd_input_text> = parts
            .iter()
            .map(|p| match p {
                MediaPart::Text(t) => ffi::mtmd_input_text {
                    text: t.as_ptr().cast::<c_char>(),
                    text_len: t.len(),
                    add_special,
                    parse_special: true,
                },
                MediaPart::Image(_) => ffi::mtmd_input_text {
                    text: std::ptr::null(),
                    text_len: 0,
                    add_special: false,
                    parse_special: false,
                },
            })
            .collect();
        let raw_parts: Vec<ffi::mtmd_input_part> = parts
            .iter()
            .zip(&texts)
            .map(|(p, t)| match p {
                MediaPart::Text(_) => ffi::mtmd_input_part {
                    text: t,
                    bitmap: std::ptr::null(),
                },
                MediaPart::Image(b) => ffi::mtmd_input_part {
                    text: std::ptr::null(),
                    bitmap: b.ptr.as_ptr(),
                },
            })
            .collect();
        let ptrs: Vec<*const ffi::mtmd_input_part> =
            raw_parts.iter().map(std::ptr::from_ref).collect();
        // SAFETY: allocates an empty list; null only on allocation failure.
        let out = NonNull::new(unsafe { ffi::mtmd_input_chunks_init() })
            .ok_or_else(|| "could not allocate input chunks".to_string())?;
        let chunks = Chunks { ptr: out };
        let _ = take_problem();
        // SAFETY: every part points at a live text (pointer and length
        // into a `&str` that outlives the call) or a live bitmap, never
        // both; `ptrs` is readable for `ptrs.len()` entries. Documented
        // thread-safe on a shared context; exceptions are caught inside
        // and become a non-zero return.
        let rc = unsafe {
            ffi::mtmd_tokenize_from_parts(
                self.ptr.as_ptr(),
                chunks.ptr.as_ptr(),
                ptrs.as_ptr(),
                ptrs.len(),
                add_special,
            )
        };
        if rc == 0 {
            Ok(chunks)
        } else {
            Err(take_problem().unwrap_or_else(|| format!("mtmd_tokenize returned {rc}")))
        }
    }

    /// Evaluates `chunks` into sequence `seq` of `ctx` from position 0:
    /// text chunks are decoded, image chunks encoded by the vision tower
    /// and their embeddings decoded. The logits of the last position are
    /// then row `-1` of the context. Returns the positions used, or
    /// mtmd's error code.
    pub fn eval(
        &self,
        ctx: &mut Context,
        chunks: &Chunks,
        seq: i32,
        n_batch: i32,
    ) -> Result<usize, i32> {
        let _one = self.encode.lock().unwrap_or_else(|e| e.into_inner());
        let mut n_past: ffi::llama_pos = 0;
        // SAFETY: both contexts are live; `ctx` is borrowed mutably so no
        // other decode runs on it, and `_one` serialises encodes on the
        // mtmd context. `ctx` was created from the model this projector
        // was loaded for. Decode and encode failures are caught inside
        // and returned as non-zero codes.
        let rc = unsafe {
            ffi::mtmd_helper_eval_chunks(
                self.ptr.as_ptr(),
                ctx.ptr.as_ptr(),
                chunks.ptr.as_ptr(),
                0,
                seq,
                n_batch,
                true,
                &mut n_past,
            )
        };
        if rc != 0 {
            return Err(rc);
        }
        Ok(usize::try_from(n_past).unwrap_or(0))
    }
}
