//! Reads Safetensors files for conversion: the JSON header through the
//! `safetensors` crate, and tensor data in bounded chunks with ordinary
//! positioned reads, converting each element to the GGUF type on the way.
//!
//! Plain reads rather than a memory map: touched pages of a map count as
//! resident memory until the kernel drops them, so a map would make the
//! conversion's footprint grow with the model, and it would need a second
//! `unsafe` block outside `engine/sys/`. Chunked reads keep the footprint
//! at two small buffers whatever the model size.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use safetensors::tensor::{Metadata, TensorInfo};
use safetensors::Dtype;

use super::gguf_writer::GgmlType;
use super::Error;

/// The largest JSON header accepted, as in the `safetensors` crate itself.
const MAX_HEADER: u64 = 100_000_000;
/// Elements converted per chunk: 1 MiB of F32 source, half that as F16.
const CHUNK_ELEMENTS: usize = 256 * 1024;

/// One opened Safetensors file with its parsed header.
pub struct SourceFile {
    pub label: String,
    path: PathBuf,
    file: File,
    /// Where the data section starts in the file.
    data_start: u64,
    /// Tensors in data-offset order.
    pub tensors: Vec<(String, TensorInfo)>,
}

impl SourceFile {
    /// Opens `path` and checks its header against the file's length, so a
    /// truncated download fails here and not halfway through the output.
    pub fn open(path: &Path, label: &str) -> Result<SourceFile, Error> {
        let bad = |reason: String| Error::BadSafetensors {
            file: label.to_string(),
            reason,
        };
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < 8 {
            return Err(bad(format!("file is {len} bytes, too short for a header")));
        }
        let mut n = [0u8; 8];
        file.read_exact(&mut n)?;
        let n = u64::from_le_bytes(n);
        if n > MAX_HEADER {
            return Err(bad(format!("header length {n} is over the limit")));
        }
        if n > len - 8 {
            return Err(bad(format!(
                "header length {n} runs past the end of the file ({len} bytes); truncated?"
            )));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact(&mut header)?;
        let meta: Metadata =
            serde_json::from_slice(&header).map_err(|e| bad(format!("bad header: {e}")))?;
        let data_start = 8 + n;
        let data_len = meta.data_len() as u64;
        if data_start + data_len != len {
            return Err(bad(format!(
                "header describes {data_len} bytes of data but the file holds {}; truncated?",
                len - data_start
            )));
        }
        let mut tensors: Vec<(String, TensorInfo)> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.clone()))
            .collect();
        tensors.sort_by_key(|(_, info)| info.data_offsets);
        Ok(SourceFile {
            label: label.to_string(),
            path: path.to_path_buf(),
            file,
            data_start,
            tensors,
        })
    }

    /// Reads tensor `info`, converts it to `target` (adding `shift` to every
    /// element) and hands the converted bytes to `sink` one chunk at a time.
    pub fn stream(
        &mut self,
        name: &str,
        info: &TensorInfo,
        target: GgmlType,
        shift: f32,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        let src_size = element_size(info.dtype).ok_or_else(|| Error::BadTensor {
            name: name.to_string(),
            reason: format!("element type {:?} is not a float type", info.dtype),
        })?;
        let (start, end) = info.data_offsets;
        let total = (end - start) / src_size;
        self.file
            .seek(SeekFrom::Start(self.data_start + start as u64))
            .map_err(|e| self.io_context(e))?;
        let mut raw = vec![0u8; CHUNK_ELEMENTS.min(total) * src_size];
        let mut out = Vec::with_capacity(CHUNK_ELEMENTS.min(total) * 4);
        let mut done = 0;
        while done < total {
            let n = CHUNK_ELEMENTS.min(total - done);
            let chunk = &mut raw[..n * src_size];
            self.file
                .read_exact(chunk)
                .map_err(|e| self.io_context(e))?;
            out.clear();
            convert_chunk(info.dtype, chunk, target, shift, &mut out);
            sink(&out)?;
            done += n;
        }
        Ok(())
    }

    /// Like [`SourceFile::stream`], but writes the rows of a 2-D tensor in
    /// the order llama.cpp's converter permutes attention query and key
    /// weights into (see [`permuted_row`]), for `n_head` heads. Each output
    /// row is read on its own from its source position, so memory stays at
    /// one row whatever the tensor's size.
    pub fn stream_permuted(
        &mut self,
        name: &str,
        info: &TensorInfo,
        target: GgmlType,
        n_head: usize,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<(), Error> {
        let bad = |reason: String| Error::BadTensor {
            name: name.to_string(),
            reason,
        };
        let src_size = element_size(info.dtype)
            .ok_or_else(|| bad(format!("element type {:?} is not a float type", info.dtype)))?;
        let [rows, cols] = info.shape[..] else {
            return Err(bad(format!(
                "has shape {:?}; only 2-D tensors can be permuted",
                info.shape
            )));
        };
        if n_head == 0 || !rows.is_multiple_of(2 * n_head) {
            return Err(bad(format!(
                "{rows} rows do not split into {n_head} heads of an even size"
            )));
        }
        let (start, end) = info.data_offsets;
        if (end - start) != rows * cols * src_size {
            return Err(bad("data size does not match the shape".into()));
        }
        let row_bytes = cols * src_size;
        let mut raw = vec![0u8; row_bytes];
        let mut out = Vec::with_capacity(cols * 4);
        for r in 0..rows {
            let src = permuted_row(r, rows, n_head);
            let at = self.data_start + (start + src * row_bytes) as u64;
            self.file
                .seek(SeekFrom::Start(at))
                .map_err(|e| self.io_context(e))?;
            self.file
                .read_exact(&mut raw)
                .map_err(|e| self.io_context(e))?;
            out.clear();
            convert_chunk(info.dtype, &raw, target, 0.0, &mut out);
            sink(&out)?;
        }
        Ok(())
    }

    /// Adds the file name to a read error, since the caller sees only the
    /// output side otherwise.
    fn io_context(&self, e: std::io::Error) -> Error {
        Error::Io(std::io::Error::new(
            e.kind(),
            format!("reading {} ({}): {e}", self.label, self.path.display()),
        ))
    }
}

