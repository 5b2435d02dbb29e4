//! Reading callers' words: yes or no, a phone number said digit by digit
//! ("oh seven seven double oh..."), a name; and writing numbers back the
//! way a person reads them out. Plain text rules over whisper's output,
//! which writes digits as numerals most of the time and words sometimes.

/// What a short answer to a yes/no question means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Yes,
    No,
    Unclear,
}

fn tokens(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric() && c != '\'')
        .filter(|t| !t.is_empty())
        .map(|t| t.trim_matches('\'').to_string())
        .collect()
}

/// Yes or no, from an answer to a yes/no question. "No" wins a tie ("yes,
/// no, it's wrong"): a wrong number confirmed is worse than asking again.
pub fn yes_no(text: &str) -> Answer {
    let t = tokens(text);
    let joined = format!(" {} ", t.join(" "));
    const NO: [&str; 9] = [
        " no ",
        " nope ",
        " nah ",
        " wrong ",
        " incorrect ",
        " not right ",
        " not quite ",
        " that's not ",
        " isn't ",
    ];
    const YES: [&str; 12] = [
        " yes ",
        " yeah ",
        " yep ",
        " yup ",
        " correct ",
        " right ",
        " that's it ",
        " sure ",
        " ok ",
        " okay ",
        " perfect ",
        " spot on ",
    ];
    if NO.iter().any(|w| joined.contains(w)) {
        Answer::No
    } else if YES.iter().any(|w| joined.contains(w)) {
        Answer::Yes
    } else {
        Answer::Unclear
    }
}

fn digit_word(w: &str) -> Option<char> {
    Some(match w {
        "zero" | "oh" | "o" | "nought" => '0',
        "one" => '1',
        "two" | "to" | "too" => '2',
        "three" => '3',
        "four" | "for" => '4',
        "five" => '5',
        "six" => '6',
        "seven" => '7',
        "eight" => '8',
        "nine" => '9',
        _ => return None,
    })
}

/// The digits of a number said or typed in `text`: numerals ("07700
/// 900123"), words ("oh seven seven"), "double"/"triple", a leading
/// "plus" ("plus four four"). Other words between digits are ignored only
/// when they are fillers ("um", "uh", "it's"), so a number is not glued
/// from two far-apart ones. Returns "" when there are no digits.
pub fn spoken_digits(text: &str) -> String {
    let mut out = String::new();
    let mut repeat = 1;
    for t in tokens(text) {
        if t.chars().all(|c| c.is_ascii_digit()) {
            for _ in 0..repeat {
                out.push_str(&t[..1]);
            }
            out.push_str(&t[1..]);
            repeat = 1;
            continue;
        }
        match t.as_str() {
            "double" => {
                repeat = 2;
                continue;
            }
            "triple" => {
                repeat = 3;
                continue;
            }
            "plus" if out.is_empty() => {
                out.push('+');
                continue;
            }
            _ => {}
        }
        if let Some(d) = digit_word(&t) {
            // "to"/"for" count only once a number has begun.
            if (t == "to" || t == "too" || t == "for") && out.is_empty() {
                continue;
            }
            for _ in 0..repeat {
                out.push(d);
            }
        }
        repeat = 1;
    }
    out
}

