//! Live decisions: the flow records a gateway appends to its flow-log directory, read as they
//! arrive (a tail that follows segment rotation) and sent as Server-Sent Events. The records are
//! the gateway's own (`palisade-flowlog`): the server observes them, it decides nothing. With a
//! PostgreSQL store, the records the gateways write there instead (each with its instance).

use crate::store::Store;
use palisade_flowlog::{FlowRecord, Query};
use palisade_pgstore::FlowPage;
use serde_json::Value;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Where a tail is: a segment number and the byte offset of the first unread byte.
pub struct Tail {
    dir: PathBuf,
    at: Option<(u64, u64)>,
    /// Bytes of a line whose end has not been written yet.
    partial: Vec<u8>,
}

impl Tail {
    /// A tail starting at the current end of the log: only records appended from now on.
    pub fn from_end(dir: &Path) -> io::Result<Tail> {
        let at = match palisade_flowlog::segments(dir)?.last() {
            Some((n, path)) => Some((*n, std::fs::metadata(path)?.len())),
            None => None,
        };
        Ok(Tail {
            dir: dir.to_path_buf(),
            at,
            partial: vec![],
        })
    }

    /// The records completed since the last call, oldest first. A line that does not parse (a
    /// torn tail the gateway will cut) is skipped.
    pub fn poll(&mut self) -> io::Result<Vec<FlowRecord>> {
        let mut out = vec![];
        let segments = palisade_flowlog::segments(&self.dir)?;
        // The current segment and every newer one, in order.
        let from = self.at.map(|(n, _)| n).unwrap_or(0);
        for (n, path) in segments.into_iter().filter(|(n, _)| *n >= from) {
            let offset = match self.at {
                Some((cur, off)) if cur == n => off,
                _ => {
                    self.partial.clear();
                    0
                }
            };
            let mut file = File::open(&path)?;
            let len = file.metadata()?.len();
            // Shorter than where we were: the gateway cut a torn tail on restart.
            let offset = if len < offset {
                self.partial.clear();
                len
            } else {
                offset
            };
            file.seek(SeekFrom::Start(offset))?;
            let mut bytes = vec![];
            file.take(len - offset).read_to_end(&mut bytes)?;
            self.at = Some((n, len));
            self.partial.extend_from_slice(&bytes);
            if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
                let complete: Vec<u8> = self.partial.drain(..=end).collect();
                out.extend(
                    complete
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .filter_map(|l| serde_json::from_slice::<FlowRecord>(l).ok()),
                );
            }
        }
        Ok(out)
    }
}

/// Where flow records come from: a gateway's flow-log directory, or the PostgreSQL store the
/// gateways write to (`--flow-log-store`), where each record carries its gateway `instance`.
#[derive(Clone)]
pub enum Source {
    Dir(PathBuf),
    Store(Arc<dyn Store>),
}

/// A record as the API shows it: the gateway's record, and its instance when the store says.
fn shown(r: &FlowRecord, instance: Option<&str>) -> Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let (Some(i), Some(o)) = (instance, v.as_object_mut()) {
        o.insert("instance".into(), Value::String(i.to_string()));
    }
    v
}

/// Records written at most this long before an older one: gateways' clocks and batches.
const SKEW: Duration = Duration::from_secs(60);

impl Source {
    /// The newest `wanted` records matching `query` (and `instance`), newest first. Blocking.
    pub fn query(
        &self,
        query: &Query,
        instance: Option<&str>,
        wanted: usize,
    ) -> Result<Vec<Value>, String> {
        match self {
            Source::Dir(dir) => {
                let q = Query {
                    limit: Some(wanted),
                    ..query.clone()
                };
                let (records, _torn) = palisade_flowlog::query(dir, &q)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                Ok(records.iter().map(|r| shown(r, None)).collect())
            }
            Source::Store(store) => {
                let mut out = vec![];
                let mut cursor = None;
                loop {
                    let batch = store
                        .flows(instance, FlowPage::Before(cursor), 1000)
                        .ok_or("the store holds no flow records")?
                        .map_err(|e| e.to_string())?;
                    let Some(last) = batch.last() else {
                        return Ok(out);
                    };
                    cursor = Some(last.id);
                    let mut newest_in_batch = None;
                    for f in &batch {
                        // A row that is not a record (written by something else) is passed over.
                        let Ok(r) = serde_json::from_str::<FlowRecord>(&f.row.record) else {
                            continue;
                        };
                        newest_in_batch = newest_in_batch.max(r.timestamp());
                        if query.matches(&r) {
                            out.push(shown(&r, Some(&f.row.instance)));
                            if out.len() >= wanted {
                                return Ok(out);
                            }
                        }
                    }
                    // Rows go in newest last: once a whole batch is older than `since`
                    // (with room for skew), older batches are too.
                    if let (Some(since), Some(newest)) = (query.since, newest_in_batch) {
                        if newest + SKEW < since {
                            return Ok(out);
                        }
                    }
                }
            }
        }
    }

