//! What a load would take, asked of llama.cpp without allocating it: the
//! model is opened with `no_alloc` (metadata only, allocations simulated),
//! a context is built on it with the real settings, and the sizes llama.cpp
//! logs while it plans the KV cache and reserves its compute graphs are
//! read back. llama.cpp's C API has no call that returns them (its
//! `llama_get_memory_breakdown` is C++ only), so the log is the interface;
//! the engine's tests check it is still there and that the estimate matches
//! a real load.

use std::path::Path;

use super::{capturing, context_params, ffi, take_problem, ContextSettings, LlamaModel};

/// Bytes a load of one model with one set of context settings needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Footprint {
    /// The weights (resident once the model has run, mmap or not).
    pub weights: u64,
    /// The KV cache, every layer and sequence.
    pub kv: u64,
    /// The compute buffers llama.cpp reserves for its largest graph.
    pub compute: u64,
    /// The logits (or embeddings) output buffer.
    pub output: u64,
    /// What llama.cpp keeps on the heap for the model: vocabulary, merges,
    /// metadata, tensor descriptions.
    pub host: u64,
}

impl Footprint {
    /// Everything together.
    pub fn total(&self) -> u64 {
        self.weights
            .saturating_add(self.kv)
            .saturating_add(self.compute)
            .saturating_add(self.output)
            .saturating_add(self.host)
    }
}

/// Plans a load of `path` with settings `s` without allocating it.
pub fn footprint(path: &Path, s: &ContextSettings) -> Result<Footprint, String> {
    // Without mmap: llama.cpp maps nothing in a `no_alloc` pass (it asserts so).
    let heap_before = heap_in_use();
    let model = LlamaModel::open(path, false, false, true)?;
    // Other threads allocate meanwhile too; their share is small next to
    // a vocabulary's tens of MiB.
    let host = heap_in_use().saturating_sub(heap_before);
    let weights = model.size();
    let p = context_params(s);
    let _ = take_problem();
    let (ctx, lines) = capturing(|| {
        // SAFETY: the model is live for the call; llama.cpp catches its
        // exceptions and returns null on failure. With `no_alloc` it plans
        // buffers without allocating them.
        unsafe { ffi::llama_init_from_model(model.ptr.as_ptr(), p) }
    });
    if ctx.is_null() {
        return Err(take_problem().unwrap_or_else(|| "llama.cpp could not plan a context".into()));
    }
    // SAFETY: a context we created and nobody else holds.
    unsafe { ffi::llama_free(ctx) };
    let mut f = Footprint {
        weights,
        host,
        ..Footprint::default()
    };
    for line in &lines {
        if let Some(mib) = mib_after(line, "llama_kv_cache: size =") {
            f.kv = f.kv.saturating_add(mib);
        } else if let Some(mib) = mib_after(line, "compute buffer size =") {
            f.compute = f.compute.saturating_add(mib);
        } else if let Some(mib) = mib_after(line, "output buffer size =") {
            f.output = f.output.saturating_add(mib);
        }
    }
    if f.kv == 0 && !s.embeddings {
        return Err("llama.cpp did not report its KV cache size".into());
    }
    Ok(f)
}

/// Bytes the C heap has handed out and not had back (glibc's count, over
/// every arena).
#[cfg(target_env = "gnu")]
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks as u64).saturating_add(info.hblkhd as u64)
}

#[cfg(not(target_env = "gnu"))]
fn heap_in_use() -> u64 {
    0
}

/// Hands freed heap pages back to the kernel.
#[cfg(target_env = "gnu")]
pub(super) fn give_back_heap() {
    // SAFETY: malloc_trim only releases free memory of the allocator.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(target_env = "gnu"))]
pub(super) fn give_back_heap() {}

/// The `%8.2f MiB` after `marker` in a log line, in bytes.
fn mib_after(line: &str, marker: &str) -> Option<u64> {
    let rest = &line[line.find(marker)? + marker.len()..];
    let number = rest.split_whitespace().next()?;
    let mib: f64 = number.parse().ok()?;
    (mib.is_finite() && mib >= 0.0).then_some((mib * 1_048_576.0) as u64)
}

#[cfg(test)]
mod tests {
    use super::mib_after;

    #[test]
    fn sizes_from_log_lines() {
        assert_eq!(
            mib_after(
                "llama_kv_cache: size =   96.00 MiB (  4096 cells,  30 layers,  1/1 seqs), K (f16):   48.00 MiB",
                "llama_kv_cache: size ="
            ),
            Some(96 << 20)
        );
        assert_eq!(
            mib_after(
                "sched_reserve:        CPU compute buffer size =     2.50 MiB",
                "compute buffer size ="
            ),
            Some(5 << 19)
        );
        assert_eq!(
            mib_after("llama_kv_cache: size = nan MiB", "llama_kv_cache: size ="),
            None
        );
    }
}
