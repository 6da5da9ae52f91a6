//! Vocabulary: for every token id, the exact bytes it appends to the output.
//!
//! Constraints are defined over the bytes of the generated text, so the one
//! thing a mask needs from a tokenizer is "what does token `t` add". A
//! `tokenizer.json` does not store that directly: byte-level BPE (GPT-2,
//! Llama 3, Qwen) spells bytes with a printable-unicode alphabet, and
//! SentencePiece models (Mistral, Phi-3, Gemma) spell spaces as `▁` and keep
//! unrepresentable bytes as `<0xNN>` fallback tokens. We undo those spellings
//! here, once, and never consult the tokenizer again.
//!
//! Special tokens (BOS, EOS, chat markers) add no text a constraint could
//! match, so they get no bytes and are never allowed by a mask; EOS is
//! handled separately by the matcher. Ids the model has but the tokenizer
//! doesn't (padded embedding matrices) likewise have no bytes.

use crate::error::{Error, Result};
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

/// How a tokenizer spells bytes in its vocabulary strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spelling {
    /// GPT-2 style byte-to-unicode alphabet (decoder `ByteLevel`).
    ByteLevel,
    /// SentencePiece style: `▁` is a space, `<0xNN>` is a raw byte when the
    /// model has byte fallback.
    Metaspace { byte_fallback: bool },
    /// Vocabulary strings are the text itself.
    Plain,
}

#[derive(Debug, Clone)]
pub struct Vocabulary {
    /// Concatenated token bytes; token `i` is `bytes[offsets[i]..offsets[i+1]]`.
    bytes: Vec<u8>,
    offsets: Vec<u32>,
    /// Ids that are special (never produced by a constraint).
    special: Vec<bool>,
    eos: Vec<u32>,
    /// Width of a mask: max(tokenizer ids, model embedding rows).
    size: usize,
    spelling: Spelling,
    adds_prefix_space: bool,
}

impl Vocabulary {
    /// Build from explicit token byte strings (tests, custom tokenizers).
    /// `None` marks a special token or an unused id.
    ///
    /// An EOS id means "end of text" and nothing else, even when the
    /// tokenizer also gives it a spelling (a custom EOS id on an ordinary
    /// token): it gets no bytes and is special, so the mask, `is_allowed`
    /// and `consume_token` all agree that it is allowed exactly when the
    /// text so far is complete.
    pub fn from_token_bytes(mut tokens: Vec<Option<Vec<u8>>>, eos: Vec<u32>, size: Option<usize>) -> Result<Self> {
        let n = tokens.len();
        if n > MAX_VOCAB_SIZE || size.is_some_and(|s| s > MAX_VOCAB_SIZE) {
            return Err(Error::Tokenizer(format!(
                "vocabulary size {} exceeds the limit of {MAX_VOCAB_SIZE} ids",
                size.unwrap_or(n).max(n)
            )));
        }
        if let Some(s) = size.filter(|&s| s < n) {
            return Err(Error::Tokenizer(format!(
                "vocab_size {s} is smaller than the tokenizer's {n} ids; pass the model's embedding width or leave it unset"
            )));
        }
        let size = size.unwrap_or(n);
        Self::check_eos(&eos, size)?;
        for &e in &eos {
            if let Some(t) = tokens.get_mut(e as usize) {
                *t = None;
            }
        }
        let mut bytes = Vec::new();
        let mut offsets = Vec::with_capacity(size + 1);
        let mut special = Vec::with_capacity(size);
        offsets.push(0u32);
        for t in tokens.iter() {
            match t {
                Some(b) => {
                    bytes.extend_from_slice(b);
                    special.push(false);
                }
                None => special.push(true),
            }
            offsets.push(bytes.len() as u32);
        }
        for _ in n..size {
            special.push(true);
            offsets.push(bytes.len() as u32);
        }
        Ok(Vocabulary {
            bytes,
            offsets,
            special,
            eos,
            size,
            spelling: Spelling::Plain,
            adds_prefix_space: false,
        })
    }

