//! BERT's uncased WordPiece tokenizer, for MiniLM sentence embeddings.
//!
//! A few dozen lines instead of the `tokenizers` crate and its dependency
//! tree: clean the text, lower-case it, strip accents, split on whitespace and
//! punctuation, then split each word greedily into the longest pieces in the
//! vocabulary ("##" marks a piece inside a word). Tested against ids from
//! the reference tokenizer (`tokenizers` 0.23.3 on the package's
//! tokenizer.json).
//!
//! Limits, stated: accents are stripped by a table covering Latin-1 and Latin
//! Extended-A (what English callers' names and addresses use), and non-ASCII
//! punctuation is recognised for the common quotes, dashes and marks, rather
//! than full Unicode NFD and categories.

use crate::Error;
use std::collections::HashMap;
use std::path::Path;

pub const CLS: i64 = 101;
pub const SEP: i64 = 102;
const UNK: &str = "[UNK]";
const MAX_WORD_CHARS: usize = 100;

pub struct WordPiece {
    vocab: HashMap<String, i64>,
    unk: i64,
}

impl WordPiece {
    /// Load `vocab.txt` (one token per line, id = line number).
    pub fn load(path: &Path) -> Result<WordPiece, Error> {
        let text = std::fs::read_to_string(path)?;
        Self::from_vocab(&text)
    }

    pub fn from_vocab(text: &str) -> Result<WordPiece, Error> {
        let vocab: HashMap<String, i64> = text
            .lines()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as i64))
            .collect();
        let unk = *vocab
            .get(UNK)
            .ok_or_else(|| Error::Format("vocabulary has no [UNK]".into()))?;
        Ok(WordPiece { vocab, unk })
    }

    /// Ids for `[CLS] text [SEP]`, at most `max_len` in all.
    pub fn encode(&self, text: &str, max_len: usize) -> Vec<i64> {
        let mut ids = vec![CLS];
        let budget = max_len.max(2) - 1;
        'words: for word in pre_tokenize(&normalise(text)) {
            for id in self.word_ids(&word) {
                if ids.len() >= budget {
                    break 'words;
                }
                ids.push(id);
            }
        }
        ids.push(SEP);
        ids
    }

    fn word_ids(&self, word: &str) -> Vec<i64> {
        let chars: Vec<char> = word.chars().collect();
        if chars.len() > MAX_WORD_CHARS {
            return vec![self.unk];
        }
        let mut out = Vec::new();
        let mut start = 0;
        let mut piece = String::new();
        while start < chars.len() {
            let mut end = chars.len();
            let mut found = None;
            while start < end {
                piece.clear();
                if start > 0 {
                    piece.push_str("##");
                }
                piece.extend(&chars[start..end]);
                if let Some(&id) = self.vocab.get(&piece) {
                    found = Some(id);
                    break;
                }
                end -= 1;
            }
            match found {
                Some(id) => out.push(id),
                None => return vec![self.unk],
            }
            start = end;
        }
        out
    }
}

/// Clean, lower-case and strip accents; CJK ideographs get spaces around them.
fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c == '\0' || c == '\u{fffd}' || (c.is_control() && !c.is_whitespace()) {
            continue;
        }
        if c.is_whitespace() {
            out.push(' ');
        } else if is_cjk(c) {
            out.push(' ');
            out.push(c);
            out.push(' ');
        } else {
            for l in c.to_lowercase() {
                match strip_accent(l) {
                    Some(s) => out.push_str(s),
                    None => out.push(l),
                }
            }
        }
    }
    out
}

/// Split on whitespace, and make every punctuation mark its own token.
fn pre_tokenize(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for w in text.split_whitespace() {
        let mut cur = String::new();
        for c in w.chars() {
            if is_punctuation(c) {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                out.push(c.to_string());
            } else {
                cur.push(c);
            }
        }
        if !cur.is_empty() {
            out.push(cur);
        }
    }
    out
}

