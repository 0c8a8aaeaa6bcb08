//! Images in inference requests: base64 decoding and the format check,
//! Ollama's `[img-N]` tags in message text, and splitting a rendered prompt
//! back into text and images for the engine's multimodal tokenizer.
//!
//! Ollama marks where an image goes with `[img-N]` (N counts the request's
//! images from 0, across messages): a message's `[img]` placeholders are
//! replaced by its images' tags in order, and images without a placeholder
//! get their tags prefixed to the message text. The template renders the
//! tags as plain text; [`split`] then cuts the prompt at them. Decoding
//! pixels is the engine's job (llama.cpp's stb_image through mtmd).

use super::Error;
use crate::engine::PromptPart;
use crate::prompt::Message;

/// Decodes standard base64 (with padding; line breaks ignored, as Go's
/// decoder does) and checks that the bytes look like an image file the
/// engine can decode.
pub fn decode(list: &[String]) -> Result<Vec<Vec<u8>>, Error> {
    check_count(list.len())?;
    list.iter()
        .map(|s| {
            let bytes = base64_decode(s)
                .map_err(|at| Error::Image(format!("illegal base64 data at input byte {at}")))?;
            check_format(&bytes).map_err(Error::Image)?;
            Ok(bytes)
        })
        .collect()
}

/// The most images one request may carry: each is decoded to a bitmap of
/// up to 192 MiB and encoded by the projector, so a request with hundreds
/// would take the box's memory and minutes of compute.
pub const MAX_IMAGES: usize = 16;

fn check_count(n: usize) -> Result<(), Error> {
    if n > MAX_IMAGES {
        return Err(Error::Image(format!(
            "too many images: {n}, at most {MAX_IMAGES} per request"
        )));
    }
    Ok(())
}

/// The most pixels an image may have: decoded to RGB before it is scaled
/// down, a 64-megapixel image already takes 192 MiB, and a small PNG or GIF
/// can claim far more.
const MAX_PIXELS: u64 = 64 << 20;

/// Whether the bytes start like a PNG, JPEG, GIF or BMP file (what
/// llama.cpp decodes without external tools), of a size we are willing to
/// decode. WebP needs ffmpeg there, and hearth starts no child processes.
fn check_format(bytes: &[u8]) -> Result<(), String> {
    const KNOWN: &[&[u8]] = &[
        b"\x89PNG\r\n\x1a\n",
        b"\xff\xd8\xff",
        b"GIF87a",
        b"GIF89a",
        b"BM",
    ];
    if KNOWN.iter().any(|m| bytes.starts_with(m)) {
        if let Some((w, h)) = dimensions(bytes) {
            if u64::from(w) * u64::from(h) > MAX_PIXELS {
                return Err(format!(
                    "image of {w}x{h} pixels is larger than the limit of {MAX_PIXELS} pixels"
                ));
            }
        }
        return Ok(());
    }
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Err("WebP images are not supported; send PNG, JPEG, GIF or BMP".into());
    }
    Err("image data is not a PNG, JPEG, GIF or BMP image".into())
}

/// Width and height from an image file's header, when it can be read
/// there (the decoder has the last word on everything else).
fn dimensions(b: &[u8]) -> Option<(u32, u32)> {
    let be32 = |at: usize| Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?));
    let le16 = |at: usize| {
        Some(u32::from(u16::from_le_bytes(
            b.get(at..at + 2)?.try_into().ok()?,
        )))
    };
    let le32 = |at: usize| {
        let v = i32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?);
        Some(v.unsigned_abs())
    };
    match b.first()? {
        0x89 => Some((be32(16)?, be32(20)?)),
        b'G' => Some((le16(6)?, le16(8)?)),
        b'B' => Some((le32(18)?, le32(22)?)),
        0xff => {
            // JPEG: walk the marker segments to the first start-of-frame.
            let mut at = 2;
            loop {
                while *b.get(at)? == 0xff && *b.get(at + 1)? == 0xff {
                    at += 1;
                }
                let marker = *b.get(at + 1)?;
                let len = usize::from(u16::from_be_bytes(b.get(at + 2..at + 4)?.try_into().ok()?));
                let sof = (0xc0..=0xcf).contains(&marker) && !matches!(marker, 0xc4 | 0xc8 | 0xcc);
                if sof {
                    let h = u16::from_be_bytes(b.get(at + 5..at + 7)?.try_into().ok()?);
                    let w = u16::from_be_bytes(b.get(at + 7..at + 9)?.try_into().ok()?);
                    return Some((u32::from(w), u32::from(h)));
                }
                at += 2 + len;
            }
        }
        _ => None,
    }
}

