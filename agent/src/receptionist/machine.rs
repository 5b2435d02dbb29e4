//! The conversation as a state machine: inputs in, actions out, time
//! passed in, no sockets, no audio. See the module's doc for its shape.

use super::ReceptionistConfig;
use super::words::{self, Answer};
use crate::routing::{self, Decision, Facts, Plan, Step, Tried, Understood};
use handlet_models::entities::Entities;
use std::collections::VecDeque;
use std::sync::Arc;

/// The time, twice: a monotonic clock for the machine's own timers (a
/// wall-clock step must not fire a silence timeout) and the wall clock for
/// routing by opening hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct At {
    pub mono_ms: u64,
    pub wall_ms: i64,
}

/// One final utterance of the caller, with what it means.
#[derive(Debug, Clone, PartialEq)]
pub struct Heard {
    pub text: String,
    /// The intent and how sure; None when it was not classified.
    pub intent: Option<Understood>,
    pub entities: Entities,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The caller started speaking (voice activity): the box stops talking.
    SpeechStarted,
    Heard(Box<Heard>),
    Key(char),
    /// What the box was saying has been played out (or was stopped).
    SaidDone,
}

/// Something to say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Speech {
    pub text: String,
    /// Whether the caller may talk over it (the recording notice and the
    /// last words before a transfer or goodbye play out).
    pub interruptible: bool,
}

/// A message taken for the business.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Message {
    pub name: Option<String>,
    /// Digits (maybe with a leading +), as the caller confirmed them.
    pub number: Option<String>,
    /// Whether the caller confirmed `number` when it was read back.
    pub number_confirmed: bool,
    pub about: Option<String>,
    pub address: Option<String>,
    pub intent: Option<String>,
    /// False when the caller went quiet or hung up before the end.
    pub complete: bool,
}

impl Message {
    fn has_content(&self) -> bool {
        self.name.is_some() || self.number.is_some() || self.about.is_some()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Start saying this (the previous speech is over).
    Say(Speech),
    /// Stop talking now: the caller is speaking.
    StopSpeaking,
    /// A routing decision, for the call's timeline.
    Decided(Decision),
    /// Ring what the step says; the receptionist waits. If nobody
    /// answers, the call tells it with [`Receptionist::nobody_answered`].
    Connect(Step),
    Voicemail {
        mailbox: String,
    },
    /// A message to keep (and a follow-up to make of it).
    Message(Message),
    Hangup,
}

/// What the box asked, so it knows what an answer means.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Question {
    /// "How can I help you today?"
    Opening,
    /// The one clarifying question.
    Clarify,
    Name,
    Number,
    /// "I have ... is that right?"
    ConfirmNumber(String),
    About,
    Address,
}

/// What happens once the speech queue has been said.
#[derive(Debug, Clone, PartialEq)]
enum After {
    Listen(Question),
    Connect(Step),
    Voicemail(String),
    Hangup,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    /// Saying `queue`, then `after`.
    Speaking,
    Listening(Question),
    /// The call is ringing someone (or has been handed on).
    Away,
    Done,
}

#[derive(Clone)]
pub struct Receptionist {
    cfg: Arc<ReceptionistConfig>,
    plan: Arc<Plan>,
    facts: Facts,
    /// The caller's own number (national digits), offered as the callback.
    caller_id: Option<String>,
    recording: bool,
    state: State,
    queue: VecDeque<Speech>,
    /// Being said now.
    speaking: Option<Speech>,
    after: Option<After>,
    actions: VecDeque<Action>,
    deadline: Option<u64>,
    turns: u32,
    silences: u32,
    clarified: bool,
    /// Failed attempts at the question being asked.
    retries: u32,
    /// Keys typed while a number is asked for (ended by #).
    typed: String,
    message: Message,
    /// A message is being taken (once started, the conversation is that).
    taking: bool,
    /// Words the caller said while the box could not be interrupted: the
    /// answer to the question the box is leading to.
    pending: Option<Heard>,
    /// A menu key pressed while the box could not be interrupted: acted on
    /// once what cannot be cut has been said.
    pending_key: Option<char>,
    /// Sentences the box will probably say soon, for the voice to render
    /// ahead ([`Receptionist::poll_prepare`]).
    prepare: VecDeque<String>,
    /// This is a copy run ahead to see what a "yes" would bring: it
    /// prepares nothing itself.
    probing: bool,
}