/// The source row of output row `r` when llama.cpp's converter permutes a
/// query or key weight of `rows` rows for `n_head` heads. Hugging Face
/// stores each head's rotary pairs as two halves (rotate-half); GGUF wants
/// them interleaved. The Python converter reshapes to (n_head, 2, half,
/// cols) and swaps axes 1 and 2, so output row `h·d + 2i + j` (head `h`,
/// head size `d = 2·half`) is input row `h·d + j·half + i`.
pub fn permuted_row(r: usize, rows: usize, n_head: usize) -> usize {
    let d = rows / n_head;
    let half = d / 2;
    let (h, within) = (r / d, r % d);
    let (i, j) = (within / 2, within % 2);
    h * d + j * half + i
}

/// Bytes per element for the float types we convert, `None` for the rest.
fn element_size(dtype: Dtype) -> Option<usize> {
    match dtype {
        Dtype::F16 | Dtype::BF16 => Some(2),
        Dtype::F32 => Some(4),
        Dtype::F64 => Some(8),
        _ => None,
    }
}

/// Converts a whole number of little-endian source elements into `out`,
/// adding `shift` to each (in F32, before any rounding to F16).
fn convert_chunk(dtype: Dtype, raw: &[u8], target: GgmlType, shift: f32, out: &mut Vec<u8>) {
    // Same-type copies are the common case for F32 biases and F16 models.
    match (dtype, target) {
        (Dtype::F32, GgmlType::F32) | (Dtype::F16, GgmlType::F16) if shift == 0.0 => {
            out.extend_from_slice(raw);
            return;
        }
        _ => {}
    }
    let size = element_size(dtype).unwrap_or(4);
    for e in raw.chunks_exact(size) {
        let v = match dtype {
            Dtype::F16 => f16_to_f32(u16::from_le_bytes([e[0], e[1]])),
            Dtype::BF16 => f32::from_bits(u32::from(u16::from_le_bytes([e[0], e[1]])) << 16),
            Dtype::F64 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(e);
                f64::from_le_bytes(b) as f32
            }
            _ => f32::from_le_bytes([e[0], e[1], e[2], e[3]]),
        } + shift;
        match target {
            GgmlType::F32 => out.extend_from_slice(&v.to_le_bytes()),
            GgmlType::F16 => out.extend_from_slice(&f32_to_f16(v).to_le_bytes()),
        }
    }
}