/// Standard base64 with `=` padding. `Err` carries the offset of the first
/// bad byte (counted in the input as given).
fn base64_decode(s: &str) -> Result<Vec<u8>, usize> {
    fn value(c: u8) -> Option<u8> {
        match c {
            b'A'..=b'Z' => Some(c - b'A'),
            b'a'..=b'z' => Some(c - b'a' + 26),
            b'0'..=b'9' => Some(c - b'0' + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let mut quad = [0u8; 4];
    let mut n = 0;
    let mut pad = 0;
    let mut last = 0;
    for (i, &c) in s.as_bytes().iter().enumerate() {
        if c == b'\r' || c == b'\n' {
            continue;
        }
        last = i;
        if c == b'=' {
            // Padding only in the last two places of a group.
            if n < 2 {
                return Err(i);
            }
            pad += 1;
            quad[n] = 0;
            n += 1;
        } else {
            if pad > 0 {
                return Err(i);
            }
            quad[n] = value(c).ok_or(i)?;
            n += 1;
        }
        if n == 4 {
            let v = (u32::from(quad[0]) << 18)
                | (u32::from(quad[1]) << 12)
                | (u32::from(quad[2]) << 6)
                | u32::from(quad[3]);
            let bytes = v.to_be_bytes();
            out.extend_from_slice(&bytes[1..4 - pad]);
            n = 0;
            if pad > 0 {
                pad = 3; // anything after the padding is an error
            }
        }
    }
    if n != 0 {
        return Err(last + 1);
    }
    Ok(out)
}

/// `[img-N]` tags for `count` images numbered from `first`, placed in
/// `content` where Ollama places them.
fn tag_text(content: &str, first: usize, count: usize) -> String {
    let mut prefix = String::new();
    let mut text = content.to_string();
    for id in first..first + count {
        let tag = format!("[img-{id}]");
        if text.contains("[img]") {
            text = text.replacen("[img]", &tag, 1);
        } else {
            prefix.push_str(&tag);
        }
    }
    prefix + &text
}

/// Tags the images of `messages` into their text and decodes them; the
/// images come back in tag order.
pub fn tag(messages: &[Message]) -> Result<(Vec<Message>, Vec<Vec<u8>>), Error> {
    let total = messages
        .iter()
        .map(|m| m.images.as_ref().map_or(0, Vec::len))
        .fold(0usize, usize::saturating_add);
    check_count(total)?;
    let mut images = Vec::new();
    let mut out = Vec::with_capacity(messages.len());
    for m in messages {
        let mut m = m.clone();
        if let Some(list) = m.images.as_ref().filter(|l| !l.is_empty()) {
            let decoded = decode(list)?;
            m.content = tag_text(&m.content, images.len(), decoded.len());
            images.extend(decoded);
        }
        out.push(m);
    }
    Ok((out, images))
}

/// Tags a generate prompt's images. A raw prompt that names none of them
/// gets all their tags in front, so the images are not silently dropped.
pub fn tag_prompt(prompt: String, count: usize, raw: bool) -> String {
    // Without images the prompt passes through as it is (moved: a 50 MB
    // prompt is not copied).
    if count == 0 {
        return prompt;
    }
    if raw {
        let named = split(&prompt, &vec![Vec::new(); count])
            .iter()
            .any(|p| matches!(p, PromptPart::Image(_)));
        if named {
            return prompt;
        }
        let tags: String = (0..count).map(|id| format!("[img-{id}]")).collect();
        return tags + &prompt;
    }
    tag_text(&prompt, 0, count)
}

/// Cuts a rendered prompt at its `[img-N]` tags. A tag whose N names no
/// image stays text (the old llama runner refused it; text is kinder).
pub fn split<'a>(prompt: &'a str, images: &'a [Vec<u8>]) -> Vec<PromptPart<'a>> {
    let mut parts = Vec::new();
    let mut text_from = 0;
    let mut at = 0;
    while let Some(found) = prompt[at..].find("[img-") {
        let start = at + found;
        let digits_from = start + "[img-".len();
        let digits = prompt[digits_from..]
            .bytes()
            .take_while(u8::is_ascii_digit)
            .count();
        let close = digits_from + digits;
        let image = (digits > 0 && prompt[close..].starts_with(']'))
            .then(|| prompt[digits_from..close].parse::<usize>().ok())
            .flatten()
            .and_then(|n| images.get(n));
        match image {
            Some(bytes) => {
                if start > text_from {
                    parts.push(PromptPart::Text(&prompt[text_from..start]));
                }
                parts.push(PromptPart::Image(bytes));
                at = close + 1;
                text_from = at;
            }
            None => at = digits_from,
        }
    }
    if text_from < prompt.len() {
        parts.push(PromptPart::Text(&prompt[text_from..]));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_b64(input: &str, expected: Result<&[u8], usize>) {
        assert_eq!(
            base64_decode(input),
            expected.map(<[u8]>::to_vec),
            "{input}"
        );
    }

    #[test]
    fn base64() {
        check_b64("", Ok(b""));
        check_b64("aGk=", Ok(b"hi"));
        check_b64("aGV5", Ok(b"hey"));
        check_b64("aA==", Ok(b"h"));
        check_b64("aGV5\naGk=", Ok(b"heyhi"));
        check_b64("aGk", Err(3));
        check_b64("a*k=", Err(1));
        check_b64("a===", Err(1));
        check_b64("aA==aGk=", Err(4));
    }

    #[test]
    fn sizes() {
        let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
        png.extend(20000u32.to_be_bytes());
        png.extend(20000u32.to_be_bytes());
        assert_eq!(dimensions(&png), Some((20000, 20000)));
        assert!(check_format(&png).is_err_and(|e| e.contains("20000x20000")));
        let gif = b"GIF89a\x10\x00\x20\x00";
        assert_eq!(dimensions(gif), Some((16, 32)));
        let mut bmp = b"BM".to_vec();
        bmp.resize(18, 0);
        bmp.extend(640i32.to_le_bytes());
        bmp.extend((-480i32).to_le_bytes());
        assert_eq!(dimensions(&bmp), Some((640, 480)));
        // SOI, an APP0 segment of 4 bytes, then SOF0: 8 bits, 300 high, 200 wide.
        let jpeg = b"\xff\xd8\xff\xe0\x00\x04ab\xff\xc0\x00\x11\x08\x01\x2c\x00\xc8";
        assert_eq!(dimensions(jpeg), Some((200, 300)));
        assert_eq!(dimensions(b"\xff\xd8\xff"), None);
    }

    #[test]
    fn formats() {
        assert!(check_format(b"\x89PNG\r\n\x1a\nrest").is_ok());
        assert!(check_format(b"\xff\xd8\xff\xe0").is_ok());
        assert!(check_format(b"hello").is_err());
        assert!(check_format(b"RIFF\0\0\0\0WEBPVP8 ").is_err());
    }

    #[test]
    fn tags() {
        assert_eq!(
            tag_text("what is this?", 0, 2),
            "[img-0][img-1]what is this?"
        );
        assert_eq!(tag_text("a [img] b", 3, 1), "a [img-3] b");
        assert_eq!(tag_text("a [img] b", 0, 2), "[img-1]a [img-0] b");
        assert_eq!(tag_prompt("x".into(), 1, false), "[img-0]x");
        assert_eq!(tag_prompt("x [img-0] y".into(), 1, true), "x [img-0] y");
        assert_eq!(tag_prompt("x".into(), 2, true), "[img-0][img-1]x");
        assert_eq!(tag_prompt("x".into(), 0, true), "x");
    }

    fn shape(parts: &[PromptPart<'_>]) -> String {
        parts
            .iter()
            .map(|p| match p {
                PromptPart::Text(t) => format!("T({t})"),
                PromptPart::Image(b) => format!("I({})", b.len()),
            })
            .collect()
    }

    #[test]
    fn splitting() {
        let images = vec![vec![0u8; 1], vec![0u8; 2]];
        let check = |p: &str, want: &str| assert_eq!(shape(&split(p, &images)), want, "{p}");
        check("<u>[img-0]hi", "T(<u>)I(1)T(hi)");
        check("[img-1][img-0]", "I(2)I(1)");
        check("a [img-7] b", "T(a [img-7] b)");
        check("a [img-] [img-x] [img-1", "T(a [img-] [img-x] [img-1)");
        check("[img-[img-0]]", "T([img-)I(1)T(])");
        check("", "");
    }

    #[test]
    fn images_per_request_are_capped() {
        let png = vec!["iVBORw0KGgo=".to_string(); MAX_IMAGES + 1];
        let e = decode(&png).unwrap_err();
        assert!(e.to_string().starts_with("too many images: 17"), "{e}");
        let m = Message {
            role: "user".into(),
            images: Some(vec!["iVBORw0KGgo=".into(); 9]),
            ..Message::default()
        };
        assert!(tag(&[m.clone(), m]).is_err());
    }
}
