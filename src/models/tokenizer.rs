//! The CLIP byte-pair-encoding tokenizer.
//!
//! The vocabulary and merges come from a Hugging Face `tokenizer.json` (the
//! `CLIPTokenizerFast` layout) run through the `tokenizers` crate. Around it sits the
//! text cleaning OpenAI's and open_clip's tokenizer does before BPE (HTML entities,
//! the ftfy fixes that matter for prompts, whitespace), then `<|startoftext|>`,
//! truncation to the context length with `<|endoftext|>` kept last, and zero padding.

use std::path::{Path, PathBuf};

use crate::models::error::{ModelError, Result};

/// A CLIP tokenizer with a fixed context length (77 for every CLIP model).
#[derive(Clone)]
pub struct ClipTokenizer {
    inner: tokenizers::Tokenizer,
    path: PathBuf,
    sot: u32,
    eot: u32,
    context_length: usize,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("path", &self.path)
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

/// The real CLIP BPE vocabulary (OpenAI's `bpe_simple_vocab_16e6` in the Hugging Face
/// `tokenizer.json` layout), shipped with the binary.
pub const BUNDLED_JSON: &[u8] = include_bytes!("../../assets/clip-tokenizer.json");

impl ClipTokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path, context_length: usize) -> Result<Self> {
        let bytes = crate::files::read_bounded(path, crate::files::MAX_TOKENIZER_BYTES, "tokenizer.json")?;
        Self::from_bytes(&bytes, path, context_length)
    }

    /// The real CLIP vocabulary shipped with the binary (`assets/clip-tokenizer.json`).
    pub fn bundled(context_length: usize) -> Result<Self> {
        Self::from_bytes(BUNDLED_JSON, Path::new("<bundled clip-tokenizer.json>"), context_length)
    }

    /// Reads a `tokenizer.json` held in memory; `path` names it in errors.
    pub fn from_bytes(bytes: &[u8], path: &Path, context_length: usize) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(|e| ModelError::Tokenizer {
            path: path.to_path_buf(),
            msg: format!("not a valid tokenizer.json ({e})"),
        })?;
        let special = |name: &str| {
            inner.token_to_id(name).ok_or_else(|| ModelError::Tokenizer {
                path: path.to_path_buf(),
                msg: format!("the vocabulary has no {name} token"),
            })
        };
        let sot = special("<|startoftext|>")?;
        let eot = special("<|endoftext|>")?;
        // A prompt that contains "<|endoftext|>" is text, as in open_clip; its own
        // markers "<start_of_text>" and "<end_of_text>" are handled in `tokens`.
        inner.set_encode_special_tokens(true);
        if context_length < 2 {
            return Err(ModelError::Tokenizer {
                path: path.to_path_buf(),
                msg: format!("context length {context_length} is too short"),
            });
        }
        Ok(Self { inner, path: path.to_path_buf(), sot, eot, context_length })
    }

    /// Checks, at load time, that every id this tokenizer can give is a row of a token
    /// embedding of `rows` (the model's `vocab_size`): a tokenizer from another model is
    /// bad input, found before any prompt is encoded.
    pub fn check_fits(&self, rows: usize) -> Result<()> {
        let largest = self.inner.get_vocab(true).into_values().chain([self.sot, self.eot]).max().unwrap_or(0);
        if usize::try_from(largest).map_or(true, |id| id >= rows) {
            return Err(ModelError::Tokenizer {
                path: self.path.clone(),
                msg: format!(
                    "its vocabulary reaches id {largest}, but the model's token embedding has {rows} rows \
                     (config.json vocab_size): the tokenizer does not belong to this model"
                ),
            });
        }
        Ok(())
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }

    pub fn eot(&self) -> u32 {
        self.eot
    }

    /// The tokens of `text` after cleaning, without the outer start/end markers.
    /// As in open_clip, `<start_of_text>` and `<end_of_text>` written in a prompt are
    /// the marker tokens themselves.
    pub fn tokens(&self, text: &str) -> Result<Vec<u32>> {
        let cleaned = clean_text(text).to_lowercase();
        let mut ids = Vec::new();
        let mut rest = cleaned.as_str();
        loop {
            let next = [("<start_of_text>", self.sot), ("<end_of_text>", self.eot)]
                .into_iter()
                .filter_map(|(marker, id)| rest.find(marker).map(|at| (at, marker.len(), id)))
                .min_by_key(|&(at, _, _)| at);
            let (segment, marker) = match next {
                Some((at, len, id)) => (&rest[..at], Some((len, id))),
                None => (rest, None),
            };
            if !segment.trim().is_empty() {
                let enc = self.inner.encode(segment, false).map_err(|e| ModelError::Tokenizer {
                    path: self.path.clone(),
                    msg: format!("cannot tokenize {text:?} ({e})"),
                })?;
                ids.extend_from_slice(enc.get_ids());
            }
            match marker {
                Some((len, id)) => {
                    ids.push(id);
                    rest = &rest[segment.len() + len..];
                }
                None => return Ok(ids),
            }
        }
    }

    /// Token ids for one prompt: start marker, tokens (truncated so that the end marker
    /// is always last), end marker, zero padding to the context length. The second value
    /// says whether the prompt was truncated.
    pub fn encode(&self, text: &str) -> Result<(Vec<u32>, bool)> {
        let tokens = self.tokens(text)?;
        let room = self.context_length - 2;
        let truncated = tokens.len() > room;
        let mut ids = Vec::with_capacity(self.context_length);
        ids.push(self.sot);
        ids.extend(tokens.into_iter().take(room));
        ids.push(self.eot);
        ids.resize(self.context_length, 0);
        Ok((ids, truncated))
    }
}

