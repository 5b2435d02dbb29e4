//! Guards against whisper's known failures, as pure functions on its output.
//!
//! - On silence, hold music and noise whisper invents stock phrases from its
//!   training subtitles ("Thank you.", "Thanks for watching!"). They are
//!   dropped when whisper itself is unsure (no-speech probability or low token
//!   confidence); a caller who says "thank you" clearly is kept.
//! - Non-speech annotations ("[BLANK_AUDIO]", "(music)", "♪") are removed.
//! - Greedy decoding can fall into a loop repeating one phrase; long runs of
//!   the same phrase are collapsed (see [`collapse_repeats`]), while the short
//!   repetitions people say ("no, no", "five five", "zero zero zero") stay.

/// What whisper returned for one segment.
#[derive(Debug, Clone, Copy)]
pub struct Heard<'a> {
    pub text: &'a str,
    /// whisper's no-speech probability for the segment.
    pub no_speech: f32,
    /// Mean probability of the segment's text tokens.
    pub confidence: f32,
}

/// Above this no-speech probability a segment is dropped whatever it says.
const NO_SPEECH_DROP: f32 = 0.8;
/// Stock phrases survive only above this token confidence...
const STOCK_MIN_CONFIDENCE: f32 = 0.75;
/// ...and below this no-speech probability.
const STOCK_MAX_NO_SPEECH: f32 = 0.2;

/// Phrases whisper produces from nothing, normalised by [`normalise`].
const STOCK_PHRASES: &[&str] = &[
    "thank you",
    "thank you very much",
    "thank you so much",
    "thanks",
    "thanks for watching",
    "thank you for watching",
    "thanks for watching and see you next time",
    "please subscribe",
    "like and subscribe",
    "subscribe to my channel",
    "subtitles by the amaraorg community",
    "you",
    "bye",
    "bye bye",
    "so",
    "oh",
    "okay",
    "the end",
    "im sorry",
    "hmm",
    "uh",
    "um",
];

/// The text to keep for a segment, or `None` to drop it.
pub fn accept(h: &Heard, audio_secs: f32) -> Option<String> {
    if h.no_speech > NO_SPEECH_DROP {
        return None;
    }
    let text = strip_annotations(h.text);
    let text = collapse_repeats(&text);
    let text = text.trim();
    if normalise(text).is_empty() {
        return None;
    }
    if is_stock_phrase(text)
        && (h.confidence < STOCK_MIN_CONFIDENCE || h.no_speech > STOCK_MAX_NO_SPEECH)
    {
        return None;
    }
    // People say at most ~5 words a second; far more means whisper is making
    // text up (a loop the collapse did not catch). Keep nothing rather than a
    // paragraph of invention.
    let words = text.split_whitespace().count() as f32;
    if words > audio_secs * 6.0 + 8.0 {
        return None;
    }
    Some(text.to_string())
}

/// Lower case, letters, digits and single spaces only.
pub fn normalise(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for w in text.split_whitespace() {
        let w: String = w
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        if !w.is_empty() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(&w);
        }
    }
    out
}

/// Is the whole text one of the stock phrases whisper invents?
pub fn is_stock_phrase(text: &str) -> bool {
    let n = normalise(text);
    STOCK_PHRASES.contains(&n.as_str())
}

