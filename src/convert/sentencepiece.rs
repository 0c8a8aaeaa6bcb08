//! Reads SentencePiece's `tokenizer.model`: the few fields of its
//! `ModelProto` that a vocabulary needs (the pieces with their scores and
//! types, the trainer spec's model type and special ids, the normalizer's
//! dummy prefix), with a small hand-rolled protobuf reader. A protobuf
//! dependency and generated code for three messages would weigh more than
//! the reader. Every length is checked against the bytes left, so a
//! garbled or truncated file is an error, never a panic or a huge
//! allocation. What the pieces mean for llama.cpp is `spm.rs`'s job.

const NORMAL: i32 = 1;

/// SentencePiece's `TrainerSpec.ModelType.BPE`; llama.cpp's `llama`
/// tokenizer merges by score, which is what a BPE model means. A Unigram
/// model (the protobuf default) would tokenize differently.
pub const MODEL_TYPE_BPE: u64 = 2;

/// One entry of `ModelProto.pieces`.
#[derive(Debug, PartialEq)]
pub struct Piece {
    pub piece: String,
    pub score: f32,
    pub kind: i32,
}

/// The parts of a SentencePiece `ModelProto` that the vocabulary needs,
/// with the protobuf defaults for absent fields.
#[derive(Debug)]
pub struct SpModel {
    pub pieces: Vec<Piece>,
    pub model_type: u64,
    pub unk_id: i64,
    pub bos_id: i64,
    pub eos_id: i64,
    pub pad_id: i64,
    pub add_dummy_prefix: bool,
}

/// A protobuf field's value by wire type.
enum Wire<'a> {
    Varint(u64),
    Fixed64,
    Bytes(&'a [u8]),
    Fixed32([u8; 4]),
}

/// A bounded reader over one protobuf message: every length is checked
/// against what is left, so garbage ends in an error, never a panic or a
/// huge allocation.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&b, rest) = self.buf.split_first().ok_or("truncated varint")?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!(
                "a field of {n} bytes runs past the end ({} left); truncated?",
                self.buf.len()
            ));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    /// The next field number and value, or `None` at the end.
    fn field(&mut self) -> Result<Option<(u64, Wire<'a>)>, String> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let number = key >> 3;
        if number == 0 {
            return Err("field number 0".into());
        }
        let value = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Wire::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| "length overflows")?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                let b = self.take(4)?;
                Wire::Fixed32([b[0], b[1], b[2], b[3]])
            }
            w => return Err(format!("unsupported wire type {w} in field {number}")),
        };
        Ok(Some((number, value)))
    }
}

/// Parses a `tokenizer.model` (SentencePiece `ModelProto`): field 1 the
/// pieces, 2 the trainer spec, 3 the normalizer spec.
pub fn parse_model(bytes: &[u8]) -> Result<SpModel, String> {
    let mut model = SpModel {
        pieces: Vec::new(),
        // TrainerSpec's defaults: Unigram, unk 0, bos 1, eos 2, no pad.
        model_type: 1,
        unk_id: 0,
        bos_id: 1,
        eos_id: 2,
        pad_id: -1,
        add_dummy_prefix: true,
    };
    let mut r = Reader { buf: bytes };
    while let Some((number, value)) = r.field()? {
        match (number, value) {
            (1, Wire::Bytes(b)) => model.pieces.push(parse_piece(b, model.pieces.len())?),
            (2, Wire::Bytes(b)) => {
                let mut t = Reader { buf: b };
                while let Some((n, v)) = t.field()? {
                    // int32 fields: negative values are sign-extended
                    // 64-bit varints.
                    match (n, v) {
                        (3, Wire::Varint(x)) => model.model_type = x,
                        (40, Wire::Varint(x)) => model.unk_id = x as i64,
                        (41, Wire::Varint(x)) => model.bos_id = x as i64,
                        (42, Wire::Varint(x)) => model.eos_id = x as i64,
                        (43, Wire::Varint(x)) => model.pad_id = x as i64,
                        _ => {}
                    }
                }
            }
            (3, Wire::Bytes(b)) => {
                let mut n = Reader { buf: b };
                while let Some((f, v)) = n.field()? {
                    if let (3, Wire::Varint(x)) = (f, v) {
                        model.add_dummy_prefix = x != 0;
                    }
                }
            }
            (1..=3, _) => return Err(format!("field {number} has the wrong wire type")),
            _ => {}
        }
    }
    if model.pieces.is_empty() {
        return Err("no pieces; not a SentencePiece model?".into());
    }
    Ok(model)
}