/// The receptionist's own sentences that never change (the config's are
/// [`super::ReceptionistConfig::fixed_sentences`]): rendered ahead.
pub const FIXED: &[&str] = &[
    READ_BACK_LEAD,
    "Are you still there?",
    "I'll let you go now. Goodbye.",
    "Thank you, I have what I need. Goodbye.",
    "Sorry, I didn't catch your name. What is it?",
    "Sorry, I didn't get that. Could you say the number again, digit by digit?",
    "Sorry about that. Please say the number again, digit by digit.",
    "Sorry, that number looks too short. Please say it, or type it and press hash.",
    "I'm sorry, nobody could take your call just now.",
    "I'll put you through to voicemail.",
    "I'm sorry, we can't help with this call. Goodbye.",
    "I'll take a message and we'll call you back.",
    "Can I take your name, please?",
    "What's the best number to call you back on?",
    "And what is it about?",
    "What's the address, with the postcode?",
];

/// Said before a number is read back (see `read_back`).
const READ_BACK_LEAD: &str = "Let me read that back.";

/// Digits a callback number has at least (national, without the +).
const MIN_NUMBER: usize = 10;
const MAX_NUMBER: usize = 15;

impl Receptionist {
    /// Answer the call: greet (with the recording notice when `recording`)
    /// and ask how to help.
    pub fn new(
        cfg: Arc<ReceptionistConfig>,
        plan: Arc<Plan>,
        facts: Facts,
        caller_id: Option<String>,
        recording: bool,
        at: At,
    ) -> Receptionist {
        let mut r = Receptionist::greet(cfg, plan, facts, caller_id, recording);
        let ask = r.cfg.ask.clone();
        r.say(&ask, true);
        r.then(After::Listen(Question::Opening), at);
        r
    }

    /// Answer the call to take a message (the plan said "message"): greet,
    /// then ask for what a message needs.
    pub fn for_message(
        cfg: Arc<ReceptionistConfig>,
        plan: Arc<Plan>,
        facts: Facts,
        caller_id: Option<String>,
        recording: bool,
        at: At,
    ) -> Receptionist {
        let mut r = Receptionist::greet(cfg, plan, facts, caller_id, recording);
        r.start_message(at);
        r
    }

    /// The greeting and the recording notice, queued.
    fn greet(
        cfg: Arc<ReceptionistConfig>,
        plan: Arc<Plan>,
        facts: Facts,
        caller_id: Option<String>,
        recording: bool,
    ) -> Receptionist {
        let mut r = Receptionist::silent(cfg, plan, facts, caller_id, recording);
        r.state = State::Speaking;
        let greeting = r.cfg.greeting_text();
        r.say(&greeting, true);
        if r.recording && !r.cfg.notice.trim().is_empty() {
            let notice = r.cfg.notice.clone();
            r.say(&notice, false);
        }
        r.facts.greeted = true;
        r
    }

    /// One that says nothing and is done (the call goes straight to
    /// voicemail: the mailbox's greeting is all the caller hears).
    pub fn silent(
        cfg: Arc<ReceptionistConfig>,
        plan: Arc<Plan>,
        facts: Facts,
        caller_id: Option<String>,
        recording: bool,
    ) -> Receptionist {
        Receptionist {
            cfg,
            plan,
            facts,
            caller_id,
            recording,
            state: State::Done,
            queue: VecDeque::new(),
            speaking: None,
            after: None,
            actions: VecDeque::new(),
            deadline: None,
            turns: 0,
            silences: 0,
            clarified: false,
            retries: 0,
            typed: String::new(),
            message: Message::default(),
            taking: false,
            pending: None,
            pending_key: None,
            prepare: VecDeque::new(),
            probing: false,
        }
    }

