//! Several servers on one PostgreSQL store (`--store postgres://`): each follows the versions
//! the others commit — LISTEN/NOTIFY as the gateways do, a heartbeat poll as a fallback — and
//! swaps them in, so a change made through any server is answered by all within a second.
//! A change catches up with the store first, so it is made on the newest version.

use crate::policy;
use crate::AppState;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

const HEARTBEAT: Duration = Duration::from_secs(1);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Follow the store until the server stops; reconnect with backoff when the database is away
/// (meanwhile the running version keeps answering).
pub async fn follow(app: Arc<AppState>, config: palisade_pgstore::Config) {
    let at = palisade_pgstore::describe(&config);
    let mut backoff = BACKOFF.0;
    let mut reported = false;
    loop {
        let why = session(&app, &config, &mut reported).await;
        if !reported {
            eprintln!(
                "store {at}: not following other servers' changes ({why}); serving version {} meanwhile",
                app.running.load().version
            );
            reported = true;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF.1);
    }
}

async fn session(
    app: &Arc<AppState>,
    config: &palisade_pgstore::Config,
    reported: &mut bool,
) -> String {
    let (client, mut notes) = match palisade_pgstore::connect(config).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    // LISTEN before catching up: a commit in between is then both read and notified.
    if let Err(e) = palisade_pgstore::listen(&client).await {
        return e.to_string();
    }
    if *reported {
        eprintln!(
            "store {}: following other servers' changes again",
            palisade_pgstore::describe(config)
        );
        *reported = false;
    }
    loop {
        {
            let _writer = app.writer.lock().await;
            catch_up(app).await;
        }
        tokio::select! {
            note = notes.recv() => match note {
                // Commits close together arrive as several notifications: one catch-up reads the newest.
                Some(_) => while notes.try_recv().is_ok() {},
                None => return "connection closed".into(),
            },
            _ = tokio::time::sleep(HEARTBEAT) => {
                match tokio::time::timeout(HEARTBEAT * 3, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return e.to_string(),
                    Err(_) => return "no answer to the heartbeat".into(),
                }
            }
        }
    }
}

/// Swap in the store's newest version when it is newer than the running one. The caller holds
/// the writer lock. A version that does not compile here (other catalogs) is reported and
/// passed over: the running one keeps answering (PAL-5.5).
pub async fn catch_up(app: &Arc<AppState>) {
    if !app.store.shared() {
        return;
    }
    let store = app.store.clone();
    let latest = match crate::api::blocking(move || store.latest()).await {
        Ok(Some(v)) => v,
        Ok(None) => return,
        Err(p) => {
            eprintln!("store: cannot read the newest version: {}", p.detail);
            return;
        }
    };
    let running = app.running.load().version;
    let n = latest.meta.version;
    app.head.fetch_max(n, Ordering::SeqCst);
    if n <= running {
        return;
    }
    let base = app.base.clone();
    let compiled =
        tokio::task::spawn_blocking(move || policy::compile(&base, n, latest.resources)).await;
    match compiled {
        Ok(Ok(next)) => app.running.store(Arc::new(next)),
        Ok(Err(d)) => eprintln!(
            "store: version {n} does not compile here ({} error(s), first: {}); still serving version {running}",
            d.errors().count(),
            d.errors().next().map(|e| e.to_string()).unwrap_or_default()
        ),
        Err(e) => eprintln!("store: version {n}: {e}"),
    }
}
