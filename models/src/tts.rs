//! Text to speech with a Piper voice (VITS exported to ONNX) on ONNX Runtime.
//!
//! Text becomes IPA phonemes through `espeak-ng`, run as a separate process
//! (espeak-ng is GPL-3: it must never be linked into our binary), then phoneme
//! ids through the voice's `phoneme_id_map`, then audio through the model, one
//! run per sentence, so a caller hears the first sentence while the rest is
//! still being made.
//!
//! What Piper (piper-phonemize) does, and what this does the same way:
//! - phonemes are espeak-ng's IPA (`espeakPHONEMES_IPA`, no tie characters),
//!   clause by clause, with the clause's punctuation kept as a phoneme
//!   (`,` `:` `;` followed by a space; `.` `?` `!` end a sentence);
//! - espeak-ng's language-switch flags (`(fr)…(en)`) are dropped and the
//!   phonemes are split into code points after canonical decomposition
//!   (so `ç` is `c` + U+0327, both in the map);
//! - ids are `^ _ p₁ _ p₂ _ … pₙ _ $`: bos, then each phoneme followed by the
//!   pad, then eos; a phoneme missing from the map is skipped (debug log);
//! - inputs `input` i64 [1, N], `input_lengths` i64 [1], `scales` f32 [3]
//!   (noise, length, noise_w from the voice's config); output f32 [1, 1, 1, T]
//!   at the voice's rate (22,050 Hz for medium voices);
//! - 0.2 s of silence between sentences.
//!
//! How the espeak-ng command line is used: `espeak-ng -q -b 1 --ipa -v VOICE`
//! with the text on stdin (so no caller's words show in the process list).
//! It prints one line of IPA per clause and no punctuation, so we split the
//! text into clauses ourselves, strip each clause's punctuation, and send
//! each clause on a line of its own followed by a marker line `[[ZZZZZZ]]`
//! (phoneme input, which comes out as `ʒʒʒʒʒʒ`, a string no text produces;
//! `[` and `]` are removed from the text so only our markers use phoneme
//! input). Whatever espeak-ng prints between two markers is that clause,
//! however many lines it split it into (it breaks after `Dr.`, say).
//!
//! Determinism: the voice's noise scales make the model sample noise, and
//! ONNX Runtime seeds that per process, so two runs give slightly different
//! audio. Tests that need identical audio set the noise scales to zero
//! ([`Voice::with_scales`]); the product keeps the voice's own values.
//!
//! Concurrency: an ort `Session::run` takes `&mut self` (ort 2.0.0-rc.15), so
//! each session sits behind a mutex, held for one sentence at a time. A
//! [`Voice`] is cheap to clone and shares its sessions: with one session (the
//! default) several calls speaking at once take turns sentence by sentence;
//! [`Voice::load_sessions`] makes more (each costs the model's memory again)
//! so that speakers run in parallel on separate cores.
#![forbid(unsafe_code)]

use crate::{Error, PROVISION_COMMAND};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

/// The longest text one call to [`Voice::stream`] speaks. The agent says
/// greetings, menus and read-backs, not documents.
pub const MAX_TEXT_CHARS: usize = 1000;

/// The most phonemes in one model run (about 20 s of speech). A longer
/// sentence is cut at clause boundaries, then between words.
pub const MAX_PHONEMES: usize = 300;

/// How long espeak-ng may take before it is killed.
pub const ESPEAK_TIMEOUT: Duration = Duration::from_secs(5);

/// Silence after each sentence but the last, as Piper does.
pub const SENTENCE_SILENCE_MS: u32 = 200;

/// espeak-ng's name; found on `PATH` unless [`Voice::with_espeak`] says otherwise.
pub const ESPEAK: &str = "espeak-ng";

/// What we send after every clause; espeak-ng prints `ʒʒʒʒʒʒ` for it.
const MARK_IN: &str = "[[ZZZZZZ]]";
const MARK_OUT: &str = "ʒʒʒʒʒʒ";

/// The model's three scales.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scales {
    /// Noise added to the prior (voice variation).
    pub noise: f32,
    /// Duration multiplier: above 1 speaks slower.
    pub length: f32,
    /// Noise in the duration predictor (rhythm variation).
    pub noise_w: f32,
}

/// What the voice's `.onnx.json` says.
#[derive(Debug, Clone)]
pub struct VoiceConfig {
    pub sample_rate: u32,
    /// espeak-ng's voice name for the phonemes (`en-us`).
    pub espeak_voice: String,
    pub scales: Scales,
    ids: HashMap<char, Vec<i64>>,
    pad: Vec<i64>,
    bos: Vec<i64>,
    eos: Vec<i64>,
}

#[derive(Deserialize)]
struct ConfigFile {
    audio: AudioSection,
    espeak: EspeakSection,
    inference: InferenceSection,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default)]
    phoneme_type: Option<String>,
    #[serde(default)]
    num_speakers: Option<u32>,
}

#[derive(Deserialize)]
struct AudioSection {
    sample_rate: u32,
}