    /// Start taking a message at once (the plan said "message").
    pub fn take_message(&mut self, at: At) {
        self.start_message(at);
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<u64> {
        self.deadline
    }

    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The routing plan it decides with.
    pub fn plan(&self) -> &Arc<Plan> {
        &self.plan
    }

    /// What the conversation has learnt (for the summary and the timeline).
    pub fn facts(&self) -> &Facts {
        &self.facts
    }

    pub fn handle(&mut self, input: Input, at: At) {
        match input {
            Input::SpeechStarted => self.barge_in(at),
            Input::SaidDone => self.said_done(at),
            Input::Heard(h) => self.heard(*h, at),
            Input::Key(k) => self.key(k, at),
        }
    }

    pub fn handle_timeout(&mut self, at: At) {
        if self.deadline.is_none_or(|d| at.mono_ms < d) {
            return;
        }
        self.deadline = None;
        let State::Listening(q) = self.state.clone() else {
            return;
        };
        self.silences += 1;
        if self.silences == 1 {
            self.say("Are you still there?", true);
            self.then(After::Listen(q), at);
        } else {
            self.wrap_up("I'll let you go now. Goodbye.", at);
        }
    }

    /// Ringing what a `Connect` said ended with nobody taking the call:
    /// ask the plan again (usually: take a message).
    pub fn nobody_answered(&mut self, tried: Tried, at: At) {
        if self.state != State::Away {
            return;
        }
        self.facts.tried.push(tried);
        self.decide(at);
    }

    /// The caller hung up: keep whatever message was half taken.
    pub fn caller_gone(&mut self) {
        if self.state == State::Done {
            return;
        }
        self.state = State::Done;
        self.deadline = None;
        if self.taking && self.message.has_content() {
            self.message.complete = false;
            self.actions
                .push_back(Action::Message(self.message.clone()));
        }
    }

    // --- speaking -------------------------------------------------------

    fn say(&mut self, text: &str, interruptible: bool) {
        self.queue.push_back(Speech {
            text: text.to_string(),
            interruptible,
        });
    }

    /// Say what is queued, then do `after`.
    fn then(&mut self, after: After, at: At) {
        self.after = Some(after);
        self.deadline = None;
        if self.speaking.is_none() {
            self.next_speech(at);
        }
    }

    fn next_speech(&mut self, at: At) {
        match self.queue.pop_front() {
            Some(s) => {
                self.state = State::Speaking;
                self.speaking = Some(s.clone());
                self.actions.push_back(Action::Say(s));
                if !self.probing {
                    // What follows is known now: render it while this plays.
                    self.prepare
                        .extend(self.queue.iter().map(|q| q.text.clone()));
                    if self.queue.is_empty()
                        && matches!(self.after, Some(After::Listen(Question::ConfirmNumber(_))))
                    {
                        self.prepare_for_yes(at);
                    }
                }
            }
            None => {
                self.speaking = None;
                match self.after.take() {
                    Some(After::Listen(q)) => {
                        self.listen(q, at);
                        if let Some(h) = self.pending.take() {
                            self.heard(h, at);
                        }
                    }
                    Some(After::Connect(step)) => {
                        self.state = State::Away;
                        self.actions.push_back(Action::Connect(step));
                    }
                    Some(After::Voicemail(mailbox)) => {
                        self.state = State::Done;
                        self.actions.push_back(Action::Voicemail { mailbox });
                    }
                    Some(After::Hangup) | None => {
                        self.state = State::Done;
                        self.actions.push_back(Action::Hangup);
                    }
                }
            }
        }
    }

    /// The reply to "yes" to the number just read back (most callers say
    /// it) is known before they say it: the rest of the message, or the
    /// goodbye that reads the number once more. Found by running a copy of
    /// this machine on a "yes", so it is exactly what would be said.
    fn prepare_for_yes(&mut self, at: At) {
        let mut probe = self.clone();
        probe.probing = true;
        probe.actions.clear();
        while probe.speaking.is_some() {
            probe.said_done(at);
        }
        probe.heard(
            Heard {
                text: "yes".into(),
                intent: None,
                entities: Default::default(),
            },
            at,
        );
        for a in probe.actions {
            if let Action::Say(s) = a {
                self.prepare.push_back(s.text);
            }
        }
    }

    /// A sentence to render ahead: it may be said soon, or never.
    pub fn poll_prepare(&mut self) -> Option<String> {
        self.prepare.pop_front()
    }

    fn said_done(&mut self, at: At) {
        if self.speaking.is_some() {
            self.speaking = None;
            let cuttable = self.queue.iter().all(|q| q.interruptible);
            let asking = matches!(
                self.after,
                Some(After::Listen(Question::Opening | Question::Clarify))
            );
            // A key pressed over words that could not be cut is acted on
            // once they are said; it says more plainly than words what the
            // caller wants, so it wins over words said meanwhile.
            if self.pending_key.is_some() && cuttable {
                let k = self.pending_key.take().unwrap_or_default();
                if asking {
                    self.pending = None;
                    self.queue.clear();
                    self.after = None;
                    return self.menu_key(k, at);
                }
            }
            // The caller answered the opening question over words that
            // could not be cut: once those are said, act on the answer
            // rather than ask the question they have already answered (and
            // leave no window in which talking over that question loses
            // the answer). Other questions (a message's name) are still
            // asked: what was said before them is not their answer.
            if self.pending.is_some()
                && cuttable
                && asking
                && let Some(After::Listen(q)) = self.after.take()
            {
                let h = self.pending.take().expect("checked");
                self.queue.clear();
                self.listen(q, at);
                return self.heard(h, at);
            }
            self.next_speech(at);
        }
    }

    fn listen(&mut self, q: Question, at: At) {
        self.state = State::Listening(q);
        self.deadline = Some(at.mono_ms + self.cfg.silence_secs * 1000);
    }

    /// The caller talks over the box: stop, and listen for the answer to
    /// the question the speech was leading to.
    fn barge_in(&mut self, at: At) {
        if self.state != State::Speaking {
            // Already listening: the silence clock waits for the words.
            if matches!(self.state, State::Listening(_)) {
                self.deadline = None;
            }
            return;
        }
        let Some(s) = &self.speaking else { return };
        let listening_next = matches!(self.after, Some(After::Listen(_)));
        // Only when every queued speech may be cut and a question follows.
        if !s.interruptible || !listening_next || self.queue.iter().any(|q| !q.interruptible) {
            return;
        }
        self.queue.clear();
        self.speaking = None;
        self.actions.push_back(Action::StopSpeaking);
        if let Some(After::Listen(q)) = self.after.take() {
            self.state = State::Listening(q);
            self.deadline = None;
            // Words said over what could not be cut answer the opening
            // question (said_done acts on them first, so this is a guard);
            // before any other question they are not its answer, and the
            // caller is saying it now.
            if let Some(h) = self.pending.take()
                && matches!(
                    self.state,
                    State::Listening(Question::Opening | Question::Clarify)
                )
            {
                self.heard(h, at);
            }
        }
    }

    // --- listening ------------------------------------------------------

    fn heard(&mut self, h: Heard, at: At) {
        let q = match self.state.clone() {
            State::Listening(q) => q,
            // Said over words that could not be cut: answered once they end.
            State::Speaking if matches!(self.after, Some(After::Listen(_))) => {
                // A noise (no words) is no answer, and the first words said
                // are what the call is about: neither replaces them.
                if self.pending.is_none() && !h.text.trim().is_empty() {
                    self.pending = Some(h);
                }
                return;
            }
            // Ringing someone, or over.
            _ => return,
        };
        if h.text.trim().is_empty() {
            self.listen(q, at);
            return;
        }
        self.silences = 0;
        self.turns += 1;
        if self.turns > self.cfg.max_turns {
            self.wrap_up("Thank you, I have what I need. Goodbye.", at);
            return;
        }
        match q {
            Question::Opening | Question::Clarify => self.understood(q, h, at),
            Question::Name => {
                let name = words::name_from(&h.text).or(h.entities.name.clone());
                match name {
                    Some(n) => {
                        self.message.name = Some(n);
                        self.retries = 0;
                        self.next_missing(at);
                    }
                    None => self.retry(
                        "Sorry, I didn't catch your name. What is it?",
                        Question::Name,
                        at,
                    ),
                }
            }
            Question::Number => {
                let digits = number_in(&h);
                match digits {
                    Some(d) => self.read_back(d, at),
                    None => self.retry(
                        "Sorry, I didn't get that. Could you say the number again, digit by digit?",
                        Question::Number,
                        at,
                    ),
                }
            }
            Question::ConfirmNumber(d) => match words::yes_no(&h.text) {
                Answer::Yes => {
                    self.message.number = Some(d);
                    self.message.number_confirmed = true;
                    self.retries = 0;
                    self.next_missing(at);
                }
                Answer::No => match number_in(&h) {
                    // "No, it's 07700 900124": the correction in one go.
                    Some(n) if n != d => self.read_back(n, at),
                    _ => {
                        self.retries += 1;
                        self.say(
                            "Sorry about that. Please say the number again, digit by digit.",
                            true,
                        );
                        self.then(After::Listen(Question::Number), at);
                    }
                },
                Answer::Unclear => {
                    let text = format!("I have {}. Is that right?", words::read_back(&d));
                    self.retry(&text, Question::ConfirmNumber(d), at);
                }
            },
            Question::About => {
                self.message.about = Some(h.text.trim().to_string());
                self.next_missing(at);
            }
            Question::Address => {
                let a = h
                    .entities
                    .address
                    .clone()
                    .map(|a| match &h.entities.postcode {
                        Some(p) => format!("{a}, {p}"),
                        None => a,
                    })
                    .unwrap_or_else(|| h.text.trim().to_string());
                self.message.address = Some(a);
                self.next_missing(at);
            }
        }
    }

    /// Ask again, a bounded number of times; then go on without it.
    fn retry(&mut self, text: &str, q: Question, at: At) {
        self.retries += 1;
        if self.retries > 2 {
            self.retries = 0;
            // Skip what cannot be got; a message without it still helps.
            match q {
                Question::Name => self.message.name = Some(String::new()),
                Question::Number | Question::ConfirmNumber(_) => {
                    self.message.number = Some(String::new())
                }
                _ => {}
            }
            self.next_missing(at);
            return;
        }
        self.say(text, true);
        self.then(After::Listen(q), at);
    }

    fn understood(&mut self, q: Question, h: Heard, at: At) {
        // What the caller says first is what the call is about.
        if self.message.about.is_none() {
            self.message.about = Some(h.text.trim().to_string());
        }
        self.prefill(&h.entities);
        let sure = h
            .intent
            .as_ref()
            .filter(|u| u.intent != handlet_models::intent::UNKNOWN)
            .filter(|u| u.confidence >= self.cfg.unsure_below)
            .cloned();
        if sure.is_none() && q == Question::Opening && !self.clarified {
            self.clarified = true;
            // The clarifying answer is the better "about".
            self.message.about = None;
            let clarify = self.cfg.clarify.clone();
            self.say(&clarify, true);
            if !self.cfg.menu.trim().is_empty() {
                let menu = self.cfg.menu.clone();
                self.say(&menu, true);
            }
            self.then(After::Listen(Question::Clarify), at);
            return;
        }
        self.facts.understood = Some(sure.unwrap_or_else(|| Understood {
            intent: handlet_models::intent::UNKNOWN.into(),
            confidence: h.intent.as_ref().map_or(0.0, |u| u.confidence),
        }));
        self.message.intent = self.facts.understood.as_ref().map(|u| u.intent.clone());
        self.facts.heard_after = self.facts.tried.len();
        self.decide(at);
    }

    fn key(&mut self, k: char, at: At) {
        match self.state.clone() {
            State::Listening(Question::Opening | Question::Clarify) | State::Speaking
                if !self.taking && self.plan.keys.contains_key(&k) =>
            {
                if self.state == State::Speaking {
                    let cuttable = self.speaking.as_ref().is_none_or(|s| s.interruptible)
                        && self.queue.iter().all(|q| q.interruptible);
                    if !cuttable {
                        // The recording notice must be heard: the key acts
                        // as soon as it has been.
                        self.pending_key = Some(k);
                        return;
                    }
                    // A key is a barge-in too.
                    self.queue.clear();
                    self.speaking = None;
                    self.after = None;
                    self.actions.push_back(Action::StopSpeaking);
                }
                self.menu_key(k, at);
            }
            State::Listening(Question::Number) => {
                if k == '#' {
                    let typed = std::mem::take(&mut self.typed);
                    if (MIN_NUMBER..=MAX_NUMBER).contains(&typed.len()) {
                        self.read_back(typed, at);
                    } else {
                        self.retry(
                            "Sorry, that number looks too short. Please say it, or type it and press hash.",
                            Question::Number,
                            at,
                        );
                    }
                } else if k.is_ascii_digit() && self.typed.len() < MAX_NUMBER {
                    self.typed.push(k);
                    self.deadline = Some(at.mono_ms + self.cfg.silence_secs * 1000);
                }
            }
            _ => {}
        }
    }

    /// A menu key chosen: the plan decides with it.
    fn menu_key(&mut self, k: char, at: At) {
        self.facts.keys.push(k);
        self.facts.heard_after = self.facts.tried.len();
        self.message.intent = self.plan.keys.get(&k).cloned();
        self.decide(at);
    }

    // --- acting ---------------------------------------------------------

    fn decide(&mut self, at: At) {
        let d = routing::decide(&self.facts, &self.plan, at.wall_ms);
        self.actions.push_back(Action::Decided(d.clone()));
        let nobody = !self.facts.tried.is_empty();
        match d.step {
            Step::Ring(_) | Step::Transfer { .. } => {
                let connecting = self.cfg.connecting.clone();
                self.say(&connecting, false);
                self.then(After::Connect(d.step), at);
            }
            Step::TakeMessage | Step::Receptionist => {
                if nobody {
                    self.say("I'm sorry, nobody could take your call just now.", true);
                }
                self.start_message(at);
            }
            Step::Voicemail { mailbox } => {
                self.say("I'll put you through to voicemail.", false);
                self.then(After::Voicemail(mailbox), at);
            }
            Step::Reject => {
                self.say("I'm sorry, we can't help with this call. Goodbye.", false);
                self.then(After::Hangup, at);
            }
        }
    }

    fn start_message(&mut self, at: At) {
        if !self.taking {
            self.taking = true;
            self.say("I'll take a message and we'll call you back.", true);
        }
        self.next_missing(at);
    }

    fn prefill(&mut self, e: &Entities) {
        if self.message.name.is_none() {
            self.message.name = e.name.clone();
        }
        if self.message.address.is_none() {
            self.message.address = match (&e.address, &e.postcode) {
                (Some(a), Some(p)) => Some(format!("{a}, {p}")),
                (Some(a), None) => Some(a.clone()),
                (None, Some(p)) => Some(p.clone()),
                (None, None) => None,
            };
        }
    }

    /// Ask for the next thing the message lacks, or finish it.
    fn next_missing(&mut self, at: At) {
        self.retries = 0;
        if self.message.name.is_none() {
            self.say("Can I take your name, please?", true);
            return self.then(After::Listen(Question::Name), at);
        }
        if self.message.number.is_none() {
            if let Some(own) = self.caller_id.take() {
                let text = format!(
                    "Is the number you're calling from, {}, the best one to call you back on?",
                    words::read_back(&own)
                );
                self.say(&text, true);
                return self.then(After::Listen(Question::ConfirmNumber(own)), at);
            }
            self.say("What's the best number to call you back on?", true);
            return self.then(After::Listen(Question::Number), at);
        }
        if self.message.about.is_none() {
            self.say("And what is it about?", true);
            return self.then(After::Listen(Question::About), at);
        }
        let needs_address = self
            .message
            .intent
            .as_ref()
            .is_some_and(|i| self.cfg.address_for.contains(i));
        if needs_address && self.message.address.is_none() {
            self.say("What's the address, with the postcode?", true);
            return self.then(After::Listen(Question::Address), at);
        }
        self.finish(at);
    }

    fn read_back(&mut self, digits: String, at: At) {
        // The digits are new each time, so their sentence is synthesised
        // during the call; the fixed lead plays at once from the cache and
        // the digits are rendered while it does, so the caller hears the
        // box answer without waiting for the voice.
        self.say(READ_BACK_LEAD, true);
        let text = format!("I have {}. Is that right?", words::read_back(&digits));
        self.say(&text, true);
        self.then(After::Listen(Question::ConfirmNumber(digits)), at);
    }

    fn finish(&mut self, at: At) {
        self.message.complete = true;
        let name = self.message.name.clone().filter(|n| !n.is_empty());
        let thanks = match name {
            Some(n) => format!("Thank you, {n}."),
            None => "Thank you.".into(),
        };
        let back = match self.message.number.as_deref().filter(|n| !n.is_empty()) {
            Some(n) => format!(
                "We'll call you back on {} as soon as we can. Goodbye.",
                words::read_back(n)
            ),
            None => "We'll get back to you as soon as we can. Goodbye.".into(),
        };
        self.actions
            .push_back(Action::Message(self.message.clone()));
        self.taking = false;
        self.say(&format!("{thanks} {back}"), false);
        self.then(After::Hangup, at);
    }

    /// End now, keeping a message if one was under way.
    fn wrap_up(&mut self, goodbye: &str, at: At) {
        if self.taking && self.message.has_content() {
            self.message.complete = false;
            self.actions
                .push_back(Action::Message(self.message.clone()));
            self.taking = false;
        }
        self.queue.clear();
        self.say(goodbye, false);
        self.then(After::Hangup, at);
    }
}

/// A callback number in what the caller said: the entity extractor's, or
/// the digits said one by one.
fn number_in(h: &Heard) -> Option<String> {
    let said = words::spoken_digits(&h.text);
    let digits = h.entities.phone.clone().unwrap_or(said);
    let n = digits.trim_start_matches('+').len();
    (MIN_NUMBER..=MAX_NUMBER).contains(&n).then_some(digits)
}

#[cfg(test)]
mod tests;
