//! Writes GGUF v3 files in one forward pass: the header (metadata and the
//! tensor table with precomputed offsets) first, then each tensor's data as
//! it is produced, so a converter never holds more than one chunk of one
//! tensor in memory.

use std::io::{self, Write};

/// The GGUF magic, "GGUF" read as little-endian bytes.
const MAGIC: &[u8; 4] = b"GGUF";
/// The format version written; llama.cpp reads 2 and 3.
const VERSION: u32 = 3;
/// Data alignment in bytes. It is GGUF's default, and we also write it as
/// `general.alignment` so that readers need not assume it.
pub const ALIGNMENT: u64 = 32;

// GGUF metadata value type codes (gguf-py `GGUFValueType`).
const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STRING: u32 = 8;
const T_ARRAY: u32 = 9;

/// The tensor element types this writer knows, with their ggml type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
}

impl GgmlType {
    /// The id ggml uses for the type (`GGML_TYPE_F32` = 0, `GGML_TYPE_F16` = 1).
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
        }
    }

    /// Bytes per element.
    pub fn element_size(self) -> u64 {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
        }
    }
}

/// One metadata value, limited to the types the converters write.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    U32(u32),
    F32(f32),
    Bool(bool),
    String(String),
    StringArray(Vec<String>),
    I32Array(Vec<i32>),
    F32Array(Vec<f32>),
}

/// One tensor's entry in the table: its name, its dimensions in ggml order
/// (`dims[0]` is the fastest-varying one, the last PyTorch dimension) and
/// its element type.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
}

impl TensorSpec {
    /// The number of elements, or `None` when the product overflows.
    pub fn elements(&self) -> Option<u64> {
        self.dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
    }

    /// The size of the data in bytes, or `None` when it overflows.
    pub fn byte_size(&self) -> Option<u64> {
        self.elements()?.checked_mul(self.ggml_type.element_size())
    }
}

/// A `Write` that counts what passes through, so the writer knows its
/// position (for padding) without needing `Seek`.
pub struct CountingWriter<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> CountingWriter<W> {
    pub fn new(inner: W) -> Self {
        CountingWriter { inner, written: 0 }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Gives back the wrapped writer.
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        self.inner
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Rounds `n` up to the next multiple of [`ALIGNMENT`].
pub fn align(n: u64) -> u64 {
    n.div_ceil(ALIGNMENT) * ALIGNMENT
}

/// The whole GGUF header, known before any data is written.
#[derive(Debug, Default)]
pub struct Header {
    pub kv: Vec<(String, MetaValue)>,
    pub tensors: Vec<TensorSpec>,
}

impl Header {
    /// Adds one metadata entry.
    pub fn push(&mut self, key: &str, value: MetaValue) {
        self.kv.push((key.to_string(), value));
    }

    /// The `general.*` entries of every file the converter writes:
    /// architecture, type (`model` or `mmproj`), name, the 32-byte data
    /// alignment, and the file type of its output (1, LLAMA_FTYPE_MOSTLY_F16:
    /// matrices F16, vectors F32) with ggml's quantization version.
    pub fn push_general(&mut self, arch: &str, kind: &str, name: &str) {
        self.push("general.architecture", MetaValue::String(arch.into()));
        self.push("general.type", MetaValue::String(kind.into()));
        self.push("general.name", MetaValue::String(name.into()));
        self.push("general.alignment", MetaValue::U32(32));
        self.push("general.file_type", MetaValue::U32(1));
        self.push("general.quantization_version", MetaValue::U32(2));
    }

    /// Each tensor's offset relative to the start of the data section, with
    /// every tensor starting on an aligned boundary.
    pub fn offsets(&self) -> io::Result<Vec<u64>> {
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut at = 0u64;
        for t in &self.tensors {
            offsets.push(at);
            let size = t.byte_size().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "tensor size overflows")
            })?;
            at = align(at + size);
        }
        Ok(offsets)
    }

    /// Writes the header and the padding up to the data section. `w` must be
    /// at position 0 of the file, because the padding is computed from the
    /// bytes it has counted.
    pub fn write<W: Write>(&self, w: &mut CountingWriter<W>) -> io::Result<()> {
        w.write_all(MAGIC)?;
        w.write_all(&VERSION.to_le_bytes())?;
        w.write_all(&(self.tensors.len() as u64).to_le_bytes())?;
        w.write_all(&(self.kv.len() as u64).to_le_bytes())?;
        for (key, value) in &self.kv {
            write_str(w, key)?;
            write_value(w, value)?;
        }
        for (t, offset) in self.tensors.iter().zip(self.offsets()?) {
            write_str(w, &t.name)?;
            w.write_all(&(t.dims.len() as u32).to_le_bytes())?;
            for d in &t.dims {
                w.write_all(&d.to_le_bytes())?;
            }
            w.write_all(&t.ggml_type.id().to_le_bytes())?;
            w.write_all(&offset.to_le_bytes())?;
        }
        pad(w)
    }
}

/// Writes zero bytes up to the next aligned position.
pub fn pad<W: Write>(w: &mut CountingWriter<W>) -> io::Result<()> {
    let at = w.written();
    let n = (align(at) - at) as usize;
    w.write_all(&[0u8; ALIGNMENT as usize][..n])
}