#[derive(Deserialize)]
struct EspeakSection {
    voice: String,
}

#[derive(Deserialize)]
struct InferenceSection {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl VoiceConfig {
    /// Parse a Piper `.onnx.json`; `path` is only for error messages.
    pub fn parse(json: &str, path: &Path) -> Result<VoiceConfig, Error> {
        let bad = |what: String| Error::Format(format!("{}: {what}", path.display()));
        let f: ConfigFile = serde_json::from_str(json)
            .map_err(|e| bad(format!("not a Piper voice config: {e}")))?;
        if let Some(t) = f.phoneme_type.as_deref()
            && t != "espeak"
        {
            return Err(bad(format!(
                "phoneme_type {t:?} is not supported (only espeak)"
            )));
        }
        if f.num_speakers.unwrap_or(1) > 1 {
            return Err(bad("multi-speaker voices are not supported".into()));
        }
        if !(8_000..=48_000).contains(&f.audio.sample_rate) {
            return Err(bad(format!(
                "sample_rate {} is implausible",
                f.audio.sample_rate
            )));
        }
        let v = &f.espeak.voice;
        if v.is_empty()
            || v.starts_with('-')
            || !v
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_+/".contains(c))
        {
            return Err(bad(format!("espeak voice {v:?} is not a voice name")));
        }
        let s = &f.inference;
        for (name, x) in [
            ("noise_scale", s.noise_scale),
            ("length_scale", s.length_scale),
            ("noise_w", s.noise_w),
        ] {
            if !x.is_finite() || !(0.0..=10.0).contains(&x) {
                return Err(bad(format!("inference.{name} {x} is out of range")));
            }
        }
        if s.length_scale <= 0.0 {
            return Err(bad("inference.length_scale must be above 0".into()));
        }
        let mut ids = HashMap::with_capacity(f.phoneme_id_map.len());
        for (k, v) in f.phoneme_id_map {
            let mut cs = k.chars();
            let (Some(c), None) = (cs.next(), cs.next()) else {
                return Err(bad(format!(
                    "phoneme_id_map key {k:?} is not one character"
                )));
            };
            if v.is_empty() || v.iter().any(|&i| i < 0) {
                return Err(bad(format!("phoneme_id_map[{k:?}] has no valid ids")));
            }
            ids.insert(c, v);
        }
        let special = |c: char| {
            ids.get(&c)
                .cloned()
                .ok_or_else(|| bad(format!("phoneme_id_map has no {c:?}")))
        };
        Ok(VoiceConfig {
            sample_rate: f.audio.sample_rate,
            espeak_voice: f.espeak.voice,
            scales: Scales {
                noise: s.noise_scale,
                length: s.length_scale,
                noise_w: s.noise_w,
            },
            pad: special('_')?,
            bos: special('^')?,
            eos: special('$')?,
            ids,
        })
    }

    /// Model input for one phrase: `^ _ p _ p _ … $`. Phonemes the voice
    /// does not know are skipped.
    pub fn phoneme_ids(&self, phonemes: &str) -> Vec<i64> {
        let mut out = Vec::with_capacity(2 * phonemes.len() + 3);
        out.extend_from_slice(&self.bos);
        out.extend_from_slice(&self.pad);
        for c in phonemes.chars() {
            for c in decompose(c) {
                match self.ids.get(&c) {
                    Some(ids) => {
                        out.extend_from_slice(ids);
                        out.extend_from_slice(&self.pad);
                    }
                    None => tracing::debug!(
                        phoneme = %c.escape_unicode(),
                        "phoneme not in the voice's map; skipped"
                    ),
                }
            }
        }
        out.extend_from_slice(&self.eos);
        out
    }
}

/// Canonical decomposition of the precomposed letters espeak-ng can print
/// (Piper decomposes with NFD; no normalisation crate for a dozen letters).
fn decompose(c: char) -> impl Iterator<Item = char> {
    const GRAVE: char = '\u{300}';
    const ACUTE: char = '\u{301}';
    const CIRCUMFLEX: char = '\u{302}';
    const TILDE: char = '\u{303}';
    const DIAERESIS: char = '\u{308}';
    const CEDILLA: char = '\u{327}';
    let pair = match c {
        'à' => Some(('a', GRAVE)),
        'á' => Some(('a', ACUTE)),
        'â' => Some(('a', CIRCUMFLEX)),
        'ã' => Some(('a', TILDE)),
        'ä' => Some(('a', DIAERESIS)),
        'ç' => Some(('c', CEDILLA)),
        'è' => Some(('e', GRAVE)),
        'é' => Some(('e', ACUTE)),
        'ê' => Some(('e', CIRCUMFLEX)),
        'ẽ' => Some(('e', TILDE)),
        'ë' => Some(('e', DIAERESIS)),
        'ì' => Some(('i', GRAVE)),
        'í' => Some(('i', ACUTE)),
        'î' => Some(('i', CIRCUMFLEX)),
        'ĩ' => Some(('i', TILDE)),
        'ï' => Some(('i', DIAERESIS)),
        'ñ' => Some(('n', TILDE)),
        'ò' => Some(('o', GRAVE)),
        'ó' => Some(('o', ACUTE)),
        'ô' => Some(('o', CIRCUMFLEX)),
        'õ' => Some(('o', TILDE)),
        'ö' => Some(('o', DIAERESIS)),
        'ù' => Some(('u', GRAVE)),
        'ú' => Some(('u', ACUTE)),
        'û' => Some(('u', CIRCUMFLEX)),
        'ũ' => Some(('u', TILDE)),
        'ü' => Some(('u', DIAERESIS)),
        'ý' => Some(('y', ACUTE)),
        'ÿ' => Some(('y', DIAERESIS)),
        _ => None,
    };
    match pair {
        Some((a, b)) => [Some(a), Some(b)],
        None => [Some(c), None],
    }
    .into_iter()
    .flatten()
}

/// How a clause ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Period,
    Question,
    Exclamation,
    Comma,
    Colon,
    Semicolon,
    /// End of text without punctuation.
    None,
}

