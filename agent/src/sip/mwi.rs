//! Message waiting (RFC 3842): a desk phone subscribes to
//! `message-summary` and is told at once, and again on every change, how
//! many voicemails are new and how many heard, so its lamp lights.
//!
//! Every extension is told about every mailbox: a small business shares
//! its voicemail, and whoever is at a desk calls back. The counts come
//! from the store, read every [`POLL`] while any phone subscribes: a
//! voicemail is marked heard by `handlet voicemail`, another process.
//!
//! What is kept per subscription is bounded: only an extension that
//! authenticates may subscribe, each keeps at most
//! [`PER_EXTENSION`] subscriptions (a phone that reboots subscribes again
//! under a new Call-ID; its oldest is dropped), and each ends at its
//! expiry unless refreshed.

use super::registrar::Registrar;
use rsipstack::dialog::DialogId;
use rsipstack::dialog::dialog::{DialogState, DialogStateReceiver, DialogStateSender};
use rsipstack::dialog::dialog_layer::DialogLayer;
use rsipstack::dialog::subscription::ServerSubscriptionDialog;
use rsipstack::sip::{Header, StatusCode};
use rsipstack::transaction::transaction::{Transaction, TransactionEvent};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// The event package we serve.
pub const EVENT: &str = "message-summary";
/// Shortest subscription we accept (RFC 6665 §4.2.1.1: 423 below it).
pub const MIN_EXPIRES: u32 = 60;
/// Longest, and what a SUBSCRIBE without Expires gets.
pub const MAX_EXPIRES: u32 = 3600;
/// Subscriptions one extension may hold at once.
pub const PER_EXTENSION: usize = 4;
/// How often the counts are read while anyone subscribes.
pub const POLL: Duration = Duration::from_secs(2);

/// Voicemails not yet listened to, and listened to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub new: u32,
    pub heard: u32,
}

/// The NOTIFY body for `account` (RFC 3842 §5.2).
pub fn summary(account: &str, c: Counts) -> String {
    format!(
        "Messages-Waiting: {}\r\nMessage-Account: {account}\r\nVoice-Message: {}/{} (0/0)\r\n",
        if c.new > 0 { "yes" } else { "no" },
        c.new,
        c.heard
    )
}

/// What a SUBSCRIBE's Expires asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// A subscription for this many seconds.
    For(u32),
    /// Expires: 0: the state once, then the end (a fetch, or an
    /// unsubscribe).
    Once,
    /// Shorter than [`MIN_EXPIRES`]: refused with 423.
    TooBrief,
}

/// Read the Expires header (seconds): absent means [`MAX_EXPIRES`], longer
/// is shortened to it (a notifier may shorten, never lengthen).
pub fn wanted(req: &rsipstack::sip::Request) -> Wanted {
    let asked = req
        .headers
        .iter()
        .find(|h| h.name().eq_ignore_ascii_case("Expires"))
        .map(|h| h.value().trim().parse::<u64>().unwrap_or(0));
    match asked {
        None => Wanted::For(MAX_EXPIRES),
        Some(0) => Wanted::Once,
        Some(s) if s < u64::from(MIN_EXPIRES) => Wanted::TooBrief,
        Some(s) => Wanted::For(s.min(u64::from(MAX_EXPIRES)) as u32),
    }
}

/// Is the request's Event package ours? (`Event: message-summary;id=1`;
/// the compact form is `o`.)
pub fn is_ours(req: &rsipstack::sip::Request) -> bool {
    req.headers
        .iter()
        .filter(|h| h.name().eq_ignore_ascii_case("Event") || h.name() == "o")
        .any(|h| {
            h.value()
                .split(';')
                .next()
                .is_some_and(|p| p.trim().eq_ignore_ascii_case(EVENT))
        })
}

/// One subscription: whose, until when, what it was last told.
#[derive(Debug)]
struct Sub<T> {
    id: String,
    extension: String,
    account: String,
    expires_at: Instant,
    told: Option<Counts>,
    handle: T,
}

/// The subscriptions in force: time passed in, no I/O, so the rules are
/// tested without sockets. `T` is what the caller sends NOTIFYs by.
#[derive(Debug)]
pub struct Table<T> {
    subs: Vec<Sub<T>>,
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Table { subs: Vec::new() }
    }
}