/// The text cleaning CLIP's reference tokenizer applies before BPE: ftfy's fixes that
/// change ordinary prompts (ligatures, full-width forms, curly quotes, control
/// characters), HTML entities unescaped twice, and whitespace runs collapsed.
/// Lower-casing and NFC are the tokenizer.json normaliser's job.
pub fn clean_text(text: &str) -> String {
    let fixed = ftfy_like(&fix_mojibake(text));
    let unescaped = html_unescape(&html_unescape(&fixed));
    unescaped.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Repairs UTF-8 that was decoded as Windows-1252 or Latin-1 ("cafÃ©" → "café"), as
/// ftfy's `fix_encoding` does for ordinary text: wherever a run of characters that all
/// exist in Windows-1252 re-encodes to a valid multi-byte UTF-8 sequence, that sequence
/// replaces them. Correct Latin text ("café") does not re-encode to valid UTF-8 (a lone
/// 0xE9), so it is left alone.
fn fix_mojibake(text: &str) -> String {
    if text.is_ascii() {
        return text.to_owned();
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < chars.len() {
        let len = cp1252_byte(chars[i]).map_or(0, utf8_len);
        if len > 1 && i + len <= chars.len() {
            let bytes: Option<Vec<u8>> = chars[i..i + len].iter().map(|&c| cp1252_byte(c)).collect();
            if let Some(decoded) = bytes.as_deref().and_then(|b| std::str::from_utf8(b).ok()) {
                out.push_str(decoded);
                i += len;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// The length of the UTF-8 sequence a lead byte starts (0 for a continuation or invalid byte).
fn utf8_len(lead: u8) -> usize {
    match lead {
        0x00..=0x7F => 1,
        0xC2..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF4 => 4,
        _ => 0,
    }
}

/// The Windows-1252 byte for `c`, if it has one.
fn cp1252_byte(c: char) -> Option<u8> {
    const HIGH: [(char, u8); 27] = [
        ('€', 0x80),
        ('‚', 0x82),
        ('ƒ', 0x83),
        ('„', 0x84),
        ('…', 0x85),
        ('†', 0x86),
        ('‡', 0x87),
        ('ˆ', 0x88),
        ('‰', 0x89),
        ('Š', 0x8A),
        ('‹', 0x8B),
        ('Œ', 0x8C),
        ('Ž', 0x8E),
        ('‘', 0x91),
        ('’', 0x92),
        ('“', 0x93),
        ('”', 0x94),
        ('•', 0x95),
        ('–', 0x96),
        ('—', 0x97),
        ('˜', 0x98),
        ('™', 0x99),
        ('š', 0x9A),
        ('›', 0x9B),
        ('œ', 0x9C),
        ('ž', 0x9E),
        ('Ÿ', 0x9F),
    ];
    let code = c as u32;
    if code < 0x80 || (0xA0..=0xFF).contains(&code) {
        return u8::try_from(code).ok();
    }
    HIGH.iter().find(|(ch, _)| *ch == c).map(|&(_, b)| b)
}

fn ftfy_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\u{FB00}' => out.push_str("ff"),
            '\u{FB01}' => out.push_str("fi"),
            '\u{FB02}' => out.push_str("fl"),
            '\u{FB03}' => out.push_str("ffi"),
            '\u{FB04}' => out.push_str("ffl"),
            '\u{FB05}' | '\u{FB06}' => out.push_str("st"),
            '\u{0132}' => out.push_str("IJ"),
            '\u{0133}' => out.push_str("ij"),
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => out.push('\''),
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => out.push('"'),
            // Full-width ASCII forms and the ideographic space.
            '\u{FF01}'..='\u{FF5E}' => {
                out.push(char::from_u32(c as u32 - 0xFF01 + 0x21).unwrap_or(c));
            }
            '\u{3000}' => out.push(' '),
            '\r' | '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Unescapes HTML character references: the named ones prompts meet and numeric ones.
fn html_unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let tail = &rest[amp..];
        match decode_entity(tail) {
            Some((decoded, used)) => {
                out.push_str(&decoded);
                rest = &tail[used..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Decodes the character reference at the start of `s` (which begins with `&`),
/// returning the text and the bytes consumed.
fn decode_entity(s: &str) -> Option<(String, usize)> {
    let body = &s[1..];
    if let Some(num) = body.strip_prefix('#') {
        let (digits, radix, skip) = match num.strip_prefix(['x', 'X']) {
            Some(hex) => (hex, 16, 3),
            None => (num, 10, 2),
        };
        let len = digits.chars().take_while(|c| c.is_digit(radix)).count();
        if len == 0 {
            return None;
        }
        let code = u32::from_str_radix(&digits[..len], radix).ok()?;
        let c = char::from_u32(code).unwrap_or('\u{FFFD}');
        let semicolon = usize::from(digits[len..].starts_with(';'));
        return Some((c.to_string(), skip + len + semicolon));
    }
    const NAMED: &[(&str, &str)] = &[
        ("amp", "&"),
        ("lt", "<"),
        ("gt", ">"),
        ("quot", "\""),
        ("apos", "'"),
        ("nbsp", "\u{a0}"),
        ("copy", "©"),
        ("reg", "®"),
        ("trade", "™"),
        ("hellip", "…"),
        ("mdash", "—"),
        ("ndash", "–"),
        ("eacute", "é"),
        ("egrave", "è"),
        ("deg", "°"),
    ];
    NAMED.iter().find_map(|(name, value)| {
        let after = body.strip_prefix(name)?;
        if after.starts_with(';') {
            Some(((*value).to_owned(), 1 + name.len() + 1))
        } else if matches!(*name, "amp" | "lt" | "gt" | "quot" | "copy" | "reg" | "nbsp") {
            // Python's html.unescape also accepts these without the semicolon.
            Some(((*value).to_owned(), 1 + name.len()))
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_matches_open_clip_basic_clean() {
        assert_eq!(clean_text("  a &amp;amp; b\n\tc  "), "a & b c");
        assert_eq!(clean_text("\u{FB01}ne \u{201C}art\u{201D}"), "fine \"art\"");
        assert_eq!(clean_text("\u{FF21}\u{FF22}"), "AB");
        assert_eq!(clean_text("&#39;x&#x41;"), "'xA");
        assert_eq!(clean_text("AT&T"), "AT&T");
        assert_eq!(clean_text("caf\u{C3}\u{A9} and café"), "café and café");
    }
}