fn is_punctuation(c: char) -> bool {
    // BERT counts all non-alphanumeric ASCII as punctuation ($, ^, ` too).
    c.is_ascii_punctuation()
        || matches!(
            c,
            '\u{a1}' | '\u{a7}' | '\u{ab}' | '\u{b6}' | '\u{b7}' | '\u{bb}' | '\u{bf}'
        )
        || ('\u{2010}'..='\u{2027}').contains(&c)
        || ('\u{2030}'..='\u{205e}').contains(&c)
        || ('\u{3000}'..='\u{303f}').contains(&c)
}

fn is_cjk(c: char) -> bool {
    matches!(c as u32,
        0x4E00..=0x9FFF | 0x3400..=0x4DBF | 0x20000..=0x2A6DF | 0x2A700..=0x2B73F
        | 0x2B740..=0x2B81F | 0x2B820..=0x2CEAF | 0xF900..=0xFAFF | 0x2F800..=0x2FA1F)
}

/// The base letter of an accented lower-case Latin letter.
fn strip_accent(c: char) -> Option<&'static str> {
    Some(match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ă' | 'ą' => "a",
        'ç' | 'ć' | 'ĉ' | 'ċ' | 'č' => "c",
        'ď' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ĕ' | 'ė' | 'ę' | 'ě' => "e",
        'ĝ' | 'ğ' | 'ġ' | 'ģ' => "g",
        'ĥ' => "h",
        'ì' | 'í' | 'î' | 'ï' | 'ĩ' | 'ī' | 'ĭ' | 'į' => "i",
        'ĵ' => "j",
        'ķ' => "k",
        'ĺ' | 'ļ' | 'ľ' => "l",
        'ñ' | 'ń' | 'ņ' | 'ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ō' | 'ŏ' | 'ő' => "o",
        'ŕ' | 'ŗ' | 'ř' => "r",
        'ś' | 'ŝ' | 'ş' | 'š' => "s",
        'ţ' | 'ť' => "t",
        'ù' | 'ú' | 'û' | 'ü' | 'ũ' | 'ū' | 'ŭ' | 'ů' | 'ű' | 'ų' => "u",
        'ŵ' => "w",
        'ý' | 'ÿ' | 'ŷ' => "y",
        'ź' | 'ż' | 'ž' => "z",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> Option<WordPiece> {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.models/minilm-vocab.txt");
        // Provisioned by `make models`; the model tests need it anyway.
        WordPiece::load(&p).ok()
    }

    /// Ids printed by the reference tokenizer for the same strings.
    #[test]
    fn matches_the_reference_tokenizer() {
        let Some(t) = tok() else {
            panic!("run `make models` first (.models/minilm-vocab.txt)");
        };
        let cases: &[(&str, &[i64])] = &[
            (
                "My boiler is leaking!",
                &[101, 2026, 15635, 2003, 24325, 999, 102],
            ),
            (
                "Hi, I'd like a quote for £250 on 07700-900123.",
                &[
                    101, 7632, 1010, 1045, 1005, 1040, 2066, 1037, 14686, 2005, 21853, 12376, 2006,
                    5718, 19841, 2692, 1011, 7706, 12521, 2509, 1012, 102,
                ],
            ),
            (
                "Café naïve déjà-vu SW1A 1AA",
                &[
                    101, 7668, 15743, 2139, 3900, 1011, 24728, 25430, 2487, 2050, 20720, 2050, 102,
                ],
            ),
            (
                "unbelievably   supercalifragilistic",
                &[
                    101, 4895, 8671, 2666, 3567, 6321, 3565, 9289, 10128, 29181, 24411, 4588, 102,
                ],
            ),
        ];
        for (text, want) in cases {
            assert_eq!(t.encode(text, 256), *want, "{text}");
        }
    }

    #[test]
    fn truncates_and_keeps_the_markers() {
        let t = WordPiece::from_vocab("[PAD]\n[UNK]\nhello\n##s").unwrap();
        let ids = t.encode("hello hellos zzz hello hello", 4);
        assert_eq!(ids.len(), 4);
        assert_eq!(ids[0], CLS);
        assert_eq!(*ids.last().unwrap(), SEP);
        assert_eq!(t.encode("zzz", 8)[1], 1, "unknown word is [UNK]");
    }
}