impl<T: Clone> Table<T> {
    /// Add a subscription; the ones it pushes out (the extension's oldest
    /// beyond [`PER_EXTENSION`]) are returned, to be ended.
    pub fn add(
        &mut self,
        id: String,
        extension: &str,
        account: String,
        expires_at: Instant,
        handle: T,
    ) -> Vec<T> {
        self.subs.retain(|s| s.id != id);
        let mut dropped = Vec::new();
        while self
            .subs
            .iter()
            .filter(|s| s.extension == extension)
            .count()
            >= PER_EXTENSION
        {
            let oldest = self
                .subs
                .iter()
                .position(|s| s.extension == extension)
                .expect("counted above");
            dropped.push(self.subs.remove(oldest).handle);
        }
        self.subs.push(Sub {
            id,
            extension: extension.to_string(),
            account,
            expires_at,
            told: None,
            handle,
        });
        dropped
    }

    /// A refresh: the subscription's new end. False if it is unknown.
    pub fn refresh(&mut self, id: &str, expires_at: Instant) -> bool {
        match self.subs.iter_mut().find(|s| s.id == id) {
            Some(s) => {
                s.expires_at = expires_at;
                true
            }
            None => false,
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<T> {
        let i = self.subs.iter().position(|s| s.id == id)?;
        Some(self.subs.remove(i).handle)
    }

    /// Take out the subscriptions that have ended by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let (gone, kept) = std::mem::take(&mut self.subs)
            .into_iter()
            .partition(|s| s.expires_at <= now);
        self.subs = kept;
        gone.into_iter().map(|s: Sub<T>| s.handle).collect()
    }

    /// Who must be told `now_counts`, with their account and seconds
    /// left; each is marked as told.
    pub fn to_tell(&mut self, counts: Counts, now: Instant) -> Vec<(T, String, u32)> {
        self.subs
            .iter_mut()
            .filter(|s| s.told != Some(counts))
            .map(|s| {
                s.told = Some(counts);
                (
                    s.handle.clone(),
                    s.account.clone(),
                    secs_left(s.expires_at, now),
                )
            })
            .collect()
    }

    /// `id` is being told `counts` by its caller.
    pub fn told(&mut self, id: &str, counts: Counts) {
        if let Some(s) = self.subs.iter_mut().find(|s| s.id == id) {
            s.told = Some(counts);
        }
    }

    /// Forget what `id` was told, so the next round tells it again (its
    /// NOTIFY failed on the way).
    pub fn untold(&mut self, id: &str) {
        if let Some(s) = self.subs.iter_mut().find(|s| s.id == id) {
            s.told = None;
        }
    }

    pub fn len(&self) -> usize {
        self.subs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }
}

fn secs_left(at: Instant, now: Instant) -> u32 {
    at.saturating_duration_since(now).as_secs() as u32
}

/// Reads the voicemail counts (from the store, in the agent).
pub type CountsFn = Arc<dyn Fn() -> Option<Counts> + Send + Sync>;

/// Message waiting for the box's phones: the subscriptions and where the
/// counts come from.
pub struct Mwi {
    table: Mutex<Table<ServerSubscriptionDialog>>,
    counts: CountsFn,
    states: DialogStateSender,
}

impl Mwi {
    /// The service, and the receiver of its dialogs' states for [`run`].
    pub fn new(dialogs: &DialogLayer, counts: CountsFn) -> (Arc<Mwi>, DialogStateReceiver) {
        let (states, rx) = dialogs.new_dialog_state_channel();
        let mwi = Mwi {
            table: Mutex::new(Table::default()),
            counts,
            states,
        };
        (Arc::new(mwi), rx)
    }

    async fn read_counts(&self) -> Option<Counts> {
        let f = self.counts.clone();
        tokio::task::spawn_blocking(move || f())
            .await
            .ok()
            .flatten()
    }