fn write_str<W: Write>(w: &mut W, s: &str) -> io::Result<()> {
    w.write_all(&(s.len() as u64).to_le_bytes())?;
    w.write_all(s.as_bytes())
}

fn write_value<W: Write>(w: &mut W, value: &MetaValue) -> io::Result<()> {
    match value {
        MetaValue::U32(v) => {
            w.write_all(&T_U32.to_le_bytes())?;
            w.write_all(&v.to_le_bytes())
        }
        MetaValue::F32(v) => {
            w.write_all(&T_F32.to_le_bytes())?;
            w.write_all(&v.to_le_bytes())
        }
        MetaValue::Bool(v) => {
            w.write_all(&T_BOOL.to_le_bytes())?;
            w.write_all(&[u8::from(*v)])
        }
        MetaValue::String(s) => {
            w.write_all(&T_STRING.to_le_bytes())?;
            write_str(w, s)
        }
        MetaValue::StringArray(items) => {
            w.write_all(&T_ARRAY.to_le_bytes())?;
            w.write_all(&T_STRING.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            for s in items {
                write_str(w, s)?;
            }
            Ok(())
        }
        MetaValue::I32Array(items) => {
            w.write_all(&T_ARRAY.to_le_bytes())?;
            w.write_all(&T_I32.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            for v in items {
                w.write_all(&v.to_le_bytes())?;
            }
            Ok(())
        }
        MetaValue::F32Array(items) => {
            w.write_all(&T_ARRAY.to_le_bytes())?;
            w.write_all(&T_F32.to_le_bytes())?;
            w.write_all(&(items.len() as u64).to_le_bytes())?;
            for v in items {
                w.write_all(&v.to_le_bytes())?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{Gguf, Value};

    /// Writes a small file with every value type and two tensors, then reads
    /// it back through the crate's own GGUF reader.
    #[test]
    fn round_trips_through_the_reader() {
        let mut h = Header::default();
        h.push("general.architecture", MetaValue::String("bert".into()));
        h.push("bert.block_count", MetaValue::U32(6));
        h.push("x.f32", MetaValue::F32(1e-12));
        h.push("x.bool", MetaValue::Bool(false));
        h.push(
            "x.strings",
            MetaValue::StringArray(vec!["a".into(), "▁b".into(), String::new()]),
        );
        h.push("x.ints", MetaValue::I32Array(vec![1, 3, 3]));
        h.push("x.floats", MetaValue::F32Array(vec![-1000.0, 0.5]));
        h.tensors.push(TensorSpec {
            name: "a".into(),
            dims: vec![3],
            ggml_type: GgmlType::F32,
        });
        h.tensors.push(TensorSpec {
            name: "b.weight".into(),
            dims: vec![5, 2],
            ggml_type: GgmlType::F16,
        });
        let mut w = CountingWriter::new(Vec::new());
        h.write(&mut w).unwrap();
        let data_start = w.written();
        assert_eq!(data_start % ALIGNMENT, 0);
        w.write_all(&[1u8; 12]).unwrap();
        pad(&mut w).unwrap();
        w.write_all(&[2u8; 20]).unwrap();
        pad(&mut w).unwrap();
        let bytes = w.into_inner();
        assert_eq!(bytes.len() as u64, data_start + 32 + 32);

        let g = Gguf::parse(&bytes, true).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.architecture(), Some("bert"));
        assert_eq!(g.get("bert.block_count"), Some(&Value::U32(6)));
        assert_eq!(g.get("x.f32"), Some(&Value::F32(1e-12)));
        assert_eq!(g.get("x.bool"), Some(&Value::Bool(false)));
        let strings = g.get("x.strings").unwrap().as_array().unwrap();
        assert_eq!(strings.elem_type, T_STRING);
        assert_eq!(
            strings.values.as_ref().unwrap()[1],
            Value::String("▁b".into())
        );
        let ints = g.get("x.ints").unwrap().as_array().unwrap();
        assert_eq!(
            ints.values.as_deref(),
            Some(&[Value::I32(1), Value::I32(3), Value::I32(3)][..])
        );
        let floats = g.get("x.floats").unwrap().as_array().unwrap();
        assert_eq!(
            floats.values.as_deref(),
            Some(&[Value::F32(-1000.0), Value::F32(0.5)][..])
        );
        assert_eq!(g.tensors.len(), 2);
        assert_eq!(g.tensors[0].name, "a");
        assert_eq!(g.tensors[0].shape, vec![3]);
        assert_eq!(g.tensors[0].ggml_type, 0);
        assert_eq!(g.tensors[0].offset, 0);
        assert_eq!(g.tensors[1].name, "b.weight");
        assert_eq!(g.tensors[1].shape, vec![5, 2]);
        assert_eq!(g.tensors[1].ggml_type, 1);
        assert_eq!(g.tensors[1].offset, 32);
        let first = &bytes[(data_start + g.tensors[1].offset) as usize..];
        assert_eq!(&first[..20], &[2u8; 20]);
    }

    #[test]
    fn offsets_are_aligned() {
        let mut h = Header::default();
        for n in [1u64, 31, 32, 33] {
            h.tensors.push(TensorSpec {
                name: format!("t{n}"),
                dims: vec![n],
                ggml_type: GgmlType::F16,
            });
        }
        assert_eq!(h.offsets().unwrap(), vec![0, 32, 96, 160]);
    }
}