/// Remove "[BLANK_AUDIO]", "(upbeat music)", "*coughs*" and music notes.
pub fn strip_annotations(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut close: Option<char> = None;
    for c in text.chars() {
        match close {
            Some(end) if c == end => close = None,
            Some(_) => {}
            None => match c {
                '[' => close = Some(']'),
                '(' => close = Some(')'),
                '*' => close = Some('*'),
                '♪' | '♫' | '♬' => {}
                _ => out.push(c),
            },
        }
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A word repeated this many times in a row is a loop, not speech. People
/// say a word two or three times ("no, no, no", "zero zero zero" in a phone
/// number), rarely five; a decoding loop runs to the token bound
/// ([`crate::stt::max_tokens_for`]), a dozen copies or more of one word.
const WORD_LOOP_RUN: usize = 5;
/// A word loop keeps this many copies. Whisper loops on a word it heard
/// repeated ("five, five" became "5, 5, 5, ..."; said once, it is not seen
/// to loop), so one copy would lose a word that was said.
const WORD_LOOP_KEEP: usize = 2;
/// A phrase of 2-8 words repeated this many times in a row is a loop, cut to
/// one copy: whisper repeats a sentence heard once ("I'm sorry. I'm sorry.
/// I'm sorry.") and people seldom say one twice.
const PHRASE_LOOP_RUN: usize = 3;

/// Collapse decoding loops: one word repeated [`WORD_LOOP_RUN`] or more
/// times in a row to [`WORD_LOOP_KEEP`] copies, a phrase of 2–8 words
/// repeated [`PHRASE_LOOP_RUN`] or more times to one. Shorter runs are
/// speech and stay: "no, no", "five five", "no, no, no".
pub fn collapse_repeats(text: &str) -> String {
    let words: Vec<&str> = text.split_whitespace().collect();
    let keys: Vec<String> = words.iter().map(|w| normalise(w)).collect();
    let mut keep: Vec<&str> = Vec::with_capacity(words.len());
    let mut i = 0;
    'outer: while i < words.len() {
        for n in 1..=8usize {
            let (run, keep_copies) = if n == 1 {
                (WORD_LOOP_RUN, WORD_LOOP_KEEP)
            } else {
                (PHRASE_LOOP_RUN, 1)
            };
            if i + run * n > words.len() {
                // A longer phrase may still repeat often enough.
                if n == 1 {
                    continue;
                }
                break;
            }
            let unit = &keys[i..i + n];
            let mut reps = 1;
            while i + (reps + 1) * n <= words.len()
                && keys[i + reps * n..i + (reps + 1) * n] == *unit
            {
                reps += 1;
            }
            if reps >= run {
                // The first copies as said, then the last: it carries the
                // sentence's punctuation.
                keep.extend_from_slice(&words[i..i + (keep_copies - 1) * n]);
                keep.extend_from_slice(&words[i + (reps - 1) * n..i + reps * n]);
                i += reps * n;
                continue 'outer;
            }
        }
        keep.push(words[i]);
        i += 1;
    }
    keep.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn heard(text: &str, no_speech: f32, confidence: f32) -> Option<String> {
        accept(
            &Heard {
                text,
                no_speech,
                confidence,
            },
            3.0,
        )
    }

    #[test]
    fn stock_phrases_dropped_when_unsure_kept_when_clear() {
        assert_eq!(heard(" Thank you.", 0.05, 0.4), None);
        assert_eq!(heard("Thanks for watching!", 0.5, 0.9), None);
        assert_eq!(
            heard("Thank you.", 0.01, 0.95).as_deref(),
            Some("Thank you.")
        );
        // Real sentences are not stock phrases even at low confidence.
        assert!(heard("Thank you, my boiler is leaking.", 0.1, 0.5).is_some());
    }

    #[test]
    fn annotations_are_removed() {
        assert_eq!(heard("[BLANK_AUDIO]", 0.1, 0.9), None);
        assert_eq!(heard("(upbeat music) ♪", 0.1, 0.9), None);
        assert_eq!(
            strip_annotations("Hello *coughs* there [noise]"),
            "Hello there"
        );
    }

    #[test]
    fn loops_collapse_but_doubles_stay() {
        assert_eq!(
            collapse_repeats("I'm sorry. I'm sorry. I'm sorry. I'm sorry. Goodbye."),
            "I'm sorry. Goodbye."
        );
        assert_eq!(collapse_repeats("no, no, it's fine"), "no, no, it's fine");
        assert_eq!(
            collapse_repeats("call me back call me back call me back please"),
            "call me back please"
        );
        assert_eq!(collapse_repeats("a b c d"), "a b c d");
    }

    #[test]
    fn short_repetitions_people_say_are_kept() {
        for said in [
            "5 5",
            "five five",
            "No, no.",
            "No, no, no.",
            "no no no no",
            "seven seven zero zero zero, nine zero zero",
            "0, 0, 0, 0",
            "Okay, okay.",
            "bye bye",
        ] {
            assert_eq!(collapse_repeats(said), said);
        }
        // Through the whole guard too: "No, no, no." used to come out "no.".
        assert_eq!(
            heard(" No, no, no.", 0.05, 0.9).as_deref(),
            Some("No, no, no.")
        );
        assert_eq!(heard(" 5 5", 0.05, 0.9).as_deref(), Some("5 5"));
    }

    #[test]
    fn a_word_loop_keeps_the_repetition_that_started_it() {
        // What whisper made of "five, five" (1.3 s) before decoding was
        // bounded: the loop collapsed to one copy and a word was lost.
        let looped = vec!["5,"; 110].join(" ");
        assert_eq!(collapse_repeats(&looped), "5, 5,");
        // The same loop cut by the token bound (24 tokens for 1.3 s).
        assert_eq!(
            collapse_repeats("5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5, 5,"),
            "5, 5,"
        );
        assert_eq!(collapse_repeats(&vec!["No"; 24].join(" ")), "No No");
        assert_eq!(
            heard(&vec!["No"; 24].join(" "), 0.05, 0.9).as_deref(),
            Some("No No")
        );
        // Five in a row is a loop; a loop inside a sentence keeps its ends.
        assert_eq!(collapse_repeats("no no no no no"), "no no");
        assert_eq!(
            collapse_repeats("My number is 07 7, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3"),
            "My number is 07 7, 0, 0, 1, 2, 3"
        );
    }

    #[test]
    fn phrase_loops_collapse_to_one_copy() {
        let looped = vec!["Thank you."; 40].join(" ");
        assert_eq!(collapse_repeats(&looped), "Thank you.");
        assert_eq!(
            collapse_repeats("please call me please call me please call me back"),
            "please call me back"
        );
        // Said twice, a phrase stays.
        assert_eq!(
            collapse_repeats("call me back, call me back"),
            "call me back, call me back"
        );
    }

    #[test]
    fn no_speech_drops_everything() {
        assert_eq!(heard("My boiler is leaking.", 0.95, 0.9), None);
    }

    #[test]
    fn implausibly_long_text_for_the_audio_is_dropped() {
        let long = (0..60)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        assert_eq!(heard(&long, 0.1, 0.9), None);
    }
}
