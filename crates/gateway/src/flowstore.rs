//! Flow records copied to PostgreSQL (`--flow-log-store`), with the gateway's instance, so the
//! records of every gateway sharing a policy are in one table. Off the hot path: a decision
//! only offers its record to a bounded queue (never waits); a writer task inserts batches. While
//! the database is away the queue holds what fits and every record that does not is counted as
//! dropped — the local flow log still has it.

use crate::metrics::Metrics;
use crate::{log, Gateway};
use palisade_flowlog::FlowRecordRef;
use palisade_pgstore::{Config, FlowRow};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Records waiting for the database, at most.
pub const QUEUE: usize = 10_000;
/// Records per insert, at most.
const BATCH: usize = 500;
/// How long a batch waits to fill.
const LINGER: Duration = Duration::from_millis(100);
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

pub struct FlowStore {
    queue: mpsc::Sender<FlowRow>,
}

impl FlowStore {
    /// The queue ([`QUEUE`] records), and the writer to spawn.
    pub fn new(config: Config) -> (FlowStore, Writer) {
        FlowStore::with_queue(config, QUEUE)
    }

    pub fn with_queue(config: Config, records: usize) -> (FlowStore, Writer) {
        let (tx, rx) = mpsc::channel(records);
        (FlowStore { queue: tx }, Writer { config, rx })
    }

    /// Queue a record; never waits. A record that does not fit is counted and dropped.
    pub fn offer(&self, r: &FlowRecordRef<'_>, metrics: &Metrics) {
        let row = match serde_json::to_string(r) {
            Ok(record) => FlowRow {
                instance: r.instance.to_string(),
                time: r.time.to_string(),
                record,
            },
            Err(_) => {
                metrics.flow_store_dropped.inc();
                return;
            }
        };
        match self.queue.try_send(row) {
            Ok(()) => {
                metrics.flow_store_queued.inc();
            }
            Err(_) => {
                metrics.flow_store_dropped.inc();
            }
        }
    }
}

pub struct Writer {
    config: Config,
    rx: mpsc::Receiver<FlowRow>,
}

impl Writer {
    pub async fn run(mut self, gw: Arc<Gateway>) {
        let at = palisade_pgstore::describe(&self.config);
        let m = &gw.metrics;
        let mut client: Option<palisade_pgstore::Client> = None;
        let mut batch: Vec<FlowRow> = Vec::with_capacity(BATCH);
        let mut backoff = BACKOFF.0;
        let mut reported_down = false;
        loop {
            if batch.is_empty() {
                match self.rx.recv().await {
                    Some(r) => batch.push(r),
                    None => return,
                }
                let deadline = tokio::time::Instant::now() + LINGER;
                while batch.len() < BATCH {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(Some(r)) => batch.push(r),
                        _ => break,
                    }
                }
            }
            let result = async {
                if client.as_ref().is_none_or(|c| c.is_closed()) {
                    client = Some(palisade_pgstore::connect(&self.config).await?.0);
                }
                let c = client.as_ref().expect("connected above");
                palisade_pgstore::insert_flows(c, &batch).await
            }
            .await;
            match result {
                Ok(n) => {
                    m.flow_store_written.inc_by(n);
                    m.flow_store_queued.dec_by(batch.len() as i64);
                    m.flow_store_up.set(1);
                    batch.clear();
                    backoff = BACKOFF.0;
                    if reported_down {
                        log(format!("flow store {at} reachable again"));
                        reported_down = false;
                    }
                }
                Err(e) => {
                    m.flow_store_up.set(0);
                    client = None;
                    if !reported_down {
                        log(format!(
                            "flow store {at} unreachable ({e}); holding at most {QUEUE} records, dropping the rest (the local flow log keeps them)"
                        ));
                        reported_down = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF.1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_flowlog::FlowRecord;

    /// A full queue drops and counts instead of waiting: the decision path never blocks on the
    /// database.
    #[test]
    fn a_full_queue_drops_and_counts() {
        let config = palisade_pgstore::config("test", "postgres://x@127.0.0.1:1/x").unwrap();
        let (store, _writer) = FlowStore::with_queue(config, 2);
        let m = Metrics::new();
        let r = FlowRecord {
            instance: "gw".into(),
            time: "t".into(),
            ..Default::default()
        };
        for _ in 0..5 {
            store.offer(&r.borrowed(), &m);
        }
        assert_eq!(m.flow_store_queued.get(), 2);
        assert_eq!(m.flow_store_dropped.get(), 3);
    }
}
