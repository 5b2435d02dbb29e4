//! The receptionist: the conversation the box has with a caller the
//! routing plan sends to it. Sans-IO with time passed in, like the call
//! core: the call feeds it what the caller said (final text with its
//! intent and entities), when the caller starts speaking (for barge-in),
//! keys pressed and when the box finished saying something; it answers with
//! things to say, when to stop talking, and where the call goes next (ring
//! someone, voicemail, a message taken, hang up).
//!
//! The shape of a call: greeting (and the recording notice) → listen →
//! understand → act: route per the plan and say so; when unsure, ask one
//! clarifying question, then fall back to the plan's `unknown` route;
//! take a message by asking for what is missing (name, a callback number
//! read back digit by digit and confirmed, what it is about, an address
//! where the business needs one), confirm and say goodbye. Silence gets
//! "are you still there?", then a polite end. The number of turns is
//! bounded.

mod machine;
mod words;

pub use machine::{Action, At, FIXED, Heard, Input, Message, Receptionist, Speech};
pub use words::{Answer, name_from, read_back, spoken_digits, yes_no};

use serde::{Deserialize, Serialize};

/// The receptionist's settings as they stand: the file's, or a pushed
/// document's (`down/config`); each call takes them when it starts.
#[derive(Debug)]
pub struct LiveConfig(std::sync::RwLock<std::sync::Arc<ReceptionistConfig>>);

impl LiveConfig {
    pub fn new(c: ReceptionistConfig) -> LiveConfig {
        LiveConfig(std::sync::RwLock::new(std::sync::Arc::new(c)))
    }

    pub fn current(&self) -> std::sync::Arc<ReceptionistConfig> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set(&self, c: ReceptionistConfig) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = std::sync::Arc::new(c);
    }
}

/// `[receptionist]`: what the box says and how patient it is.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceptionistConfig {
    /// `converse`: the box talks with the caller; `listen`: it answers in
    /// silence and only transcribes (and records) what the caller says.
    pub mode: Mode,
    /// The business's name, as the greeting says it.
    pub business: String,
    /// `{business}` is replaced by the name.
    pub greeting: String,
    /// Said after the greeting when calls are recorded.
    pub notice: String,
    pub ask: String,
    /// The one clarifying question, when the box is unsure what the
    /// caller wants.
    pub clarify: String,
    /// Said after the clarifying question: the keys a caller may press
    /// instead (`[routing.keys]`), e.g. "Or press 1 for an emergency."
    pub menu: String,
    /// Said before ringing someone.
    pub connecting: String,
    /// Below this confidence the box asks again rather than act.
    pub unsure_below: f32,
    /// Caller utterances at most; then the box wraps up with what it has.
    pub max_turns: u32,
    /// Silence this long gets "are you still there?"; twice, goodbye.
    pub silence_secs: u64,
    /// Intents for which a message needs an address.
    pub address_for: Vec<String>,
}

/// What the box does with a call it answers itself.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Converse,
    Listen,
}

impl Default for ReceptionistConfig {
    fn default() -> Self {
        ReceptionistConfig {
            mode: Mode::Converse,
            business: "us".into(),
            greeting: "Thank you for calling {business}.".into(),
            notice: "This call is recorded.".into(),
            ask: "How can I help you today?".into(),
            clarify: "Sorry, could you tell me in a few words what you're calling about?".into(),
            menu: String::new(),
            connecting: "Thank you. I'll put you through to the team now.".into(),
            unsure_below: 0.4,
            max_turns: 12,
            silence_secs: 7,
            address_for: vec!["emergency".into(), "booking".into(), "quote".into()],
        }
    }
}

impl ReceptionistConfig {
    /// Check the section, naming the field.
    pub fn check(&self, intents: &[&str]) -> Result<(), String> {
        if !(0.0..=1.0).contains(&self.unsure_below) {
            return Err(format!(
                "receptionist.unsure_below must be between 0 and 1, got {}",
                self.unsure_below
            ));
        }
        if !(2..=50).contains(&self.max_turns) {
            return Err(format!(
                "receptionist.max_turns must be 2..=50, got {}",
                self.max_turns
            ));
        }
        if !(2..=60).contains(&self.silence_secs) {
            return Err(format!(
                "receptionist.silence_secs must be 2..=60, got {}",
                self.silence_secs
            ));
        }
        for (field, text) in [
            ("business", &self.business),
            ("greeting", &self.greeting),
            ("notice", &self.notice),
            ("ask", &self.ask),
            ("clarify", &self.clarify),
            ("menu", &self.menu),
            ("connecting", &self.connecting),
        ] {
            if text.chars().count() > 300 {
                return Err(format!(
                    "receptionist.{field} is longer than 300 characters"
                ));
            }
        }
        for (field, text) in [
            ("greeting", &self.greeting),
            ("ask", &self.ask),
            ("clarify", &self.clarify),
        ] {
            if text.trim().is_empty() {
                return Err(format!("receptionist.{field} must say something"));
            }
        }
        // The default names built-in intents, and applies to those a
        // replaced intent set still has; a list someone wrote is checked.
        let written = self.address_for != ReceptionistConfig::default().address_for;
        for i in self.address_for.iter().filter(|_| written) {
            if !intents.contains(&i.as_str()) {
                return Err(format!(
                    "receptionist.address_for: {i:?} is not an intent the receptionist knows"
                ));
            }
        }
        Ok(())
    }

    /// Every sentence the receptionist may say that does not change from
    /// call to call: rendered once, when the config loads.
    pub fn fixed_sentences(&self) -> Vec<String> {
        let mut v = vec![
            self.greeting_text(),
            self.notice.clone(),
            self.ask.clone(),
            self.clarify.clone(),
            self.menu.clone(),
            self.connecting.clone(),
        ];
        v.extend(FIXED.iter().map(|s| s.to_string()));
        v.retain(|s| !s.trim().is_empty());
        v.dedup();
        v
    }

    /// The greeting with the business's name in it.
    pub fn greeting_text(&self) -> String {
        self.greeting.replace("{business}", &self.business)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mistakes_name_the_field() {
        let intents = ["emergency", "quote", "booking"];
        ReceptionistConfig::default().check(&intents).unwrap();
        let bad = |f: fn(&mut ReceptionistConfig)| {
            let mut c = ReceptionistConfig::default();
            f(&mut c);
            c.check(&intents).unwrap_err()
        };
        assert!(bad(|c| c.unsure_below = 1.5).contains("receptionist.unsure_below"));
        assert!(bad(|c| c.max_turns = 1).contains("receptionist.max_turns"));
        assert!(bad(|c| c.silence_secs = 0).contains("receptionist.silence_secs"));
        assert!(bad(|c| c.ask = " ".into()).contains("receptionist.ask must say something"));
        assert!(bad(|c| c.greeting = "x".repeat(301)).contains("receptionist.greeting is longer"));
        assert!(
            bad(|c| c.address_for = vec!["emergancy".into()])
                .contains("receptionist.address_for: \"emergancy\"")
        );
        // The default list is fine with a replaced intent set.
        ReceptionistConfig::default().check(&["walk_in"]).unwrap();
        let c = ReceptionistConfig {
            business: "Smith and Sons".into(),
            ..Default::default()
        };
        assert_eq!(c.greeting_text(), "Thank you for calling Smith and Sons.");
    }
}