    fn check_eos(eos: &[u32], size: usize) -> Result<()> {
        for &e in eos {
            if e as usize >= size {
                return Err(Error::Tokenizer(format!("EOS id {e} is outside the vocabulary (size {size})")));
            }
        }
        Ok(())
    }

    /// Parse a Hugging Face `tokenizer.json`.
    ///
    /// `eos` overrides EOS detection (by default: special added tokens with a
    /// well-known end-of-text name). `size` is the model's embedding width if
    /// larger than the tokenizer.
    pub fn from_tokenizer_json(json: &str, eos: Option<Vec<u32>>, size: Option<usize>) -> Result<Self> {
        Self::from_tokenizer_json_named(json, eos, None, size)
    }

    /// [`Vocabulary::from_tokenizer_json`], with the EOS given by the text
    /// of its token (`eos_token` of a `tokenizer_config.json`) when `eos`
    /// is None; an unknown name falls back to the well-known EOS names.
    pub fn from_tokenizer_json_named(json: &str, eos: Option<Vec<u32>>, eos_name: Option<&str>, size: Option<usize>) -> Result<Self> {
        let (v, vocab_map) = parse_skipping_merges(json)?;
        let model = v.get("model").ok_or_else(|| Error::Tokenizer("missing \"model\"".into()))?;
        let spelling = detect_spelling(&v, model);
        let adds_prefix_space = detect_prefix_space(&v);

        // (id, vocabulary string) pairs from the model.
        let mut entries: Vec<(u32, Cow<'_, str>)> = Vec::new();
        match (vocab_map, model.get("vocab")) {
            (Some(map), _) => {
                entries.reserve(map.len());
                for (k, id) in map {
                    let id = id
                        .as_u64()
                        .ok_or_else(|| Error::Tokenizer(format!("vocab entry {k:?} has a non-integer id")))?;
                    // The message is built only on error: formatting it for
                    // every entry was a fifth of a Llama 3 load.
                    let id = u32::try_from(id)
                        .ok()
                        .filter(|&i| (i as usize) < MAX_VOCAB_SIZE)
                        .map_or_else(|| check_id(id, &format!("vocab entry {k:?}")), Ok)?;
                    entries.push((id, k));
                }
            }
            (None, Some(Value::Array(items))) => {
                // Unigram: [[piece, score], ...], the id is the position.
                if items.len() > MAX_VOCAB_SIZE {
                    return Err(Error::Tokenizer(format!("unigram vocabulary has more than {MAX_VOCAB_SIZE} entries")));
                }
                for (i, it) in items.iter().enumerate() {
                    let piece = it
                        .get(0)
                        .and_then(Value::as_str)
                        .ok_or_else(|| Error::Tokenizer(format!("unigram vocab entry {i} is malformed")))?;
                    entries.push((i as u32, Cow::Owned(piece.to_string())));
                }
            }
            _ => return Err(Error::Tokenizer("model has no \"vocab\"".into())),
        }
        // Added tokens: (id, content, special).
        let mut added: Vec<(u32, String, bool)> = Vec::new();
        if let Some(Value::Array(items)) = v.get("added_tokens") {
            for it in items {
                let id = it
                    .get("id")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| Error::Tokenizer("added token without id".into()))?;
                let id = check_id(id, "an added token")?;
                let content = it.get("content").and_then(Value::as_str).unwrap_or("").to_string();
                let special = it.get("special").and_then(Value::as_bool).unwrap_or(false);
                added.push((id, content, special));
            }
        }
        let n_ids = entries
            .iter()
            .map(|e| e.0)
            .chain(added.iter().map(|a| a.0))
            .max()
            .map_or(0, |m| m as usize + 1);
        if n_ids == 0 {
            return Err(Error::Tokenizer("empty vocabulary".into()));
        }
        let mut tokens: Vec<Option<Vec<u8>>> = vec![None; n_ids];
        let unicode_to_byte = byte_level_decoder_table();
        for (id, s) in &entries {
            tokens[*id as usize] = Some(decode_piece(s, spelling, &unicode_to_byte));
        }
        let mut eos_guess = Vec::new();
        for (id, content, special) in &added {
            let slot = &mut tokens[*id as usize];
            if *special {
                *slot = None;
                if EOS_NAMES.contains(&content.as_str()) {
                    eos_guess.push(*id);
                }
            } else if slot.is_none() {
                // A non-special added token inserts its content literally.
                *slot = Some(content.as_bytes().to_vec());
            }
        }
        // Empty strings add nothing; treat them like specials (never allowed).
        for t in tokens.iter_mut() {
            if matches!(t, Some(b) if b.is_empty()) {
                *t = None;
            }
        }
        let named = eos_name.and_then(|name| {
            added
                .iter()
                .find(|a| a.1 == name)
                .map(|a| a.0)
                .or_else(|| entries.iter().find(|e| e.1 == name).map(|e| e.0))
        });
        let eos = eos.or(named.map(|id| vec![id])).unwrap_or(eos_guess);
        let mut vocab = Self::from_token_bytes(tokens, eos, size)?;
        vocab.spelling = spelling;
        vocab.adds_prefix_space = adds_prefix_space;
        Ok(vocab)
    }