    /// Answer a new SUBSCRIBE from `source`: 489 for another event
    /// package, the registrar's challenge until an extension
    /// authenticates, 423 below [`MIN_EXPIRES`]; else 200 and the first
    /// NOTIFY at once.
    pub async fn subscribe(
        &self,
        mut tx: Transaction,
        source: SocketAddr,
        registrar: &Registrar,
        dialogs: &DialogLayer,
        contact: Option<rsipstack::sip::Uri>,
    ) {
        if !is_ours(&tx.original) {
            let allow = Header::Other("Allow-Events".into(), EVENT.into());
            let _ = tx.reply_with(StatusCode::BadEvent, vec![allow], None).await;
            return;
        }
        let extension = match registrar.authorize(&tx.original, source) {
            Ok(e) => e,
            Err((status, headers)) => {
                let _ = tx.reply_with(status, headers, None).await;
                return;
            }
        };
        let secs = match wanted(&tx.original) {
            Wanted::TooBrief => {
                let min = Header::Other("Min-Expires".into(), MIN_EXPIRES.to_string());
                let _ = tx
                    .reply_with(StatusCode::IntervalTooBrief, vec![min], None)
                    .await;
                return;
            }
            Wanted::Once => 0,
            Wanted::For(s) => s,
        };
        let account = tx.original.uri.to_string();
        let dialog = match dialogs.get_or_create_server_subscription(
            &tx,
            self.states.clone(),
            None,
            contact,
        ) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "cannot make a subscription dialog");
                let _ = tx.reply(StatusCode::ServerInternalError).await;
                return;
            }
        };
        let expires = Header::Expires(secs.into());
        if let Err(e) = dialog.accept(Some(vec![expires]), None) {
            tracing::debug!(error = %e, "cannot accept a subscription");
            dialogs.remove_dialog(&dialog.id());
            return;
        }
        // accept() queues the 200 on the transaction's own channel: send
        // it now, so it leaves before the first NOTIFY, then keep the
        // transaction answering retransmissions until it ends.
        while let Ok(ev) = tx.tu_receiver.try_recv() {
            if let TransactionEvent::Respond(r) = ev {
                let _ = tx.respond(r).await;
                break;
            }
        }
        tokio::spawn(async move { while tx.receive().await.is_some() {} });
        let counts = self.read_counts().await.unwrap_or_default();
        let id = dialog.id().to_string();
        if secs == 0 {
            let _ = notify(&dialog, &account, counts, None).await;
            dialogs.remove_dialog(&dialog.id());
            return;
        }
        tracing::debug!(extension = %extension, secs, "phone subscribed to message waiting");
        let dropped = {
            let Ok(mut t) = self.table.lock() else { return };
            let dropped = t.add(
                id.clone(),
                &extension,
                account.clone(),
                Instant::now() + Duration::from_secs(u64::from(secs)),
                dialog.clone(),
            );
            // Told now, below.
            t.told(&id, counts);
            dropped
        };
        for d in dropped {
            dialogs.remove_dialog(&d.id());
        }
        if !notify(&dialog, &account, counts, Some(secs)).await {
            self.forget(&dialog.id(), dialogs);
        }
    }

    /// A SUBSCRIBE within a subscription: a refresh, or Expires: 0 to end
    /// it.
    async fn resubscribe(
        &self,
        id: &DialogId,
        req: &rsipstack::sip::Request,
        handle: rsipstack::dialog::dialog::TransactionHandle,
        dialogs: &DialogLayer,
    ) {
        let key = id.to_string();
        let known = self
            .table
            .lock()
            .map(|t| t.subs.iter().any(|s| s.id == key));
        if !known.unwrap_or(false) {
            let _ = handle.reply(StatusCode::CallTransactionDoesNotExist).await;
            return;
        }
        match wanted(req) {
            Wanted::TooBrief => {
                let min = Header::Other("Min-Expires".into(), MIN_EXPIRES.to_string());
                let _ = handle
                    .respond(StatusCode::IntervalTooBrief, Some(vec![min]), None)
                    .await;
            }
            Wanted::Once => {
                let _ = handle
                    .respond(StatusCode::OK, Some(vec![Header::Expires(0.into())]), None)
                    .await;
                let gone = self.table.lock().ok().and_then(|mut t| {
                    let account = t.subs.iter().find(|s| s.id == key)?.account.clone();
                    Some((t.remove(&key)?, account))
                });
                if let Some((d, account)) = gone {
                    let counts = self.read_counts().await.unwrap_or_default();
                    let _ = notify(&d, &account, counts, None).await;
                    dialogs.remove_dialog(id);
                }
            }
            Wanted::For(secs) => {
                let _ = handle
                    .respond(
                        StatusCode::OK,
                        Some(vec![Header::Expires(secs.into())]),
                        None,
                    )
                    .await;
                if let Ok(mut t) = self.table.lock() {
                    t.refresh(&key, Instant::now() + Duration::from_secs(u64::from(secs)));
                    // RFC 6665 §4.2.1.2: a refresh is answered by a NOTIFY.
                    t.untold(&key);
                }
            }
        }
    }

    /// One round: end what expired, tell whoever's counts changed, each
    /// NOTIFY on its own task (one to a phone that has gone waits out the
    /// transaction's timeout, 32 s over UDP, and must not hold up the
    /// rest).
    async fn round(self: &Arc<Self>, dialogs: &Arc<DialogLayer>) {
        let now = Instant::now();
        let expired = match self.table.lock() {
            Ok(mut t) if !t.is_empty() => t.expire(now),
            _ => return,
        };
        for d in expired {
            dialogs.remove_dialog(&d.id());
        }
        let Some(counts) = self.read_counts().await else {
            return;
        };
        let tell = match self.table.lock() {
            Ok(mut t) => t.to_tell(counts, now),
            Err(_) => return,
        };
        for (d, account, secs) in tell {
            let (mwi, dialogs) = (self.clone(), dialogs.clone());
            tokio::spawn(async move {
                if !notify(&d, &account, counts, Some(secs.max(1))).await {
                    mwi.forget(&d.id(), &dialogs);
                }
            });
        }
    }

    /// A phone refused a NOTIFY or did not answer it (it forgot the
    /// subscription, or has gone: it subscribes again when it is back),
    /// or the dialog ended: forget it.
    fn forget(&self, id: &DialogId, dialogs: &DialogLayer) {
        if let Ok(mut t) = self.table.lock() {
            t.remove(&id.to_string());
        }
        dialogs.remove_dialog(id);
    }
}

