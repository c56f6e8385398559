//! The policy from a shared PostgreSQL store (`--policy-store`): load the newest version at
//! start, LISTEN for commits and reload on each, reconnect with backoff when the database goes
//! away — meanwhile the last good snapshot keeps deciding, and `/metrics` and `/healthz` say
//! the store is down.
//!
//! The subscription only fetches documents; compiling and swapping is [`Gateway::reload`]'s, the
//! same road (and the same refusal of a version in error, PAL-5.5) as a file reload.

use crate::{log, Gateway, ReloadOutcome};
use palisade_pgstore::Config;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often an idle subscription checks that the database still answers.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Reconnect attempts back off from the first to the last.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// A fetched version: its number and document (the server's resource list, ARM JSON).
#[derive(Debug, Clone)]
pub struct Document {
    pub version: i64,
    pub text: Arc<str>,
}

/// What the gateway knows of the store; read by reloads, metrics and health.
pub struct Subscription {
    pub config: Config,
    /// The newest version fetched; what a reload compiles.
    document: Mutex<Option<Document>>,
    /// The version whose snapshot is in force (0: none).
    enforced: AtomicI64,
    up: AtomicBool,
    last_contact: Mutex<Option<Instant>>,
}

impl Subscription {
    pub fn new(config: Config) -> Subscription {
        Subscription {
            config,
            document: Mutex::new(None),
            enforced: AtomicI64::new(0),
            up: AtomicBool::new(false),
            last_contact: Mutex::new(None),
        }
    }

    pub fn document(&self) -> Option<Document> {
        self.document
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn fetched(&self) -> i64 {
        self.document().map_or(0, |d| d.version)
    }

    pub fn enforced(&self) -> i64 {
        self.enforced.load(Ordering::Relaxed)
    }

    pub(crate) fn set_enforced(&self, v: i64) {
        self.enforced.store(v, Ordering::Relaxed);
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    /// Seconds since the database last answered; `None` before it ever did.
    pub fn since_contact(&self) -> Option<f64> {
        self.last_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed().as_secs_f64())
    }

    fn contact(&self) {
        *self.last_contact.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.up.store(true, Ordering::Relaxed);
    }
}

/// Connect, LISTEN, fetch and apply the newest version, then follow notifications until the
/// connection fails; then reconnect with backoff, forever.
pub async fn follow(gw: Arc<Gateway>, sub: Arc<Subscription>) {
    let at = palisade_pgstore::describe(&sub.config);
    let mut backoff = BACKOFF.0;
    let mut reported_down = false;
    loop {
        let started = Instant::now();
        let why = session(&gw, &sub, &mut reported_down).await;
        sub.up.store(false, Ordering::Relaxed);
        gw.metrics.policy_store_up.set(0);
        if !reported_down {
            let keeping = match (gw.active(), sub.enforced()) {
                (Some(a), v) if v > 0 => {
                    format!("enforcing version {v} (policy {}) meanwhile", a.id())
                }
                _ => "no policy in force: failing closed".to_string(),
            };
            log(format!("policy store {at} unreachable ({why}); {keeping}"));
            reported_down = true;
        }
        if started.elapsed() > BACKOFF.1 {
            backoff = BACKOFF.0;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
        gw.metrics.policy_store_reconnects.inc();
    }
}

async fn session(gw: &Arc<Gateway>, sub: &Subscription, reported_down: &mut bool) -> String {
    let (client, mut notes) = match palisade_pgstore::connect(&sub.config).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    // LISTEN before fetching: a commit in between is then both fetched and notified.
    if let Err(e) = palisade_pgstore::listen(&client).await {
        return e.to_string();
    }
    sub.contact();
    gw.metrics.policy_store_up.set(1);
    if *reported_down {
        log(format!(
            "policy store {} reachable again",
            palisade_pgstore::describe(&sub.config)
        ));
        *reported_down = false;
    }
    let mut wanted = i64::MAX; // fetch the newest at once
    loop {
        if wanted > sub.fetched() {
            match palisade_pgstore::version(&client, None).await {
                Ok(Some(row)) if row.version > sub.fetched() => {
                    sub.contact();
                    let v = row.version;
                    *sub.document.lock().unwrap_or_else(|p| p.into_inner()) = Some(Document {
                        version: v,
                        text: row.document.into(),
                    });
                    apply(gw, sub, v).await;
                }
                Ok(_) => sub.contact(),
                Err(e) => return e.to_string(),
            }
        }
        tokio::select! {
            note = notes.recv() => match note {
                Some(payload) => {
                    // Commits close together arrive as several notifications: take them all,
                    // then fetch the newest once.
                    wanted = payload.parse().unwrap_or(i64::MAX);
                    while let Ok(p) = notes.try_recv() {
                        wanted = wanted.max(p.parse().unwrap_or(i64::MAX));
                    }
                }
                None => return "connection closed".into(),
            },
            _ = tokio::time::sleep(HEARTBEAT) => {
                match tokio::time::timeout(HEARTBEAT * 3, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => sub.contact(),
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return "no answer to the heartbeat".into(),
                }
                wanted = 0;
            }
        }
    }
}

async fn apply(gw: &Arc<Gateway>, sub: &Subscription, v: i64) {
    match gw.reload(&format!("store version {v}")).await {
        ReloadOutcome::Applied { .. } => {}
        ReloadOutcome::Refused { .. } => log(format!(
            "store version {v} refused; still enforcing version {}",
            sub.enforced()
        )),
    }
}