    /// The same vocabulary with its spelling and prefix-space flag set
    /// explicitly: rebuilding one from its token bytes (unpickling) keeps
    /// what the tokenizer.json said.
    pub fn with_spelling(mut self, spelling: Spelling, adds_prefix_space: bool) -> Self {
        self.spelling = spelling;
        self.adds_prefix_space = adds_prefix_space;
        self
    }

    /// Number of ids a bitmask covers.
    #[inline]
    pub fn size(&self) -> usize {
        self.size
    }

    /// The bytes token `id` appends (empty for special and unused ids).
    #[inline]
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        let i = id as usize;
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Whether `id` can never be produced by a constraint (special, unused, padding).
    #[inline]
    pub fn is_special(&self, id: u32) -> bool {
        self.special[id as usize]
    }

    pub fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    #[inline]
    pub fn is_eos(&self, id: u32) -> bool {
        self.eos.contains(&id)
    }

    pub fn spelling(&self) -> Spelling {
        self.spelling
    }

    /// True for SentencePiece tokenizers that prepend `▁` to the input text,
    /// so `encode("x")` decodes to bytes `" x"`.
    pub fn adds_prefix_space(&self) -> bool {
        self.adds_prefix_space
    }

    pub fn check_token(&self, id: u32) -> Result<()> {
        if (id as usize) < self.size {
            Ok(())
        } else {
            Err(Error::TokenOutOfRange { id, size: self.size })
        }
    }
}

/// The parts of a `tokenizer.json` the vocabulary reads, as a `Value`,
/// without the model's `merges` (half of a BPE file: 280,000 strings for
/// Llama 3, saying nothing about what a token spells: skipped, only checked
/// to be JSON) and with a BPE/WordPiece `model.vocab` object returned apart
/// as (piece, id) pairs borrowing from `json` where the piece has no
/// escapes. One pass over the text, no `Value` for the big parts.
fn parse_skipping_merges(json: &str) -> Result<(Value, Option<VocabPairs<'_>>)> {
    let bad = |e: serde_json::Error| Error::Tokenizer(format!("tokenizer.json is not valid JSON: {e}"));
    let mut de = serde_json::Deserializer::from_str(json);
    let top = serde::Deserializer::deserialize_map(&mut de, TopVisitor).map_err(bad)?;
    de.end().map_err(bad)?;
    Ok(top)
}

/// A BPE/WordPiece `model.vocab`: (piece, id) pairs in file order (ids
/// checked by the caller).
type VocabPairs<'a> = Vec<(Cow<'a, str>, Value)>;