impl Stop {
    fn from_char(c: char) -> Option<Stop> {
        Some(match c {
            '.' => Stop::Period,
            '?' => Stop::Question,
            '!' => Stop::Exclamation,
            ',' => Stop::Comma,
            ':' => Stop::Colon,
            ';' => Stop::Semicolon,
            _ => return None,
        })
    }

    /// The phonemes Piper appends for it.
    fn phonemes(self) -> &'static str {
        match self {
            Stop::Period => ".",
            Stop::Question => "?",
            Stop::Exclamation => "!",
            Stop::Comma => ", ",
            Stop::Colon => ": ",
            Stop::Semicolon => "; ",
            Stop::None => "",
        }
    }

    fn ends_sentence(self) -> bool {
        matches!(
            self,
            Stop::Period | Stop::Question | Stop::Exclamation | Stop::None
        )
    }
}

/// Words whose full stop does not end a sentence.
const ABBREVIATIONS: &[&str] = &[
    "mr", "mrs", "ms", "dr", "st", "jr", "sr", "prof", "mt", "vs", "rd", "ave", "approx",
];

#[derive(Debug, Clone, PartialEq)]
struct Clause {
    text: String,
    stop: Stop,
}

/// Split text into clauses at `. ? ! , : ;` followed by a space or the end
/// (so `3.5`, `1,000` and `10:30` stay whole), keeping `Dr.` and initials
/// with what follows. Control characters and `[ ]` become spaces.
fn clauses(text: &str) -> Vec<Clause> {
    let chars: Vec<char> = text
        .chars()
        .map(|c| {
            if c.is_control() || c == '[' || c == ']' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let Some(stop) = Stop::from_char(c) else {
            cur.push(c);
            i += 1;
            continue;
        };
        // The whole run of punctuation, and closing quotes after it.
        let mut j = i;
        while j < chars.len() && Stop::from_char(chars[j]).is_some() {
            j += 1;
        }
        while j < chars.len() && "\"'”’)»".contains(chars[j]) {
            j += 1;
        }
        let at_break = j == chars.len() || chars[j].is_whitespace();
        let abbreviation = stop == Stop::Period && j == i + 1 && {
            let word: String = cur
                .chars()
                .rev()
                .take_while(|c| !c.is_whitespace())
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            let w = word.to_lowercase();
            ABBREVIATIONS.contains(&w.as_str())
                || (w.chars().count() == 1 && word.chars().all(|c| c.is_uppercase()))
                || (w.contains('.') && w.chars().all(|c| c.is_alphabetic() || c == '.'))
        };
        if !at_break || abbreviation {
            cur.extend(&chars[i..j]);
            i = j;
            continue;
        }
        // `?!` is a question, `...` a full stop: the strongest mark wins.
        let stop = chars[i..j]
            .iter()
            .filter_map(|&c| Stop::from_char(c))
            .max_by_key(|s| match s {
                Stop::Question => 5,
                Stop::Exclamation => 4,
                Stop::Period => 3,
                Stop::Semicolon => 2,
                Stop::Colon => 1,
                _ => 0,
            })
            .unwrap_or(stop);
        push_clause(&mut out, &mut cur, stop);
        i = j;
    }
    push_clause(&mut out, &mut cur, Stop::None);
    out
}

fn push_clause(out: &mut Vec<Clause>, cur: &mut String, stop: Stop) {
    let text = cur.split_whitespace().collect::<Vec<_>>().join(" ");
    cur.clear();
    if text.chars().any(|c| c.is_alphanumeric()) {
        out.push(Clause { text, stop });
    } else if let Some(last) = out.last_mut() {
        // "Hello. ." : a stray mark still ends what came before.
        if stop != Stop::None && last.stop == Stop::Comma {
            last.stop = stop;
        }
    }
}

/// A first phrase at least this long (in phonemes, about 1.2 s of speech)
/// is cut at its first clause by [`first_clause_apart`].
pub const FIRST_PHRASE_SPLIT_AT: usize = 24;

/// A first clause shorter than this stays with the rest ("So, ..."): a run
/// that short sounds clipped.
const FIRST_CLAUSE_MIN: usize = 6;

/// Cut the first phrase after its first clause (`,` `:` `;`) when it is
/// long, so the first model run is short. The clause keeps its punctuation
/// phoneme, so it ends with the clause's own fall and pause; no extra
/// silence is added between the two.
pub fn first_clause_apart(phrases: &mut Vec<Phrase>) {
    let Some(first) = phrases.first() else { return };
    if first.phonemes.chars().count() < FIRST_PHRASE_SPLIT_AT {
        return;
    }
    let chars: Vec<char> = first.phonemes.chars().collect();
    let cut = (FIRST_CLAUSE_MIN..chars.len().saturating_sub(FIRST_CLAUSE_MIN))
        .find(|&i| matches!(chars[i], ',' | ':' | ';') && chars.get(i + 1) == Some(&' '));
    let Some(i) = cut else { return };
    let head: String = chars[..=i].iter().collect();
    let tail: String = chars[i + 2..].iter().collect();
    let ends_sentence = first.ends_sentence;
    phrases[0] = Phrase {
        phonemes: tail,
        ends_sentence,
    };
    phrases.insert(
        0,
        Phrase {
            phonemes: head,
            ends_sentence: false,
        },
    );
}

/// One model run's worth of speech.
#[derive(Debug, Clone, PartialEq)]
pub struct Phrase {
    /// IPA, with Piper's punctuation phonemes.
    pub phonemes: String,
    /// A sentence ends here (silence follows unless it is the last).
    pub ends_sentence: bool,
}

/// Text to phonemes through an `espeak-ng` process.
#[derive(Debug, Clone)]
pub struct Phonemizer {
    program: PathBuf,
    voice: String,
    timeout: Duration,
}

impl Phonemizer {
    /// espeak-ng from `PATH`, with its voice `voice` (e.g. `en-us`).
    pub fn new(voice: &str) -> Phonemizer {
        Phonemizer {
            program: PathBuf::from(ESPEAK),
            voice: voice.to_owned(),
            timeout: ESPEAK_TIMEOUT,
        }
    }

    pub fn with_program(mut self, program: impl Into<PathBuf>) -> Phonemizer {
        self.program = program.into();
        self
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Phonemizer {
        self.timeout = timeout;
        self
    }

    /// The text's phrases: sentences, cut to at most [`MAX_PHONEMES`].
    pub fn phonemize(&self, text: &str) -> Result<Vec<Phrase>, Error> {
        let n = text.chars().count();
        if n > MAX_TEXT_CHARS {
            return Err(Error::TextTooLong(n, MAX_TEXT_CHARS));
        }
        let clauses = clauses(text);
        if clauses.is_empty() {
            return Ok(Vec::new());
        }
        let mut input = String::with_capacity(text.len() + clauses.len() * 12);
        for c in &clauses {
            input.push_str(&c.text);
            input.push('\n');
            input.push_str(MARK_IN);
            input.push('\n');
        }
        let output = self.run(&input)?;
        let mut per_clause = Vec::with_capacity(clauses.len());
        let mut cur: Vec<&str> = Vec::new();
        for line in output.lines() {
            // The marker comes back on a line of its own; split on it anyway
            // in case an espeak-ng version joins it to a clause.
            let mut rest = line;
            while let Some(k) = rest.find(MARK_OUT) {
                let before = rest[..k].trim();
                if !before.is_empty() {
                    cur.push(before);
                }
                per_clause.push(cur.join(" "));
                cur.clear();
                rest = &rest[k + MARK_OUT.len()..];
            }
            let rest = rest.trim();
            if !rest.is_empty() {
                cur.push(rest);
            }
        }
        if per_clause.len() != clauses.len() {
            return Err(Error::Espeak(format!(
                "expected {} clauses back, got {}",
                clauses.len(),
                per_clause.len()
            )));
        }
        let mut phrases = Vec::new();
        let mut sentence = String::new();
        let mut sentence_len = 0;
        for (clause, ipa) in clauses.iter().zip(per_clause) {
            let ipa = strip_language_flags(&ipa);
            let ipa = ipa.trim();
            if !ipa.is_empty() {
                let mut p = String::with_capacity(ipa.len() + 2);
                p.push_str(ipa);
                p.push_str(clause.stop.phonemes());
                let len = p.chars().count();
                if sentence_len > 0 && sentence_len + len > MAX_PHONEMES {
                    phrases.push(Phrase {
                        phonemes: std::mem::take(&mut sentence).trim_end().to_owned(),
                        ends_sentence: false,
                    });
                    sentence_len = 0;
                }
                if len > MAX_PHONEMES {
                    for piece in split_words(&p, MAX_PHONEMES) {
                        phrases.push(Phrase {
                            phonemes: piece,
                            ends_sentence: false,
                        });
                    }
                } else {
                    sentence.push_str(&p);
                    sentence_len += len;
                }
            }
            if clause.stop.ends_sentence() {
                if !sentence.is_empty() {
                    phrases.push(Phrase {
                        phonemes: std::mem::take(&mut sentence).trim_end().to_owned(),
                        ends_sentence: true,
                    });
                    sentence_len = 0;
                } else if let Some(last) = phrases.last_mut() {
                    last.ends_sentence = true;
                }
            }
        }
        if !sentence.is_empty() {
            phrases.push(Phrase {
                phonemes: sentence.trim_end().to_owned(),
                ends_sentence: true,
            });
        }
        Ok(phrases)
    }

    /// Run espeak-ng on `input` (our clause lines and markers).
    fn run(&self, input: &str) -> Result<String, Error> {
        let shown = self.program.display().to_string();
        let mut child = Command::new(&self.program)
            .args(["-q", "-b", "1", "--ipa", "-v", &self.voice])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Error::Espeak(format!(
                        "{shown} not found; install espeak-ng (Debian: apt-get install espeak-ng)"
                    ))
                } else {
                    Error::Espeak(format!("starting {shown}: {e}"))
                }
            })?;
        let (Some(mut stdin), Some(mut stdout), Some(mut stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Espeak("no pipes to the child".into()));
        };
        // The input (at most ~1,200 bytes with markers) fits a pipe's
        // buffer, so writing it before reading cannot deadlock. A child that
        // exits early gives a broken pipe, reported by its exit status below.
        let wrote = stdin.write_all(input.as_bytes());
        drop(stdin);
        // Read on a thread so that a child that hangs can be killed. Any
        // deadlock (a child filling stderr while we wait on stdout) ends
        // at the timeout too.
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::Builder::new()
            .name("espeak-read".into())
            .spawn(move || {
                let mut out = Vec::new();
                let r = stdout.read_to_end(&mut out);
                let mut err = Vec::new();
                let _ = stderr.read_to_end(&mut err);
                err.truncate(2048);
                let _ = tx.send((r.map(|_| out), err));
            });
        if let Err(e) = reader {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::Espeak(format!("starting a reader thread: {e}")));
        }
        let (out, err) = match rx.recv_timeout(self.timeout) {
            Ok(x) => x,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::Espeak(format!(
                    "{shown} took longer than {:?}; killed",
                    self.timeout
                )));
            }
        };
        let status = child.wait()?;
        let err = String::from_utf8_lossy(&err);
        if !status.success() {
            return Err(Error::Espeak(format!(
                "{shown} failed ({status}): {}",
                err.trim()
            )));
        }
        if let Err(e) = wrote
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            return Err(Error::Espeak(format!("writing to {shown}: {e}")));
        }
        let out = out.map_err(|e| Error::Espeak(format!("reading from {shown}: {e}")))?;
        String::from_utf8(out).map_err(|_| Error::Espeak(format!("{shown} printed invalid UTF-8")))
    }
}