fn parse_piece(bytes: &[u8], index: usize) -> Result<Piece, String> {
    let mut p = Piece {
        piece: String::new(),
        score: 0.0,
        kind: NORMAL,
    };
    let mut r = Reader { buf: bytes };
    while let Some((n, v)) = r.field()? {
        match (n, v) {
            (1, Wire::Bytes(b)) => {
                p.piece = std::str::from_utf8(b)
                    .map_err(|_| format!("piece {index} is not UTF-8"))?
                    .to_string();
            }
            (2, Wire::Fixed32(b)) => p.score = f32::from_le_bytes(b),
            (3, Wire::Varint(t)) => {
                p.kind = i32::try_from(t)
                    .ok()
                    .filter(|t| (1..=6).contains(t))
                    .ok_or_else(|| format!("piece {index} has unknown type {t}"))?;
            }
            (1..=3, _) => return Err(format!("piece {index}: field {n} has the wrong wire type")),
            _ => {}
        }
    }
    Ok(p)
}

/// Writes a `ModelProto` with `pieces` (text, score, type), a BPE trainer
/// spec with the given special ids and a normalizer spec: what tests need
/// to build a `tokenizer.model` from a real vocabulary.
#[cfg(test)]
pub fn encode_model(
    pieces: &[(String, f32, i32)],
    ids: [i32; 4],
    add_dummy_prefix: bool,
) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn bytes_field(out: &mut Vec<u8>, number: u64, b: &[u8]) {
        varint(out, number << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    let mut out = Vec::new();
    for (text, score, kind) in pieces {
        let mut p = Vec::new();
        bytes_field(&mut p, 1, text.as_bytes());
        varint(&mut p, 2 << 3 | 5);
        p.extend_from_slice(&score.to_le_bytes());
        varint(&mut p, 3 << 3);
        varint(&mut p, *kind as u64);
        bytes_field(&mut out, 1, &p);
    }
    let mut trainer = Vec::new();
    varint(&mut trainer, 3 << 3);
    varint(&mut trainer, MODEL_TYPE_BPE);
    for (n, id) in (40..).zip(ids) {
        varint(&mut trainer, n << 3);
        varint(&mut trainer, i64::from(id) as u64);
    }
    bytes_field(&mut out, 2, &trainer);
    let mut normalizer = Vec::new();
    bytes_field(&mut normalizer, 1, b"identity");
    varint(&mut normalizer, 3 << 3);
    varint(&mut normalizer, u64::from(add_dummy_prefix));
    bytes_field(&mut out, 3, &normalizer);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces() -> Vec<(String, f32, i32)> {
        vec![
            ("<unk>".into(), 0.0, 2),
            ("<s>".into(), 0.0, 3),
            ("</s>".into(), 0.0, 3),
            ("<0x0A>".into(), 0.0, 6),
            ("\u{2581}a".into(), -1.5, NORMAL),
            ("<tool>".into(), 0.0, 4),
        ]
    }

    #[test]
    fn parses_what_it_encodes() {
        let bytes = encode_model(&pieces(), [0, 1, 2, -1], false);
        let m = parse_model(&bytes).unwrap();
        assert_eq!(m.pieces.len(), 6);
        assert_eq!(
            m.pieces[4],
            Piece {
                piece: "\u{2581}a".into(),
                score: -1.5,
                kind: NORMAL
            }
        );
        assert_eq!(m.model_type, MODEL_TYPE_BPE);
        assert_eq!((m.unk_id, m.bos_id, m.eos_id, m.pad_id), (0, 1, 2, -1));
        assert!(!m.add_dummy_prefix);
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        let bytes = encode_model(&pieces(), [0, 1, 2, -1], true);
        // Every truncation either parses (a cut between fields) or fails
        // cleanly; none panics.
        for cut in 0..bytes.len() {
            let _ = parse_model(&bytes[..cut]);
        }
        assert!(parse_model(&bytes[..bytes.len() / 2]).is_err());
        assert!(parse_model(b"").is_err());
        assert!(parse_model(b"{\"model\": 1}").is_err());
        // A length prefix far past the end of the buffer.
        assert!(parse_model(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err());
        // An endless varint.
        assert!(parse_model(&[0x08; 20]).is_err());
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let _ = parse_model(&junk);
        }
    }
}