/// IEEE half to single precision; exact for every input.
pub fn f16_to_f32(h: u16) -> f32 {
    let negative = h & 0x8000 != 0;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let sign = u32::from(h & 0x8000) << 16;
    match exp {
        0 => {
            // Zero or subnormal: the value is man × 2^-24, exact in f32.
            let v = man as f32 * (1.0 / 16_777_216.0);
            if negative {
                -v
            } else {
                v
            }
        }
        0x1f => f32::from_bits(sign | 0x7f80_0000 | (man << 13)),
        _ => f32::from_bits(sign | ((exp + 112) << 23) | (man << 13)),
    }
}

/// Single to half precision, rounding to nearest with ties to even as
/// numpy's `astype(float16)` does, so results match llama.cpp's converter.
pub fn f32_to_f16(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exp = ((bits >> 23) & 0xff) as i32;
    let man = bits & 0x7f_ffff;
    if exp == 0xff {
        // Infinity stays infinity; NaN keeps a set quiet bit.
        let nan = if man != 0 {
            0x200 | (man >> 13) as u16
        } else {
            0
        };
        return sign | 0x7c00 | nan;
    }
    let e = exp - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // Subnormal half (or zero): shift the full significand down.
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = m >> shift;
        let rem = m & ((1 << shift) - 1);
        let halfway = 1 << (shift - 1);
        let round = rem > halfway || (rem == halfway && half & 1 == 1);
        return sign | (half + u32::from(round)) as u16;
    }
    let half = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    let round = rem > 0x1000 || (rem == 0x1000 && half & 1 == 1);
    // A carry out of the mantissa correctly bumps the exponent, up to
    // infinity for values just below the overflow threshold.
    sign | (half + u32::from(round)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_half_round_trips() {
        for h in 0..=u16::MAX {
            let f = f16_to_f32(h);
            if f.is_nan() {
                assert!(f16_to_f32(f32_to_f16(f)).is_nan());
            } else {
                assert_eq!(f32_to_f16(f), h, "{h:#06x} -> {f}");
            }
        }
    }

    #[test]
    fn rounds_to_nearest_even() {
        // 1 + 2^-11 is exactly between 1 and the next half; ties go to even.
        assert_eq!(f32_to_f16(1.0 + 1.0 / 2048.0), 0x3c00);
        // 1 + 3·2^-11 is between two halves; ties go to the even one above.
        assert_eq!(f32_to_f16(1.0 + 3.0 / 2048.0), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00);
        assert_eq!(f32_to_f16(65519.0), 0x7bff);
        assert_eq!(f32_to_f16(1e-8), 0);
        assert_eq!(f32_to_f16(-0.0), 0x8000);
        assert_eq!(f32_to_f16(5.960_464_5e-8), 1);
        assert_eq!(f32_to_f16(0.1), 0x2e66);
    }

    #[test]
    fn permutes_rows_like_numpy() {
        // Two heads of size 4: numpy's reshape(2, 2, 2, n).swapaxes(1, 2)
        // gives rows [0, 2, 1, 3, 4, 6, 5, 7].
        let got: Vec<usize> = (0..8).map(|r| permuted_row(r, 8, 2)).collect();
        assert_eq!(got, [0, 2, 1, 3, 4, 6, 5, 7]);
        // One head of size 6: rows [0, 3, 1, 4, 2, 5].
        let got: Vec<usize> = (0..6).map(|r| permuted_row(r, 6, 1)).collect();
        assert_eq!(got, [0, 3, 1, 4, 2, 5]);
    }

    #[test]
    fn converts_bf16_and_f64() {
        let mut out = Vec::new();
        // bf16 0x3f80 is 1.0; f64 -2.5.
        convert_chunk(Dtype::BF16, &[0x80, 0x3f], GgmlType::F32, 0.0, &mut out);
        convert_chunk(
            Dtype::F64,
            &(-2.5f64).to_le_bytes(),
            GgmlType::F16,
            0.0,
            &mut out,
        );
        assert_eq!(&out[..4], &1.0f32.to_le_bytes());
        assert_eq!(&out[4..], &f32_to_f16(-2.5).to_le_bytes());
        // A shift is added before rounding, also on same-type copies.
        out.clear();
        convert_chunk(
            Dtype::F32,
            &0.25f32.to_le_bytes(),
            GgmlType::F32,
            1.0,
            &mut out,
        );
        assert_eq!(out, 1.25f32.to_le_bytes());
    }
}