/// Drop espeak-ng's `(en)`-style language switches.
fn strip_language_flags(ipa: &str) -> String {
    let mut out = String::with_capacity(ipa.len());
    let mut rest = ipa;
    while let Some(open) = rest.find('(') {
        let after = &rest[open + 1..];
        match after.find(')') {
            Some(close)
                if close > 0
                    && after[..close]
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '-') =>
            {
                out.push_str(&rest[..open]);
                rest = &after[close + 1..];
            }
            _ => {
                out.push_str(&rest[..open + 1]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Cut phonemes into pieces of at most `max` characters, between words
/// where possible.
fn split_words(p: &str, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut cur_len = 0;
    for word in p.split(' ').filter(|w| !w.is_empty()) {
        let wl = word.chars().count();
        if cur_len > 0 && cur_len + 1 + wl > max {
            out.push(std::mem::take(&mut cur));
            cur_len = 0;
        }
        if wl > max {
            let cs: Vec<char> = word.chars().collect();
            for piece in cs.chunks(max) {
                out.push(piece.iter().collect());
            }
            continue;
        }
        if cur_len > 0 {
            cur.push(' ');
            cur_len += 1;
        }
        cur.push_str(word);
        cur_len += wl;
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

struct Shared {
    config: VoiceConfig,
    sessions: Vec<Mutex<Session>>,
    next: AtomicUsize,
}

/// A loaded Piper voice. Clones share the model.
#[derive(Clone)]
pub struct Voice {
    shared: Arc<Shared>,
    phonemizer: Phonemizer,
    scales: Scales,
}

impl std::fmt::Debug for Voice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Voice")
            .field("sample_rate", &self.shared.config.sample_rate)
            .field("sessions", &self.shared.sessions.len())
            .field("phonemizer", &self.phonemizer)
            .field("scales", &self.scales)
            .finish()
    }
}

impl Voice {
    /// Load a voice with one ONNX session. ONNX Runtime must be initialised
    /// ([`crate::vad::init_runtime`]).
    pub fn load(onnx: &Path, config_json: &Path) -> Result<Voice, Error> {
        Voice::load_sessions(onnx, config_json, 1)
    }

    /// Load a voice with `sessions` ONNX sessions (at least one), so that
    /// as many speakers synthesise at once.
    pub fn load_sessions(onnx: &Path, config_json: &Path, sessions: usize) -> Result<Voice, Error> {
        for p in [onnx, config_json] {
            if !p.is_file() {
                return Err(Error::Missing {
                    path: p.to_owned(),
                    fix: PROVISION_COMMAND,
                });
            }
        }
        let json = std::fs::read_to_string(config_json)
            .map_err(|e| Error::Format(format!("{}: cannot read: {e}", config_json.display())))?;
        let config = VoiceConfig::parse(&json, config_json)?;
        let mut all = Vec::with_capacity(sessions.max(1));
        for _ in 0..sessions.max(1) {
            let s = crate::vad::session(onnx)
                .map_err(|e| Error::Onnx(format!("{}: {e}", onnx.display())))?;
            for want in ["input", "input_lengths", "scales"] {
                if !s.inputs().iter().any(|i| i.name() == want) {
                    return Err(Error::Format(format!(
                        "{}: not a Piper voice (no input {want:?})",
                        onnx.display()
                    )));
                }
            }
            if s.inputs().len() != 3 {
                return Err(Error::Format(format!(
                    "{}: {} inputs; only single-speaker Piper voices are supported",
                    onnx.display(),
                    s.inputs().len()
                )));
            }
            all.push(Mutex::new(s));
        }
        Ok(Voice {
            phonemizer: Phonemizer::new(&config.espeak_voice),
            scales: config.scales,
            shared: Arc::new(Shared {
                config,
                sessions: all,
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// Use this espeak-ng binary instead of the one on `PATH`.
    pub fn with_espeak(mut self, program: impl Into<PathBuf>) -> Voice {
        self.phonemizer = self.phonemizer.with_program(program);
        self
    }

    /// Kill espeak-ng after `timeout` instead of [`ESPEAK_TIMEOUT`].
    pub fn with_espeak_timeout(mut self, timeout: Duration) -> Voice {
        self.phonemizer = self.phonemizer.with_timeout(timeout);
        self
    }

    /// Override the voice's scales (e.g. zero noise for identical runs,
    /// a longer length to read numbers slowly).
    pub fn with_scales(mut self, scales: Scales) -> Voice {
        self.scales = scales;
        self
    }

    /// The voice's output rate (Hz).
    pub fn sample_rate(&self) -> u32 {
        self.shared.config.sample_rate
    }

    pub fn config(&self) -> &VoiceConfig {
        &self.shared.config
    }

    pub fn scales(&self) -> Scales {
        self.scales
    }

    /// The text's phrases, without synthesising them.
    pub fn phonemize(&self, text: &str) -> Result<Vec<Phrase>, Error> {
        self.phonemizer.phonemize(text)
    }

    /// Speech for `text`, one chunk per sentence, each made when it is
    /// asked for. Phonemes are made up front (one espeak-ng run), so errors
    /// in the text show here. Drop the iterator to stop (barge-in).
    pub fn stream(&self, text: &str) -> Result<Speech, Error> {
        let phrases = self.phonemize(text)?;
        Ok(Speech {
            voice: self.clone(),
            phrases: phrases.into_iter(),
        })
    }

    /// As [`Voice::stream`], but a long first sentence is cut at its first
    /// clause ([`first_clause_apart`]): for a caller waiting on a reply, the
    /// time to first audio is the first phrase's synthesis (0.16 s per
    /// second of speech on the 2-core box), and "I have zero seven seven
    /// zero zero," is ready in half the time of the whole read-back.
    pub fn stream_soon(&self, text: &str) -> Result<Speech, Error> {
        let mut phrases = self.phonemize(text)?;
        first_clause_apart(&mut phrases);
        Ok(Speech {
            voice: self.clone(),
            phrases: phrases.into_iter(),
        })
    }

    /// Speak `text`, calling `on_chunk` with each sentence's audio as soon
    /// as it is made, at [`Voice::sample_rate`].
    pub fn synthesize(&self, text: &str, mut on_chunk: impl FnMut(&[f32])) -> Result<(), Error> {
        for chunk in self.stream(text)? {
            on_chunk(&chunk?);
        }
        Ok(())
    }

    /// All of `text`'s audio at once.
    pub fn synthesize_all(&self, text: &str) -> Result<Vec<f32>, Error> {
        let mut all = Vec::new();
        self.synthesize(text, |c| all.extend_from_slice(c))?;
        Ok(all)
    }

    /// Audio for one phrase's phonemes.
    /// At most [`MAX_PHONEMES`] (what [`Voice::phonemize`] makes).
    pub fn synthesize_phonemes(&self, phonemes: &str) -> Result<Vec<f32>, Error> {
        let count = phonemes.chars().count();
        if count > MAX_PHONEMES {
            return Err(Error::TextTooLong(count, MAX_PHONEMES));
        }
        let ids = self.shared.config.phoneme_ids(phonemes);
        let n = ids.len();
        let len = [n as i64];
        let s = self.scales;
        let scales = [s.noise, s.length, s.noise_w];
        let mut session = self.session();
        let out = session.run(ort::inputs![
            "input" => TensorRef::from_array_view(([1usize, n], &ids[..]))?,
            "input_lengths" => TensorRef::from_array_view(([1usize], &len[..]))?,
            "scales" => TensorRef::from_array_view(([3usize], &scales[..]))?,
        ])?;
        let (_, audio) = out[0].try_extract_tensor::<f32>()?;
        Ok(audio.iter().map(|x| x.clamp(-1.0, 1.0)).collect())
    }

    /// A free session, or wait for one in turn.
    fn session(&self) -> std::sync::MutexGuard<'_, Session> {
        let all = &self.shared.sessions;
        for s in all {
            if let Ok(g) = s.try_lock() {
                return g;
            }
        }
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed) % all.len();
        // A panic while holding it leaves nothing half-done in the session.
        all[i].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Speech being made, sentence by sentence ([`Voice::stream`]).
pub struct Speech {
    voice: Voice,
    phrases: std::vec::IntoIter<Phrase>,
}

impl Speech {
    /// Phrases not yet synthesised.
    pub fn remaining(&self) -> usize {
        self.phrases.len()
    }
}

impl Iterator for Speech {
    type Item = Result<Vec<f32>, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        let p = self.phrases.next()?;
        let mut audio = match self.voice.synthesize_phonemes(&p.phonemes) {
            Ok(a) => a,
            Err(e) => return Some(Err(e)),
        };
        if p.ends_sentence && self.phrases.len() > 0 {
            let n = (self.voice.sample_rate() * SENTENCE_SILENCE_MS / 1000) as usize;
            audio.resize(audio.len() + n, 0.0);
        }
        Some(Ok(audio))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(cs: &[Clause]) -> Vec<(&str, Stop)> {
        cs.iter().map(|c| (c.text.as_str(), c.stop)).collect()
    }

    #[test]
    fn a_long_first_sentence_is_cut_at_its_first_clause() {
        let p = |s: &str, e: bool| Phrase {
            phonemes: s.into(),
            ends_sentence: e,
        };
        let mut v = vec![
            p("aɪ hæv zˈiəɹoʊ sˈɛvən, nˈaɪn zˈiəɹoʊ, wˈʌn.", true),
            p("ɪz ðæt ɹˈaɪt?", true),
        ];
        first_clause_apart(&mut v);
        assert_eq!(
            v,
            vec![
                p("aɪ hæv zˈiəɹoʊ sˈɛvən,", false),
                p("nˈaɪn zˈiəɹoʊ, wˈʌn.", true),
                p("ɪz ðæt ɹˈaɪt?", true),
            ]
        );
        // Short, clause-less, or a clause too short to stand alone: as is.
        for s in [
            "θæŋk juː, dˈeɪvɪd.",
            "wˈiːl kˈɔːl juː bˈæk æz sˈuːn æz wiː kæn.",
            "soʊ, wˈiːl kˈɔːl juː bˈæk æz sˈuːn æz wiː kæn.",
        ] {
            let mut v = vec![p(s, true)];
            first_clause_apart(&mut v);
            assert_eq!(v, vec![p(s, true)], "{s}");
        }
        first_clause_apart(&mut Vec::new());
    }

    #[test]
    fn clauses_split_at_punctuation_followed_by_space() {
        let cs = clauses("Hello, world; yes: no! It costs $3.50, or 1,000 at 10:30. Why?");
        assert_eq!(
            texts(&cs),
            [
                ("Hello", Stop::Comma),
                ("world", Stop::Semicolon),
                ("yes", Stop::Colon),
                ("no", Stop::Exclamation),
                ("It costs $3.50", Stop::Comma),
                ("or 1,000 at 10:30", Stop::Period),
                ("Why", Stop::Question),
            ]
        );
    }

    #[test]
    fn abbreviations_and_initials_do_not_end_sentences() {
        let cs = clauses("Dr. Smith and J. R. Jones of the U.S. will call. Bye");
        assert_eq!(
            texts(&cs),
            [
                (
                    "Dr. Smith and J. R. Jones of the U.S. will call",
                    Stop::Period
                ),
                ("Bye", Stop::None),
            ]
        );
    }

    #[test]
    fn runs_of_marks_quotes_and_junk() {
        let cs = clauses("Really?! \"Yes.\" Well... ok . , \n[[x]] done\u{7}");
        assert_eq!(
            texts(&cs),
            [
                ("Really", Stop::Question),
                ("\"Yes", Stop::Period),
                ("Well", Stop::Period),
                ("ok", Stop::Period),
                ("x done", Stop::None),
            ]
        );
        assert!(clauses("  ...  ").is_empty());
    }

    #[test]
    fn language_flags_are_dropped_other_brackets_kept() {
        assert_eq!(strip_language_flags("(fr)ʃɛz(en) mwˈa"), "ʃɛz mwˈa");
        assert_eq!(strip_language_flags("a (b) c(1)"), "a  c(1)");
        assert_eq!(strip_language_flags("open ( only"), "open ( only");
    }

    #[test]
    fn long_phrases_split_between_words() {
        let p = "aa bbb cc dddd e";
        assert_eq!(split_words(p, 6), ["aa bbb", "cc", "dddd e"]);
        assert_eq!(split_words("abcdefgh", 3), ["abc", "def", "gh"]);
    }

    const CONFIG: &str = r#"{
        "audio": {"sample_rate": 22050},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "a": [14],
                           "c": [16], "ˈ": [120], "ː": [122], "̧": [140], ".": [10]},
        "num_speakers": 1
    }"#;

    #[test]
    fn ids_are_bos_pad_phoneme_pad_eos_and_unknowns_are_skipped() {
        let c = VoiceConfig::parse(CONFIG, Path::new("v.json")).unwrap();
        assert_eq!(c.sample_rate, 22050);
        assert_eq!(c.espeak_voice, "en-us");
        assert_eq!(c.scales.noise, 0.667);
        assert_eq!(
            c.phoneme_ids("ˈaː a."),
            [1, 0, 120, 0, 14, 0, 122, 0, 3, 0, 14, 0, 10, 0, 2]
        );
        // ç decomposes to c + cedilla; ø is not in this map.
        assert_eq!(c.phoneme_ids("çø"), [1, 0, 16, 0, 140, 0, 2]);
    }

    #[test]
    fn bad_configs_name_the_file() {
        for (json, want) in [
            ("{", "not a Piper voice config"),
            (&CONFIG.replace("\"espeak\",", "\"text\","), "phoneme_type"),
            (&CONFIG.replace("\"^\": [1],", ""), "no '^'"),
            (&CONFIG.replace("en-us", "-x"), "not a voice name"),
            (
                &CONFIG.replace("\"num_speakers\": 1", "\"num_speakers\": 4"),
                "multi-speaker",
            ),
        ] {
            let e = VoiceConfig::parse(json, Path::new("/m/voice.onnx.json"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("/m/voice.onnx.json"), "{e}");
            assert!(e.contains(want), "{want}: {e}");
        }
    }

    // espeak-ng is on every box (and in the test packages).
    #[test]
    fn espeak_phonemes_keep_punctuation_and_clause_order() {
        let p = Phonemizer::new("en-us")
            .phonemize("Hello, Dr. Smith. How are you today? Fine")
            .unwrap();
        let got: Vec<(&str, bool)> = p
            .iter()
            .map(|p| (p.phonemes.as_str(), p.ends_sentence))
            .collect();
        assert_eq!(got.len(), 3, "{got:?}");
        assert!(got[0].0.starts_with("həlˈoʊ, dˈɑːktɚ smˈɪθ."), "{got:?}");
        assert!(got[1].0.ends_with('?'), "{got:?}");
        assert!(got.iter().all(|g| g.1));
        // The marker never leaks into the phonemes.
        assert!(got.iter().all(|g| !g.0.contains('ʒ')), "{got:?}");
    }

    #[test]
    fn text_is_bounded_and_long_sentences_are_cut() {
        let e = Phonemizer::new("en-us")
            .phonemize(&"a".repeat(MAX_TEXT_CHARS + 1))
            .unwrap_err();
        assert!(matches!(e, Error::TextTooLong(1001, 1000)), "{e}");
        let long = "the plumber will come to fix the boiler on Tuesday ".repeat(19);
        let p = Phonemizer::new("en-us").phonemize(&long).unwrap();
        assert!(p.len() >= 2, "{p:?}");
        assert!(p.iter().all(|p| p.phonemes.chars().count() <= MAX_PHONEMES));
        assert!(!p[0].ends_sentence && p.last().unwrap().ends_sentence);
    }

    #[test]
    fn missing_espeak_says_install_it() {
        let e = Phonemizer::new("en-us")
            .with_program("/nonexistent/espeak-ng")
            .phonemize("hello")
            .unwrap_err()
            .to_string();
        assert!(e.contains("install espeak-ng"), "{e}");
        assert!(e.contains("/nonexistent/espeak-ng"), "{e}");
    }

    #[test]
    fn a_hung_espeak_is_killed() {
        let dir = std::env::temp_dir().join(format!("handlet-tts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = dir.join("espeak-ng");
        std::fs::write(&script, "#!/bin/sh\nexec sleep 30\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = std::time::Instant::now();
        // Another test thread forking while the script was open for writing
        // can make exec fail with ETXTBSY for a moment: retry that.
        let mut e = String::new();
        for _ in 0..20 {
            e = Phonemizer::new("en-us")
                .with_program(&script)
                .with_timeout(Duration::from_millis(300))
                .phonemize("hello")
                .unwrap_err()
                .to_string();
            if !e.contains("busy") {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(e.contains("killed"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