/// Send one NOTIFY: `secs` left, or None for the last (terminated). True
/// when the phone took it.
async fn notify(
    d: &ServerSubscriptionDialog,
    account: &str,
    counts: Counts,
    secs: Option<u32>,
) -> bool {
    let state = match secs {
        Some(s) => format!("active;expires={s}"),
        None => "terminated;reason=timeout".to_string(),
    };
    let headers = vec![
        Header::Other("Event".into(), EVENT.into()),
        Header::Other("Subscription-State".into(), state),
        Header::ContentType("application/simple-message-summary".into()),
    ];
    let body = summary(account, counts).into_bytes();
    match d.notify(Some(headers), Some(body)).await {
        Ok(Some(r)) if r.status_code.kind() == rsipstack::sip::StatusCodeKind::Successful => true,
        Ok(Some(r)) => {
            tracing::debug!(status = %r.status_code, "a phone refused a message-waiting NOTIFY");
            false
        }
        Ok(None) => false,
        Err(e) => {
            tracing::debug!(error = %e, "message-waiting NOTIFY failed");
            false
        }
    }
}

/// Refreshes, ends and the polling rounds, until `cancel` fires.
pub async fn run(
    mwi: Arc<Mwi>,
    dialogs: Arc<DialogLayer>,
    mut states: DialogStateReceiver,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => mwi.round(&dialogs).await,
            state = states.recv() => match state {
                None => return,
                Some(DialogState::Updated(id, req, handle)) => {
                    mwi.resubscribe(&id, &req, handle, &dialogs).await;
                }
                Some(DialogState::Terminated(id, _)) => mwi.forget(&id, &dialogs),
                Some(DialogState::Refer(_, _, handle))
                | Some(DialogState::Notify(_, _, handle))
                | Some(DialogState::Message(_, _, handle))
                | Some(DialogState::Info(_, _, handle))
                | Some(DialogState::Options(_, _, handle))
                | Some(DialogState::Publish(_, _, handle)) => {
                    let _ = handle.reply(StatusCode::NotImplemented).await;
                }
                Some(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(headers: &str) -> rsipstack::sip::Request {
        let raw = format!(
            "SUBSCRIBE sip:201@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:201@127.0.0.1>;tag=a\r\nTo: <sip:201@127.0.0.1>\r\nCall-ID: c1\r\n\
             CSeq: 1 SUBSCRIBE\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        rsipstack::sip::Request::try_from(raw.as_str()).unwrap()
    }

    #[test]
    fn the_summary_says_whether_messages_wait_and_how_many() {
        let s = summary("sip:201@box", Counts { new: 2, heard: 5 });
        assert_eq!(
            s,
            "Messages-Waiting: yes\r\nMessage-Account: sip:201@box\r\nVoice-Message: 2/5 (0/0)\r\n"
        );
        assert!(
            summary("sip:201@box", Counts { new: 0, heard: 1 })
                .starts_with("Messages-Waiting: no\r\n")
        );
    }

    #[test]
    fn expiry_is_read_shortened_and_refused_when_too_brief() {
        assert_eq!(wanted(&req("")), Wanted::For(MAX_EXPIRES));
        assert_eq!(wanted(&req("Expires: 600\r\n")), Wanted::For(600));
        assert_eq!(wanted(&req("Expires: 86400\r\n")), Wanted::For(MAX_EXPIRES));
        assert_eq!(wanted(&req("Expires: 0\r\n")), Wanted::Once);
        assert_eq!(wanted(&req("Expires: 30\r\n")), Wanted::TooBrief);
    }

    #[test]
    fn only_the_message_summary_package_is_ours() {
        assert!(is_ours(&req("Event: message-summary\r\n")));
        assert!(is_ours(&req("Event: Message-Summary;id=7\r\n")));
        assert!(!is_ours(&req("Event: presence\r\n")));
        assert!(!is_ours(&req("")));
    }

    #[test]
    fn each_subscription_is_told_once_per_change_and_ends_at_its_expiry() {
        let t0 = Instant::now();
        let mut t: Table<u32> = Table::default();
        assert!(
            t.add(
                "d1".into(),
                "201",
                "sip:201@box".into(),
                t0 + Duration::from_secs(60),
                1
            )
            .is_empty()
        );
        t.add(
            "d2".into(),
            "202",
            "sip:202@box".into(),
            t0 + Duration::from_secs(600),
            2,
        );
        let none = Counts::default();
        let one = Counts { new: 1, heard: 0 };
        let told = t.to_tell(none, t0);
        assert_eq!(told.len(), 2);
        assert_eq!(told[0], (1, "sip:201@box".to_string(), 60));
        assert!(t.to_tell(none, t0).is_empty(), "nothing changed");
        assert_eq!(
            t.to_tell(one, t0).len(),
            2,
            "a new voicemail is told to all"
        );
        t.untold("d2");
        assert_eq!(
            t.to_tell(one, t0).iter().map(|x| x.0).collect::<Vec<_>>(),
            [2]
        );
        t.told("d1", none);
        assert_eq!(
            t.to_tell(one, t0).iter().map(|x| x.0).collect::<Vec<_>>(),
            [1]
        );
        assert!(t.refresh("d1", t0 + Duration::from_secs(900)));
        assert!(!t.refresh("nope", t0));
        assert_eq!(t.expire(t0 + Duration::from_secs(600)), [2]);
        assert_eq!(t.len(), 1);
        assert_eq!(t.remove("d1"), Some(1));
        assert!(t.is_empty());
    }

    #[test]
    fn an_extension_keeps_a_bounded_number_of_subscriptions() {
        let t0 = Instant::now();
        let mut t: Table<usize> = Table::default();
        let mut dropped = Vec::new();
        for i in 0..PER_EXTENSION + 2 {
            dropped.extend(t.add(format!("d{i}"), "201", "a".into(), t0, i));
        }
        assert_eq!(dropped, [0, 1], "the oldest go");
        assert_eq!(t.len(), PER_EXTENSION);
        t.add("other".into(), "202", "b".into(), t0, 99);
        assert_eq!(t.len(), PER_EXTENSION + 1, "another extension has its own");
        // The same dialog again replaces itself.
        assert!(t.add("d5".into(), "201", "a".into(), t0, 5).is_empty());
        assert_eq!(t.len(), PER_EXTENSION + 1);
    }
}