    /// A follower from the current end: only records written from now on.
    pub fn follow(&self, instance: Option<String>) -> Result<Follower, String> {
        Ok(match self {
            Source::Dir(dir) => {
                Follower::Dir(Tail::from_end(dir).map_err(|e| format!("{}: {e}", dir.display()))?)
            }
            Source::Store(store) => Follower::Store {
                after: store
                    .last_flow()
                    .ok_or("the store holds no flow records")?
                    .map_err(|e| e.to_string())?,
                store: store.clone(),
                instance,
            },
        })
    }
}

/// Follows a [`Source`]: each poll gives the records written since the last, oldest first.
pub enum Follower {
    Dir(Tail),
    Store {
        store: Arc<dyn Store>,
        instance: Option<String>,
        after: i64,
    },
}

impl Follower {
    /// Blocking.
    pub fn poll(&mut self) -> Result<Vec<(FlowRecord, Value)>, String> {
        match self {
            Follower::Dir(t) => Ok(t
                .poll()
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|r| {
                    let v = shown(&r, None);
                    (r, v)
                })
                .collect()),
            Follower::Store {
                store,
                instance,
                after,
            } => {
                let rows = store
                    .flows(instance.as_deref(), FlowPage::After(*after), 1000)
                    .ok_or("the store holds no flow records")?
                    .map_err(|e| e.to_string())?;
                if let Some(last) = rows.last() {
                    *after = last.id;
                }
                Ok(rows
                    .into_iter()
                    .filter_map(|f| {
                        let r = serde_json::from_str::<FlowRecord>(&f.row.record).ok()?;
                        let v = shown(&r, Some(&f.row.instance));
                        Some((r, v))
                    })
                    .collect())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_flowlog::{FlowLog, Options};

    fn record(i: u16) -> FlowRecord {
        FlowRecord {
            time: "2026-01-01T00:00:00Z".into(),
            action: "Allow".into(),
            destination_port: i,
            ..Default::default()
        }
    }

    /// The records a poll of `tail` yields, by their destination port (the records' number).
    fn polled(tail: &mut Tail) -> Vec<u16> {
        tail.poll()
            .unwrap()
            .iter()
            .map(|r| r.destination_port)
            .collect()
    }

    #[test]
    fn a_tail_sees_only_what_is_appended_after_it_started_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            max_segment_bytes: 400,
            ..Options::default()
        };
        let log = FlowLog::open(dir.path(), options.clone()).unwrap();
        log.append(&record(1)).unwrap();
        let mut tail = Tail::from_end(dir.path()).unwrap();
        assert!(tail.poll().unwrap().is_empty());
        for i in 2..30 {
            log.append(&record(i)).unwrap();
            if i % 7 == 0 {
                let got = polled(&mut tail);
                assert_eq!(got.last(), Some(&i));
            }
        }
        assert!(
            palisade_flowlog::segments(dir.path()).unwrap().len() > 2,
            "no rotation"
        );
        let mut fresh = Tail::from_end(dir.path()).unwrap();
        log.append(&record(99)).unwrap();
        let got = polled(&mut fresh);
        assert_eq!(got, [99]);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// However the gateway's writes split the lines, and whenever the tail looks, it yields
        /// every record once, in order.
        #[test]
        fn every_record_once_in_order_whatever_the_write_boundaries(
            ports in proptest::collection::vec(0u16..65535, 0..12),
            cuts in proptest::collection::vec(0usize..4000, 0..10),
        ) {
            use std::io::Write;
            let dir = tempfile::tempdir().unwrap();
            let mut tail = Tail::from_end(dir.path()).unwrap();
            let text: String = ports
                .iter()
                .map(|p| serde_json::to_string(&record(*p)).unwrap() + "\n")
                .collect();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (text.len() + 1)).collect();
            cuts.push(text.len());
            cuts.sort();
            let mut file = std::fs::File::create(dir.path().join("flows-00000001.jsonl")).unwrap();
            let (mut at, mut got) = (0, vec![]);
            for c in cuts {
                file.write_all(&text.as_bytes()[at..c]).unwrap();
                at = c;
                got.extend(polled(&mut tail));
            }
            proptest::prop_assert_eq!(got, ports);
        }
    }

    #[test]
    fn a_half_written_line_waits_for_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let mut tail = Tail::from_end(dir.path()).unwrap();
        let line = serde_json::to_string(&record(7)).unwrap();
        let path = dir.path().join("flows-00000001.jsonl");
        std::fs::write(&path, &line[..10]).unwrap();
        assert!(tail.poll().unwrap().is_empty());
        std::fs::write(&path, format!("{line}\n")).unwrap();
        let got = polled(&mut tail);
        assert_eq!(got, [7]);
    }
}