/// A JSON string, borrowed from the input when it has no escapes.
struct JsonStr<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for JsonStr<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonStr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> std::result::Result<Self::Value, E> {
                Ok(JsonStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, v: String) -> std::result::Result<Self::Value, E> {
                Ok(JsonStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// The top-level object: every key as a `Value` except `model`.
struct TopVisitor;

impl<'de> serde::de::Visitor<'de> for TopVisitor {
    type Value = (Value, Option<VocabPairs<'de>>);
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a tokenizer.json object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
        let mut out = serde_json::Map::new();
        let mut vocab = None;
        while let Some(JsonStr(k)) = map.next_key::<JsonStr<'de>>()? {
            if k == "model" {
                let Model(model, pairs) = map.next_value::<Model<'de>>()?;
                vocab = pairs;
                out.insert("model".into(), model);
            } else {
                let v = map.next_value::<Value>()?;
                out.insert(k.into_owned(), v);
            }
        }
        Ok((Value::Object(out), vocab))
    }
}

/// `model`: its small keys as a `Value` object (with an empty `vocab`
/// object standing for the pairs), `merges` skipped, a `vocab` object as
/// pairs. A `model` that is not an object stays a `Value`.
struct Model<'a>(Value, Option<VocabPairs<'a>>);

impl<'de> serde::Deserialize<'de> for Model<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Model<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a model object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
                let mut model = serde_json::Map::new();
                let mut pairs = None;
                while let Some(JsonStr(k)) = map.next_key::<JsonStr<'de>>()? {
                    match &*k {
                        "merges" => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                        }
                        "vocab" => match map.next_value::<VocabField<'de>>()? {
                            VocabField::Pairs(p) => {
                                pairs = Some(p);
                                model.insert("vocab".into(), Value::Object(serde_json::Map::new()));
                            }
                            VocabField::Other(v) => {
                                pairs = None;
                                model.insert("vocab".into(), v);
                            }
                        },
                        _ => {
                            let v = map.next_value::<Value>()?;
                            model.insert(k.into_owned(), v);
                        }
                    }
                }
                Ok(Model(Value::Object(model), pairs))
            }
            // Anything else (malformed files): as a plain value.
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Self::Value, E> {
                Ok(Model(Value::Bool(v), None))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
                Ok(Model(Value::from(v), None))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                Ok(Model(Value::from(v), None))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
                Ok(Model(Value::from(v), None))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(Model(Value::from(v), None))
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(Model(Value::Null, None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
                let v = Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?;
                Ok(Model(v, None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `model.vocab`: an object (BPE, WordPiece) as pairs; anything else
/// (Unigram's `[[piece, score], ...]`) as a `Value`.
enum VocabField<'a> {
    Pairs(VocabPairs<'a>),
    Other(Value),
}

impl<'de> serde::Deserialize<'de> for VocabField<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = VocabField<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a vocabulary")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> std::result::Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(0).min(MAX_VOCAB_SIZE));
                while let Some(JsonStr(k)) = map.next_key::<JsonStr<'de>>()? {
                    let id = map.next_value::<Value>()?;
                    pairs.push((k, id));
                }
                Ok(VocabField::Pairs(pairs))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> std::result::Result<Self::Value, A::Error> {
                Ok(VocabField::Other(Value::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))?))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> std::result::Result<Self::Value, E> {
                Ok(VocabField::Other(Value::Bool(v)))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Self::Value, E> {
                Ok(VocabField::Other(Value::from(v)))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Self::Value, E> {
                Ok(VocabField::Other(Value::from(v)))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Self::Value, E> {
                Ok(VocabField::Other(Value::from(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Self::Value, E> {
                Ok(VocabField::Other(Value::from(v)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> std::result::Result<Self::Value, E> {
                Ok(VocabField::Other(Value::Null))
            }
        }
        d.deserialize_any(V)
    }
}

/// Largest number of token ids accepted (real vocabularies have < 2^19);
/// the bound keeps a corrupt file from requesting gigabytes.
pub const MAX_VOCAB_SIZE: usize = 1 << 24;

fn check_id(id: u64, what: &str) -> Result<u32> {
    if id >= MAX_VOCAB_SIZE as u64 {
        return Err(Error::Tokenizer(format!("{what} has id {id}, beyond the limit of {MAX_VOCAB_SIZE} ids")));
    }
    Ok(id as u32)
}

/// Names of special tokens that end generation in common model families.
const EOS_NAMES: &[&str] = &[
    "</s>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<|eot_id|>",
    "<|im_end|>",
    "<eos>",
    "<end_of_turn>",
    "<|end|>",
    "<｜end▁of▁sentence｜>",
];

fn decoder_types(v: &Value) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(d: &Value, out: &mut Vec<String>) {
        if let Some(t) = d.get("type").and_then(Value::as_str) {
            out.push(t.to_string());
        }
        if let Some(Value::Array(ds)) = d.get("decoders") {
            for x in ds {
                walk(x, out);
            }
        }
    }
    if let Some(d) = v.get("decoder") {
        walk(d, &mut out);
    }
    out
}

fn detect_spelling(v: &Value, model: &Value) -> Spelling {
    let types = decoder_types(v);
    if types.iter().any(|t| t == "ByteLevel") {
        return Spelling::ByteLevel;
    }
    let byte_fallback = model.get("byte_fallback").and_then(Value::as_bool).unwrap_or(false) || types.iter().any(|t| t == "ByteFallback");
    // `▁` in the normalizer / pre-tokenizer means pieces spell spaces that way.
    let mentions_metaspace = |k: &str| v.get(k).is_some_and(|n| n.to_string().contains('\u{2581}'));
    let metaspace =
        types.iter().any(|t| t == "Metaspace" || t == "Replace") || mentions_metaspace("normalizer") || mentions_metaspace("pre_tokenizer");
    if metaspace || byte_fallback {
        Spelling::Metaspace { byte_fallback }
    } else {
        Spelling::Plain
    }
}

fn detect_prefix_space(v: &Value) -> bool {
    fn walk(n: &Value) -> bool {
        match n.get("type").and_then(Value::as_str) {
            Some("Prepend") => n.get("prepend").and_then(Value::as_str) == Some("\u{2581}"),
            Some("Metaspace") => {
                let scheme = n.get("prepend_scheme").and_then(Value::as_str);
                let legacy = n.get("add_prefix_space").and_then(Value::as_bool);
                scheme.map_or(legacy.unwrap_or(true), |s| s != "never")
            }
            _ => n
                .get("normalizers")
                .or_else(|| n.get("pretokenizers"))
                .and_then(Value::as_array)
                .is_some_and(|xs| xs.iter().any(walk)),
        }
    }
    ["normalizer", "pre_tokenizer"].iter().any(|k| v.get(*k).is_some_and(walk))
}

/// Inverse of GPT-2's `bytes_to_unicode`: printable bytes stand for
/// themselves, the other 68 are shifted to U+0100.. in byte order.
fn byte_level_decoder_table() -> ByteDecoder {
    let mut printable: Vec<u8> = Vec::new();
    printable.extend(b'!'..=b'~');
    printable.extend(0xA1u8..=0xAC);
    printable.extend(0xAEu8..=0xFF);
    let mut table = [None; BYTE_ALPHABET_END];
    let mut shifted = 0usize;
    for b in 0u16..=255 {
        let b = b as u8;
        if printable.contains(&b) {
            table[b as usize] = Some(b);
        } else {
            table[256 + shifted] = Some(b);
            shifted += 1;
        }
    }
    ByteDecoder(table)
}

/// One past the largest char of the byte-level alphabet (U+0100 + 68).
const BYTE_ALPHABET_END: usize = 256 + 68;

/// The byte-level alphabet as a table indexed by char: a lookup per char
/// of 128k pieces, where a hash map's hashing was a tenth of a load.
struct ByteDecoder([Option<u8>; BYTE_ALPHABET_END]);

impl ByteDecoder {
    fn get(&self, c: &char) -> Option<&u8> {
        self.0.get(*c as usize).and_then(Option::as_ref)
    }
}

fn decode_piece(s: &str, spelling: Spelling, table: &ByteDecoder) -> Vec<u8> {
    match spelling {
        Spelling::ByteLevel => {
            let mut out = Vec::with_capacity(s.len());
            for c in s.chars() {
                match table.get(&c) {
                    Some(&b) => out.push(b),
                    // Not in the byte alphabet (e.g. a hand-added token): literal.
                    None => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                    }
                }
            }
            out
        }
        Spelling::Metaspace { byte_fallback } => {
            if byte_fallback {
                if let Some(b) = parse_byte_token(s) {
                    return vec![b];
                }
            }
            s.replace('\u{2581}', " ").into_bytes()
        }
        Spelling::Plain => s.as_bytes().to_vec(),
    }
}

/// `<0xNN>` -> byte NN.
fn parse_byte_token(s: &str) -> Option<u8> {
    let hex = s.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_table_is_a_bijection() {
        let t = byte_level_decoder_table();
        assert_eq!(t.0.iter().flatten().count(), 256);
        let mut seen = [false; 256];
        for &b in t.0.iter().flatten() {
            seen[b as usize] = true;
        }
        assert!(seen.iter().all(|&x| x));
        assert_eq!(t.get(&'Ġ'), Some(&b' '));
        assert_eq!(t.get(&'Ċ'), Some(&b'\n'));
        assert_eq!(t.get(&'€'), None);
    }

    #[test]
    fn sentencepiece_pieces() {
        let t = byte_level_decoder_table();
        let sp = Spelling::Metaspace { byte_fallback: true };
        assert_eq!(decode_piece("▁the", sp, &t), b" the");
        assert_eq!(decode_piece("<0x0A>", sp, &t), b"\n");
        assert_eq!(decode_piece("<0x0A>", Spelling::Metaspace { byte_fallback: false }, &t), b"<0x0A>");
    }

    #[test]
    fn minimal_tokenizer_json() {
        let json = r#"{"added_tokens":[{"id":3,"content":"<|endoftext|>","special":true}],
            "decoder":{"type":"ByteLevel"},
            "model":{"type":"BPE","vocab":{"a":0,"Ġb":1,"Ċ":2}}}"#;
        let v = Vocabulary::from_tokenizer_json(json, None, Some(8)).unwrap();
        assert_eq!(v.size(), 8);
        assert_eq!(v.token_bytes(1), b" b");
        assert_eq!(v.token_bytes(2), b"\n");
        assert!(v.is_special(3) && v.is_special(7));
        assert_eq!(v.eos_token_ids(), &[3]);
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(Vocabulary::from_tokenizer_json("{", None, None).is_err());
        assert!(Vocabulary::from_tokenizer_json("{}", None, None).is_err());
        assert!(Vocabulary::from_tokenizer_json(r#"{"model":{"vocab":{"a":0}}}"#, Some(vec![5]), None).is_err());
    }

    #[test]
    fn one_pass_parser_edge_cases() {
        // Escaped pieces (owned), merges in either format skipped, keys in
        // any order, unknown keys kept out of the way.
        let json = r#"{"version":"1.0","model":{"merges":[["a","b"],"a b"],"vocab":{"\u0061\"":0,"b":1},"type":"BPE","x":[1,{"y":2}]},"decoder":{"type":"ByteLevel"},"added_tokens":[]}"#;
        let v = Vocabulary::from_tokenizer_json(json, None, None).unwrap();
        assert_eq!(v.token_bytes(0), b"a\"");
        assert_eq!(v.token_bytes(1), b"b");
        // Unigram vocabularies stay arrays of [piece, score].
        let uni = r#"{"model":{"type":"Unigram","vocab":[["x",0.0],["\u2581y",-1.5]]},"decoder":{"type":"Metaspace"}}"#;
        let v = Vocabulary::from_tokenizer_json(uni, None, None).unwrap();
        assert_eq!(v.token_bytes(1), b" y");
        // Malformed shapes are errors, never panics.
        for bad in [
            r#"[]"#,
            r#"{"model":3}"#,
            r#"{"model":null}"#,
            r#"{"model":[1]}"#,
            r#"{"model":{"vocab":"x"}}"#,
            r#"{"model":{"vocab":{"a":"0"}}}"#,
            r#"{"model":{"vocab":{"a":-1}}}"#,
            r#"{"model":{"vocab":{"a":1e3}}}"#,
            r#"{"model":{"vocab":{"a":0},"merges":[}}"#,
            r#"{"model":{"vocab":{"a":0}}} trailing"#,
            r#"{"model":{"vocab":{"a":4294967296}}}"#,
        ] {
            assert!(Vocabulary::from_tokenizer_json(bad, None, None).is_err(), "{bad}");
        }
    }
}
