use std::convert::Infallible;
use std::path::Path;
use std::sync::Arc;

use super::{Context, LlamaModel};

/// Never created without the `vision` feature.
pub struct Bitmap(Infallible);

/// One piece of a prompt.
// The runner builds these whatever the build; only the real tokenizer
// reads them.
#[allow(dead_code)]
pub enum MediaPart<'a> {
    Text(&'a str),
    Image(&'a Bitmap),
}

/// Never created without the `vision` feature.
pub struct Chunks(Infallible);

impl Chunks {
    pub fn n_tokens(&self) -> usize {
        match self.0 {}
    }

    pub fn layout(&self) -> Vec<i32> {
        match self.0 {}
    }
}

/// Never created without the `vision` feature.
pub struct Mtmd(Infallible);

impl Mtmd {
    pub fn load(_path: &Path, _model: Arc<LlamaModel>, _n_threads: i32) -> Result<Mtmd, String> {
        Err("this build of hearth has no vision support (cargo feature `vision`)".into())
    }

    pub fn bitmap(&self, _bytes: &[u8]) -> Option<Bitmap> {
        match self.0 {}
    }

    pub fn tokenize(&self, _parts: &[MediaPart<'_>], _add_special: bool) -> Result<Chunks, String> {
        match self.0 {}
    }

    pub fn eval(
        &self,
        _ctx: &mut Context,
        _chunks: &Chunks,
        _seq: i32,
        _n_batch: i32,
    ) -> Result<usize, i32> {
        match self.0 {}
    }
}