/// Digits read out as words in groups, the way a number is read back on
/// the phone: "zero seven seven zero zero, nine zero zero, one two three"
/// ("zero", not "oh": over a phone line "nine oh oh one" was heard as
/// "9101" by whisper, and can be by a person). Eleven
/// digits (a UK number) go 5-3-3; others in threes with the last four
/// together.
pub fn read_back(digits: &str) -> String {
    let d: Vec<char> = digits.chars().filter(|c| c.is_ascii_digit()).collect();
    let groups: Vec<&[char]> = if d.len() == 11 {
        vec![&d[..5], &d[5..8], &d[8..]]
    } else {
        let mut g = Vec::new();
        let mut rest = &d[..];
        while rest.len() > 4 {
            g.push(&rest[..3]);
            rest = &rest[3..];
        }
        if !rest.is_empty() {
            g.push(rest);
        }
        g
    };
    let word = |c: &char| match c {
        '0' => "zero",
        '1' => "one",
        '2' => "two",
        '3' => "three",
        '4' => "four",
        '5' => "five",
        '6' => "six",
        '7' => "seven",
        '8' => "eight",
        _ => "nine",
    };
    groups
        .iter()
        .map(|g| g.iter().map(word).collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A name from an answer to "who am I speaking to?": "It's John Smith",
/// "my name is Priya", "John". None if it does not look like a name (too
/// long, or it has digits).
pub fn name_from(text: &str) -> Option<String> {
    let lower = text.to_lowercase();
    let mut rest = text.trim();
    for lead in [
        "my name is ",
        "my name's ",
        "the name is ",
        "name's ",
        "it's ",
        "it is ",
        "this is ",
        "i'm ",
        "i am ",
        "yeah it's ",
        "yes it's ",
    ] {
        if lower.trim_start().starts_with(lead) {
            rest = rest[lead.len()..].trim();
            break;
        }
    }
    let words: Vec<&str> = rest
        .split(|c: char| c.is_whitespace() || ",.!?".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty()
        || words.len() > 4
        || words.iter().any(|w| w.chars().any(|c| c.is_ascii_digit()))
    {
        return None;
    }
    Some(
        words
            .iter()
            .map(|w| {
                let mut c = w.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join(" "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yes_and_no() {
        for y in [
            "Yes.",
            "yeah that's right",
            "Yep",
            "correct",
            "That's it, thanks",
        ] {
            assert_eq!(yes_no(y), Answer::Yes, "{y}");
        }
        for n in [
            "No.",
            "no, it's oh seven seven",
            "that's not right",
            "Nope",
            "wrong",
        ] {
            assert_eq!(yes_no(n), Answer::No, "{n}");
        }
        for u in ["hmm", "what?", ""] {
            assert_eq!(yes_no(u), Answer::Unclear, "{u}");
        }
        // Not both: no wins.
        assert_eq!(yes_no("yes, no, hang on"), Answer::No);
        // "know" and "yesterday" are not answers.
        assert_eq!(yes_no("I know yesterday"), Answer::Unclear);
    }

    #[test]
    fn numbers_said_every_way() {
        for (said, want) in [
            ("07700 900123", "07700900123"),
            ("It's 07700 900 123.", "07700900123"),
            (
                "oh seven seven oh oh nine oh oh one two three",
                "07700900123",
            ),
            (
                "oh seven seven double oh, nine double oh, one two three",
                "07700900123",
            ),
            ("zero one one three triple four", "0113444"),
            ("plus four four seven seven oh oh", "+447700"),
            ("Double 7", "77"),
            ("I want to come for two", "2"),
            ("no number", ""),
        ] {
            assert_eq!(spoken_digits(said), want, "{said}");
        }
    }

    #[test]
    fn read_back_groups_like_a_person() {
        assert_eq!(
            read_back("07700900123"),
            "zero seven seven zero zero, nine zero zero, one two three"
        );
        assert_eq!(read_back("+4420"), "four four two zero");
        assert_eq!(read_back("1234567"), "one two three, four five six seven");
        // The words come back as the same digits.
        assert_eq!(spoken_digits(&read_back("01632960001")), "01632960001");
    }

    #[test]
    fn names() {
        assert_eq!(name_from("It's John Smith.").as_deref(), Some("John Smith"));
        assert_eq!(name_from("my name is priya").as_deref(), Some("Priya"));
        assert_eq!(name_from("Dave").as_deref(), Some("Dave"));
        assert_eq!(name_from("I need someone to look at my boiler today"), None);
        assert_eq!(name_from("07700 900123"), None);
        assert_eq!(name_from(""), None);
    }
}
