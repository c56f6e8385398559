//! # palisade-flowlog
//!
//! Flow records: one per firewall decision, appended durably and queried newest first.
//!
//! ## Storage
//! A data directory holds JSON Lines segments `flows-00000001.jsonl`, `flows-00000002.jsonl`, …;
//! the highest number is the one being written. A segment is closed when it passes
//! [`Options::max_segment_bytes`] and the oldest are deleted beyond [`Options::max_segments`].
//!
//! Why JSON Lines: appends are one `write` of whole lines, a crash can only tear the last line
//! (which was never acknowledged, see below, and is cut off on the next open), every tool
//! (`jq`, `grep`, log shippers) reads it, and there is no C dependency or build cost. Queries
//! scan, which is fine for the deny-log question while a lockdown is tuned; a columnar export
//! can come later.
//!
//! ## Durability
//! What an acknowledged record survives depends on [`Options::sync`]:
//!
//! - [`SyncMode::Always`] (the default): [`FlowLog::append`] returns only after the record's
//!   bytes were written **and** `fdatasync`ed (and, for a new segment, the directory entry
//!   too). A record whose `append` returned survives `kill -9` of the writer **and** power
//!   loss or a kernel crash.
//! - [`SyncMode::Interval`]: `append` returns once the bytes were `write`n to the segment (the
//!   kernel's page cache), and the log `fdatasync`s at most once per interval: when a batch is
//!   written after the interval ran out, when a [`Writer`] has been idle that long, when a
//!   segment is closed, and on [`FlowLog::sync`] / a [`Writer`]'s end. An acknowledged record
//!   survives `kill -9` (or any crash) of the writer process, since the kernel still holds
//!   its bytes; power loss or a kernel crash can lose the records of the last interval. A
//!   torn last line is cut off on the next open either way.
//!
//! Concurrent appenders share one write (group commit): the first waiting caller flushes
//! everything queued, the others wait for it. [`Writer`] gives callers that must not block the
//! same promise from a dedicated thread: a record is acknowledged (its `Done` called) only
//! after its batch's write (and, in `Always` mode, its `fdatasync`).

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// One decision of the gateway (FW-12 fields with Palisade's names).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlowRecord {
    /// When the decision was made, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The gateway instance that decided (scale-out: several instances, one log each).
    pub instance: String,
    /// Id of the compiled snapshot that decided (PAL-5.5).
    pub snapshot: String,
    /// `explicit` (HTTP proxy / CONNECT), `transparent`, or `reload` (re-judged on reload).
    pub mode: String,
    /// `TCP`, `UDP`, `HTTP`, `HTTPS`.
    pub protocol: String,
    pub source_ip: Option<IpAddr>,
    pub source_port: u16,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    /// SNI, Host or CONNECT name, when there is one.
    pub name: Option<String>,
    /// Inside a `CONNECT` tunnel: the TLS SNI (or HTTP `Host`) the client sent through it, when
    /// it was read; `name` is then the CONNECT name. Absent otherwise (and in older records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_name: Option<String>,
    /// `Allow` or `Deny` (`Dnat` for DNAT decisions, `Audit` for an NSG audit rule's kernel log).
    pub action: String,
    /// DIAG-1.2 layer: `FirewallApplication`, `FirewallNetwork`, `FirewallDnat`, `FirewallDefault`;
    /// `SubnetNsg` / `NicNsg` for the kernel denials `palisade host log` records.
    pub layer: String,
    pub policy: Option<String>,
    pub rule_collection_group: Option<String>,
    pub rule_collection: Option<String>,
    pub rule: Option<String>,
    /// The deciding collection's priority.
    pub priority: Option<u32>,
    /// When no rule decided (`rule` is null): what did — `default` (the policy's default
    /// action), `address-check` (PAL-5.2), `tunnel-check`, `request-check`, `handshake-check`,
    /// `no-policy` or `gateway`. Absent when a rule decided (and in older records).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    /// `RuleMatched`, `DefaultAction`, `SniMissing`, `SniAddressMismatch`, …
    pub reason: String,
    pub detail: Option<String>,
    /// PAL-5.3: audit-mode rules matched this flow (listed in `audit_rules`), or the default
    /// deny was observed only (`observe`). Older records wrote the rule paths here; they read
    /// as `true`.
    #[serde(
        skip_serializing_if = "std::ops::Not::not",
        deserialize_with = "audit_flag"
    )]
    pub audit: bool,
    /// PAL-5.3: each audit-mode rule that matched and was passed over, with the access it
    /// would have decided.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub audit_rules: Vec<AuditEntry>,
    /// PAL-5.4 observe: the observed scope whose default deny let this flow through (the
    /// record's `action` is then `Allow`, `audit` true, `reason` `DefaultAction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observe: Option<String>,
    /// Action `ShadowDiff`: the live and the shadow policy's verdicts for this flow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowDiff>,
    /// DNAT: the translated destination `ip:port`.
    pub translated: Option<String>,
    /// DNAT: the source address the gateway used towards the translated destination, `ip:port`
    /// (with `translated`, the flow's second tuple).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translated_source: Option<String>,
    /// Client → server payload bytes.
    pub bytes_sent: u64,
    /// Server → client payload bytes.
    pub bytes_received: u64,
    pub duration_ms: u64,
}

/// A [`FlowRecord`] borrowed from whatever holds its parts, for writers that must not copy
/// them (the gateway writes one per connection). Same fields, serde names and order: its JSON
/// line is byte for byte the owned record's. Text that is displayed rather than held (the
/// time, a detail, an address) is written straight into the line ([`Shown`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct FlowRecordRef<'a> {
    pub time: Shown<'a>,
    pub instance: &'a str,
    pub snapshot: &'a str,
    pub mode: &'a str,
    pub protocol: &'a str,
    pub source_ip: Option<IpAddr>,
    pub source_port: u16,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    pub name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tunnel_name: Option<&'a str>,
    pub action: &'a str,
    pub layer: &'a str,
    pub policy: Option<&'a str>,
    pub rule_collection_group: Option<&'a str>,
    pub rule_collection: Option<&'a str>,
    pub rule: Option<&'a str>,
    pub priority: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<&'a str>,
    pub reason: &'a str,
    pub detail: Option<Shown<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub audit: bool,
    #[serde(skip_serializing_if = "no_entries")]
    pub audit_rules: &'a [AuditEntry],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observe: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shadow: Option<&'a ShadowDiff>,
    pub translated: Option<Shown<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translated_source: Option<Shown<'a>>,
    pub bytes_sent: u64,
    pub bytes_received: u64,
    pub duration_ms: u64,
}

fn no_entries(e: &&[AuditEntry]) -> bool {
    e.is_empty()
}

/// A JSON string written as its value displays, without building the text first.
#[derive(Clone, Copy)]
pub struct Shown<'a>(pub &'a dyn std::fmt::Display);

impl Serialize for Shown<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self.0)
    }
}

impl std::fmt::Debug for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0.to_string())
    }
}

impl std::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl FlowRecord {
    /// This record as a [`FlowRecordRef`] (nothing copied).
    pub fn borrowed(&self) -> FlowRecordRef<'_> {
        FlowRecordRef {
            time: Shown(&self.time),
            instance: &self.instance,
            snapshot: &self.snapshot,
            mode: &self.mode,
            protocol: &self.protocol,
            source_ip: self.source_ip,
            source_port: self.source_port,
            destination_ip: self.destination_ip,
            destination_port: self.destination_port,
            name: self.name.as_deref(),
            tunnel_name: self.tunnel_name.as_deref(),
            action: &self.action,
            layer: &self.layer,
            policy: self.policy.as_deref(),
            rule_collection_group: self.rule_collection_group.as_deref(),
            rule_collection: self.rule_collection.as_deref(),
            rule: self.rule.as_deref(),
            priority: self.priority,
            decided_by: self.decided_by.as_deref(),
            reason: &self.reason,
            detail: self.detail.as_ref().map(|d| Shown(d)),
            audit: self.audit,
            audit_rules: &self.audit_rules,
            observe: self.observe.as_deref(),
            shadow: self.shadow.as_ref(),
            translated: self.translated.as_ref().map(|t| Shown(t)),
            translated_source: self.translated_source.as_ref().map(|t| Shown(t)),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            duration_ms: self.duration_ms,
        }
    }
}

impl FlowRecordRef<'_> {
    /// The owned record (every part copied, displayed text rendered).
    pub fn to_record(&self) -> FlowRecord {
        let text = |s: &str| s.to_string();
        FlowRecord {
            time: self.time.to_string(),
            instance: text(self.instance),
            snapshot: text(self.snapshot),
            mode: text(self.mode),
            protocol: text(self.protocol),
            source_ip: self.source_ip,
            source_port: self.source_port,
            destination_ip: self.destination_ip,
            destination_port: self.destination_port,
            name: self.name.map(text),
            tunnel_name: self.tunnel_name.map(text),
            action: text(self.action),
            layer: text(self.layer),
            policy: self.policy.map(text),
            rule_collection_group: self.rule_collection_group.map(text),
            rule_collection: self.rule_collection.map(text),
            rule: self.rule.map(text),
            priority: self.priority,
            decided_by: self.decided_by.map(text),
            reason: text(self.reason),
            detail: self.detail.map(|d| d.to_string()),
            audit: self.audit,
            audit_rules: self.audit_rules.to_vec(),
            observe: self.observe.map(text),
            shadow: self.shadow.cloned(),
            translated: self.translated.map(|t| t.to_string()),
            translated_source: self.translated_source.map(|t| t.to_string()),
            bytes_sent: self.bytes_sent,
            bytes_received: self.bytes_received,
            duration_ms: self.duration_ms,
        }
    }

    /// The deciding rule's path, else what decided without a rule, else `-`
    /// ([`FlowRecord::rule_label`]).
    pub fn rule_label(&self) -> String {
        match (self.rule, self.decided_by) {
            (Some(rule), _) => {
                let c = self.rule_collection.unwrap_or("");
                match self.rule_collection_group {
                    Some(g) => format!("{g}/{c}/{rule}"),
                    None => format!("{c}/{rule}"),
                }
            }
            (None, Some(d)) => d.to_string(),
            (None, None) => "-".into(),
        }
    }
}

/// PAL-5.3: an audit-mode rule that matched a flow and was passed over.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AuditEntry {
    /// DIAG-1.2 layer of the rule (`FirewallApplication`, `SubnetNsg`, …).
    pub layer: String,
    /// The rule's path, as `palisade trace` prints it.
    pub rule: String,
    /// What the rule would have decided: `Allow`, `Deny` or `Dnat`.
    pub access: String,
}

/// PAL-5.3 shadow policy: one flow that the live and the shadow policy decide differently.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowDiff {
    /// `Allow` or `Deny`, and the deciding rule's path (else what decided, as in `rule_label`).
    pub live_action: String,
    pub live_rule: String,
    pub shadow_action: String,
    pub shadow_rule: String,
    /// The shadow snapshot's id.
    pub shadow_snapshot: String,
}

/// `audit` as written now (a flag) or by older versions (the list of audit rule paths).
fn audit_flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Flag(bool),
        Paths(Vec<String>),
    }
    Ok(match Option::<Either>::deserialize(d)? {
        Some(Either::Flag(b)) => b,
        Some(Either::Paths(p)) => !p.is_empty(),
        None => false,
    })
}

impl FlowRecord {
    /// `time` parsed back.
    pub fn timestamp(&self) -> Option<SystemTime> {
        humantime::parse_rfc3339_weak(&self.time).ok()
    }

    /// `<rcg>/<collection>/<rule>` or `<collection>/<rule>`, as `palisade trace` prints it.
    pub fn rule_path(&self) -> Option<String> {
        let rule = self.rule.as_ref()?;
        let c = self.rule_collection.as_deref().unwrap_or("");
        Some(match &self.rule_collection_group {
            Some(g) => format!("{g}/{c}/{rule}"),
            None => format!("{c}/{rule}"),
        })
    }

    /// The deciding rule's path, else what decided without a rule (`default`, `address-check`,
    /// …; never contains `/`, so it cannot be mistaken for a path), else `-`.
    pub fn rule_label(&self) -> String {
        self.rule_path()
            .or_else(|| self.decided_by.clone())
            .unwrap_or_else(|| "-".into())
    }
}

/// RFC 3339 with milliseconds, UTC.
pub fn format_time(t: SystemTime) -> String {
    Timestamp(t).to_string()
}

/// A time displayed as [`format_time`] writes it, for a [`FlowRecordRef::time`] written
/// straight into the line.
#[derive(Debug, Clone, Copy)]
pub struct Timestamp(pub SystemTime);

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        humantime::format_rfc3339_millis(self.0).fmt(f)
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub max_segment_bytes: u64,
    pub max_segments: usize,
    /// When written records reach stable storage (see the crate's Durability section).
    pub sync: SyncMode,
    /// How long a [`Writer`]'s thread, woken for a record, waits for more before writing; and
    /// how long it waits for the next records after a batch before it sleeps until woken.
    pub batch_window: Duration,
    /// How long records nobody waits for ([`Writer::submit_ref_unawaited`]: an allowed
    /// connection's end, written after it closed) may wait for more before they are written;
    /// a record somebody waits for cuts it short. Longer than [`Options::batch_window`], so a
    /// steady flow of connections costs the writer a wake-up and a `write` per many records.
    pub unawaited_window: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_segment_bytes: 64 << 20,
            max_segments: 64,
            sync: SyncMode::Always,
            batch_window: Duration::from_millis(1),
            unawaited_window: Duration::from_millis(10),
        }
    }
}

/// When the log `fdatasync`s, and so what an acknowledged record survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Acknowledge after `fdatasync`: survives power loss.
    Always,
    /// Acknowledge after `write`; `fdatasync` at most once per this interval: survives the
    /// writer's `kill -9`, not power loss of the last interval's records.
    Interval(Duration),
}

struct Segment {
    file: File,
    number: u64,
    len: u64,
    /// Bytes written since the last `fdatasync`, and when that was.
    unsynced: bool,
    synced_at: Instant,
}

impl Segment {
    fn sync(&mut self) -> io::Result<()> {
        if self.unsynced {
            self.file.sync_data()?;
            self.unsynced = false;
            self.synced_at = Instant::now();
        }
        Ok(())
    }
}

struct State {
    queue: Vec<u8>,
    /// Tickets handed out / made durable.
    issued: u64,
    durable: u64,
    flushing: bool,
    /// Threads waiting on `done`: a flush with nobody waiting (the writer thread's, always)
    /// makes no wake-up call.
    waiting: usize,
    /// A failed write or fsync poisons the log: nothing after it is acknowledged.
    failed: Option<String>,
    segment: Option<Segment>,
}

/// An open flow log, shared by every connection of a gateway (`Send + Sync`).
pub struct FlowLog {
    dir: PathBuf,
    options: Options,
    state: Mutex<State>,
    done: Condvar,
}

fn segment_name(n: u64) -> String {
    format!("flows-{n:08}.jsonl")
}

/// The segments of a directory, oldest first.
pub fn segments(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = vec![];
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for e in entries {
        let e = e?;
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_prefix("flows-")
            .and_then(|r| r.strip_suffix(".jsonl"))
            .and_then(|n| n.parse::<u64>().ok())
        {
            out.push((n, e.path()));
        }
    }
    out.sort();
    Ok(out)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

impl FlowLog {
    /// Open (creating) the log in `dir`. A torn last line — bytes of an append that never
    /// returned — is cut off so the next record starts on a line of its own.
    pub fn open(dir: impl Into<PathBuf>, options: Options) -> io::Result<FlowLog> {
        let dir = dir.into();
        fs::create_dir_all(&dir)?;
        let segs = segments(&dir)?;
        let segment = match segs.last() {
            Some((n, path)) => {
                let mut file = OpenOptions::new().read(true).write(true).open(path)?;
                let len = file.metadata()?.len();
                let keep = complete_prefix_len(&mut file, len)?;
                if keep != len {
                    file.set_len(keep)?;
                    file.sync_all()?;
                }
                file.seek(SeekFrom::End(0))?;
                Segment {
                    file,
                    number: *n,
                    len: keep,
                    unsynced: false,
                    synced_at: Instant::now(),
                }
            }
            None => new_segment(&dir, 1)?,
        };
        Ok(FlowLog {
            dir,
            options,
            state: Mutex::new(State {
                queue: vec![],
                issued: 0,
                durable: 0,
                flushing: false,
                waiting: 0,
                failed: None,
                segment: Some(segment),
            }),
            done: Condvar::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Append one record; returns once it is durable as [`Options::sync`] promises.
    pub fn append(&self, record: &FlowRecord) -> io::Result<()> {
        self.append_all(std::slice::from_ref(record))
    }

    /// Append records; returns once all are durable as [`Options::sync`] promises.
    pub fn append_all(&self, records: &[FlowRecord]) -> io::Result<()> {
        let mut bytes = vec![];
        for r in records {
            encode(&r.borrowed(), &mut bytes)?;
        }
        self.commit(&bytes)
    }

    /// Write whole lines and return once they are durable as [`Options::sync`] promises,
    /// sharing the write and `fsync` with concurrent callers.
    fn commit(&self, bytes: &[u8]) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = &st.failed {
            return Err(io::Error::other(format!("flow log failed earlier: {e}")));
        }
        st.queue.extend_from_slice(bytes);
        st.issued += 1;
        let ticket = st.issued;
        loop {
            if st.durable >= ticket {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(io::Error::other(format!("flow log write failed: {e}")));
            }
            if !st.flushing {
                // Become the flusher for everything queued so far.
                st.flushing = true;
                let batch = std::mem::take(&mut st.queue);
                let upto = st.issued;
                let mut seg = st
                    .segment
                    .take()
                    .expect("segment present while not flushing");
                drop(st);
                let result = self.write_batch(&mut seg, &batch);
                st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                st.segment = Some(seg);
                st.flushing = false;
                match result {
                    Ok(()) => st.durable = upto,
                    Err(e) => st.failed = Some(e.to_string()),
                }
                if st.waiting > 0 {
                    self.done.notify_all();
                }
            } else {
                st = self.wait_done(st);
            }
        }
    }

    /// Wait for the flush under way to end, counted so that the flusher knows to wake us.
    fn wait_done<'a>(
        &self,
        mut st: std::sync::MutexGuard<'a, State>,
    ) -> std::sync::MutexGuard<'a, State> {
        st.waiting += 1;
        let mut st = self.done.wait(st).unwrap_or_else(|e| e.into_inner());
        st.waiting -= 1;
        st
    }

    fn write_batch(&self, seg: &mut Segment, batch: &[u8]) -> io::Result<()> {
        if seg.len > 0 && seg.len + batch.len() as u64 > self.options.max_segment_bytes {
            // A closed segment is synced, whatever the mode.
            seg.sync()?;
            let next = new_segment(&self.dir, seg.number + 1)?;
            *seg = next;
            self.retain()?;
        }
        seg.file.write_all(batch)?;
        seg.len += batch.len() as u64;
        seg.unsynced = true;
        match self.options.sync {
            SyncMode::Always => seg.sync(),
            SyncMode::Interval(every) if seg.synced_at.elapsed() >= every => seg.sync(),
            SyncMode::Interval(_) => Ok(()),
        }
    }

    /// How long until written bytes are due for their `fdatasync` (zero: overdue), or `None`
    /// when nothing waits for one.
    pub fn sync_due(&self) -> Option<Duration> {
        let SyncMode::Interval(every) = self.options.sync else {
            return None;
        };
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.failed.is_some() {
            // A failed log never syncs again: waiting on it would spin.
            return None;
        }
        match &st.segment {
            Some(seg) if seg.unsynced => Some(every.saturating_sub(seg.synced_at.elapsed())),
            Some(_) => None,
            // A flush is under way; it may leave bytes behind.
            None => Some(every),
        }
    }

    /// `fdatasync` whatever was written and not yet synced (in [`SyncMode::Interval`]); after
    /// it, every acknowledged record survives power loss too.
    pub fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while st.flushing {
            st = self.wait_done(st);
        }
        if let Some(e) = &st.failed {
            return Err(io::Error::other(format!("flow log failed earlier: {e}")));
        }
        let mut seg = st
            .segment
            .take()
            .expect("segment present while not flushing");
        if !seg.unsynced {
            st.segment = Some(seg);
            return Ok(());
        }
        st.flushing = true;
        drop(st);
        let result = seg.sync();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.segment = Some(seg);
        st.flushing = false;
        if let Err(e) = &result {
            st.failed = Some(e.to_string());
        }
        if st.waiting > 0 {
            self.done.notify_all();
        }
        result
    }

    fn retain(&self) -> io::Result<()> {
        let segs = segments(&self.dir)?;
        if segs.len() > self.options.max_segments {
            for (_, p) in &segs[..segs.len() - self.options.max_segments] {
                fs::remove_file(p)?;
            }
            sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

impl Drop for FlowLog {
    fn drop(&mut self) {
        // The last interval's records reach stable storage on a clean end too.
        let st = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(seg) = &mut st.segment {
            let _ = seg.sync();
        }
    }
}

/// One record as a JSON line.
fn encode(r: &FlowRecordRef<'_>, out: &mut Vec<u8>) -> io::Result<()> {
    serde_json::to_writer(&mut *out, r).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(())
}

/// Called once a submitted record is durable, or with the error that stopped it.
pub type Done = Box<dyn FnOnce(io::Result<()>) + Send>;

/// At most this many records share one write and `fsync`, so acknowledgements keep flowing
/// under a steady flood.
const MAX_BATCH: usize = 4096;

/// Within a batch window the writer is woken early once this many records wait.
const WINDOW_RECORDS: usize = 64;

/// Within an unawaited window, once this many records wait.
const UNAWAITED_RECORDS: usize = 512;

/// What the connection tasks hand the writer thread: whole encoded lines and their
/// acknowledgements, in submission order.
struct Queue {
    lines: Vec<u8>,
    dones: Vec<Done>,
    /// How many of `dones` somebody waits for (at most; an unawaited record is not counted).
    awaited: usize,
    /// The writer waits in an unawaited window: an awaited record wakes it.
    unawaited_wait: bool,
    /// The writer sleeps until this many records wait (`None`: it is busy and will look again
    /// before it sleeps, so a submitter need not wake it).
    wake_at: Option<usize>,
    /// No more records are taken; the writer drains what is queued and ends.
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

thread_local! {
    /// A submitter's encoding buffer, reused so a record costs no allocation of its own.
    static LINE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A dedicated writer thread in front of a [`FlowLog`], for callers that must not block (the
/// gateway's connection tasks): [`Writer::submit`] encodes a record on the caller's thread,
/// appends the line to a shared queue and returns at once; the thread takes everything queued,
/// writes it with one `fsync` (through the same group commit as [`FlowLog::append`]) and only
/// then calls each record's [`Done`]. So the kill -9 promise holds for every acknowledged
/// record. A submitter wakes the thread only when it sleeps; once woken it waits up to
/// [`Options::batch_window`] (or until enough records wait) before writing, and after writing
/// it waits one window for the next records before it sleeps, so a busy gateway pays one
/// (timed) wake-up, one write (and in [`SyncMode::Always`] one `fsync`) per batch instead of
/// per record. In [`SyncMode::Interval`] the thread also syncs once the interval has run out
/// with nothing more to write, and when it ends.
pub struct Writer {
    shared: Arc<Shared>,
    log: Arc<FlowLog>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Writer {
    /// Start the writer thread; it ends when the `Writer` is closed or dropped and the queue
    /// is drained.
    pub fn spawn(log: Arc<FlowLog>) -> io::Result<Writer> {
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                lines: Vec::new(),
                dones: Vec::new(),
                awaited: 0,
                unawaited_wait: false,
                wake_at: None,
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let (thread_log, thread_shared) = (log.clone(), shared.clone());
        let thread = std::thread::Builder::new()
            .name("flowlog-writer".into())
            .spawn(move || write_loop(&thread_log, &thread_shared))?;
        Ok(Writer {
            shared,
            log,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// `fdatasync` what was acknowledged and not yet synced ([`FlowLog::sync`]).
    pub fn sync(&self) -> io::Result<()> {
        self.log.sync()
    }

    /// Take no more records, wait until the thread has written (and acknowledged) every record
    /// queued before, then `fdatasync`: for a shutdown, so the final sync covers the last
    /// batch in [`SyncMode::Interval`] too. Records submitted afterwards fail at once.
    pub fn close(&self) -> io::Result<()> {
        self.shut();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread {
            let _ = t.join();
        }
        self.log.sync()
    }

    fn shut(&self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
    }

    /// Queue `record`; `done` is called (on the writer thread) once it is durable or failed.
    pub fn submit(&self, record: &FlowRecord, done: Done) {
        self.submit_ref(&record.borrowed(), done)
    }

    /// [`Writer::submit`] for a borrowed record: it is encoded here, on the caller's thread,
    /// so nothing of it needs to be owned.
    pub fn submit_ref(&self, record: &FlowRecordRef<'_>, done: Done) {
        self.queue(record, done, true)
    }

    /// [`Writer::submit_ref`] for a record nobody waits for (`done` only does the
    /// bookkeeping): it may wait up to [`Options::unawaited_window`] for company. The promise
    /// is the same: `done` is called once the record is written (and synced, as `sync` says).
    pub fn submit_ref_unawaited(&self, record: &FlowRecordRef<'_>, done: Done) {
        self.queue(record, done, false)
    }

    fn queue(&self, record: &FlowRecordRef<'_>, done: Done, awaited: bool) {
        let refused = LINE.with_borrow_mut(|line| {
            line.clear();
            if let Err(e) = encode(record, line) {
                return Some((done, e));
            }
            let mut q = self.shared.lock();
            if q.closed {
                return Some((done, io::Error::other("the flow log writer has stopped")));
            }
            q.lines.extend_from_slice(line);
            q.dones.push(done);
            q.awaited += usize::from(awaited);
            let wake =
                q.wake_at.is_some_and(|n| q.dones.len() >= n) || (awaited && q.unawaited_wait);
            if wake {
                q.wake_at = None;
                q.unawaited_wait = false;
            }
            drop(q);
            if wake {
                self.shared.wake.notify_one();
            }
            // A record's line is small; a burst's buffer is not kept by every thread.
            line.shrink_to(4 << 10);
            None
        });
        // Called outside the encoding buffer's borrow: a `Done` may submit again.
        if let Some((done, e)) = refused {
            done(Err(e));
        }
    }
}

impl Drop for Writer {
    /// The thread still drains what is queued; nothing waits for it.
    fn drop(&mut self) {
        self.shut();
    }
}

/// Ends the writer thread however it ends: later records are refused at once and any still
/// queued fail, so nobody waits forever on a thread that is gone (a `Done` that panics unwinds
/// through the loop).
struct Stopped<'a>(&'a Shared);

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        let mut q = self.0.lock();
        q.closed = true;
        q.lines.clear();
        let dones = std::mem::take(&mut q.dones);
        q.awaited = 0;
        drop(q);
        for done in dones {
            done(Err(io::Error::other("the flow log writer has stopped")));
        }
    }
}

fn write_loop(log: &FlowLog, shared: &Shared) {
    let _stopped = Stopped(shared);
    let window = log.options.batch_window;
    let unawaited_window = log.options.unawaited_window.max(window);
    let mut lines = Vec::new();
    let mut dones: Vec<Done> = Vec::new();
    // The first records find the thread as if just woken: they get the window too.
    let mut woken = true;
    // After a batch the thread waits one window for more before it sleeps until woken: under
    // a steady flow each batch then costs one timed wake-up, and no submitter wakes it.
    let mut linger = false;
    let mut q = shared.lock();
    loop {
        if q.dones.is_empty() {
            if q.closed {
                break;
            }
            if std::mem::take(&mut linger) && !window.is_zero() {
                // The next records are awaited or not: wait as long as unawaited ones may
                // wait, cut short by the first awaited one. Not past a due `fdatasync`
                // (`interval`): that is the idle wait's to make.
                let wait = log
                    .sync_due()
                    .map_or(unawaited_window, |due| due.min(unawaited_window));
                q.wake_at = Some(UNAWAITED_RECORDS);
                q.unawaited_wait = true;
                q = shared
                    .wake
                    .wait_timeout(q, wait)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
                q.wake_at = None;
                q.unawaited_wait = false;
                // Unawaited records have had their window and are written at once; an
                // awaited one that cut the wait short gets the batch window for company.
                woken = q.awaited > 0;
                continue;
            }
            q.wake_at = Some(1);
            match log.sync_due() {
                None => q = shared.wake.wait(q).unwrap_or_else(|e| e.into_inner()),
                Some(wait) => {
                    let (g, timeout) = shared
                        .wake
                        .wait_timeout(q, wait)
                        .unwrap_or_else(|e| e.into_inner());
                    q = g;
                    if timeout.timed_out() && q.dones.is_empty() {
                        q.wake_at = None;
                        drop(q);
                        // A failure poisons the log; the next batch reports it.
                        let _ = log.sync();
                        q = shared.lock();
                    }
                }
            }
            q.wake_at = None;
            woken = true;
            continue;
        }
        // Records that queued while the last batch was written have waited already.
        if woken && !window.is_zero() && q.dones.len() < WINDOW_RECORDS && !q.closed {
            // The batch window: more records share this write (and fsync) for a wake-up each.
            q.wake_at = Some(WINDOW_RECORDS);
            q = shared
                .wake
                .wait_timeout(q, window)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            q.wake_at = None;
        }
        if q.dones.len() <= MAX_BATCH {
            std::mem::swap(&mut lines, &mut q.lines);
            std::mem::swap(&mut dones, &mut q.dones);
        } else {
            let cut = nth_line_end(&q.lines, MAX_BATCH);
            lines.extend(q.lines.drain(..cut));
            dones.extend(q.dones.drain(..MAX_BATCH));
        }
        q.awaited = q.awaited.min(q.dones.len());
        drop(q);
        woken = false;
        linger = true;
        let result = log.commit(&lines);
        for done in dones.drain(..) {
            done(match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
            });
        }
        lines.clear();
        // A burst's buffer is not kept for the quiet that follows.
        lines.shrink_to(64 << 10);
        q = shared.lock();
    }
    drop(q);
    let _ = log.sync();
}

/// The length of the first `n` lines of `bytes`.
fn nth_line_end(bytes: &[u8], n: usize) -> usize {
    bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(n - 1)
        .map_or(bytes.len(), |(i, _)| i + 1)
}

fn new_segment(dir: &Path, number: u64) -> io::Result<Segment> {
    let path = dir.join(segment_name(number));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(&path)?;
    file.sync_all()?;
    sync_dir(dir)?;
    let len = file.metadata()?.len();
    Ok(Segment {
        file,
        number,
        len,
        unsynced: false,
        synced_at: Instant::now(),
    })
}

/// Length of the file up to and including its last newline.
fn complete_prefix_len(file: &mut File, len: u64) -> io::Result<u64> {
    let mut pos = len;
    let mut buf = [0u8; 4096];
    while pos > 0 {
        let n = (pos as usize).min(buf.len());
        pos -= n as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..n])?;
        if let Some(i) = buf[..n].iter().rposition(|&b| b == b'\n') {
            return Ok(pos + i as u64 + 1);
        }
    }
    Ok(0)
}

/// Which records to return.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// `Allow` / `Deny` (case-insensitive).
    pub action: Option<String>,
    pub since: Option<SystemTime>,
    /// A rule name or a rule path (`collection/rule`, `rcg/collection/rule`), or what decided
    /// without a rule (`default`, `address-check`, …), case-insensitive.
    pub rule: Option<String>,
    pub source: Option<IpAddr>,
    /// The SNI/Host/CONNECT name (or the name read inside a CONNECT tunnel), case-insensitive;
    /// `*.example.com` matches subdomains.
    pub name: Option<String>,
    /// Only records of audit matches ([`is_audit`], PAL-5.3/5.4).
    pub audit: bool,
    /// Only the shadow policy's differing verdicts ([`is_shadow_diff`], PAL-5.3).
    pub shadow_diff: bool,
    pub limit: Option<usize>,
}

impl Query {
    pub fn matches(&self, r: &FlowRecord) -> bool {
        if (self.audit && !is_audit(r)) || (self.shadow_diff && !is_shadow_diff(r)) {
            return false;
        }
        if let Some(a) = &self.action {
            if !r.action.eq_ignore_ascii_case(a) {
                return false;
            }
        }
        if let Some(since) = self.since {
            if r.timestamp().is_none_or(|t| t < since) {
                return false;
            }
        }
        if let Some(rule) = &self.rule {
            let by_name = r
                .rule
                .as_deref()
                .is_some_and(|n| n.eq_ignore_ascii_case(rule));
            let by_path = r.rule_path().is_some_and(|p| p.eq_ignore_ascii_case(rule));
            let by_check = r.rule.is_none()
                && r.decided_by
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case(rule));
            if !by_name && !by_path && !by_check {
                return false;
            }
        }
        if let Some(s) = self.source {
            if r.source_ip != Some(s) {
                return false;
            }
        }
        if let Some(n) = &self.name {
            let want = n.trim_end_matches('.').to_ascii_lowercase();
            // A fronting attempt is found by either name: the CONNECT name or the tunnel's.
            let ok = [r.name.as_deref(), r.tunnel_name.as_deref()]
                .into_iter()
                .flatten()
                .any(|have| {
                    let have = have.trim_end_matches('.').to_ascii_lowercase();
                    match want.strip_prefix("*.") {
                        Some(suffix) => have.ends_with(&format!(".{suffix}")),
                        None => have == want,
                    }
                });
            if !ok {
                return false;
            }
        }
        true
    }
}

/// Why a `--since` text gives no time. The messages name the option as the CLI spells it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinceError {
    /// A valid duration that reaches back before the clock's epoch.
    #[error("--since {text}: too far back")]
    TooFarBack { text: String },
    /// Neither a duration nor an RFC 3339 time.
    #[error("--since `{text}`: expected a duration (30m, 1h, 2d) or an RFC 3339 time")]
    Unrecognized { text: String },
}

/// Parse `--since`: a duration before now (`90s`, `15m`, `1h`, `2d`) or an RFC 3339 time.
pub fn parse_since(text: &str, now: SystemTime) -> Result<SystemTime, SinceError> {
    if let Ok(d) = humantime::parse_duration(text) {
        return now.checked_sub(d).ok_or_else(|| SinceError::TooFarBack {
            text: text.to_string(),
        });
    }
    humantime::parse_rfc3339_weak(text).map_err(|_| SinceError::Unrecognized {
        text: text.to_string(),
    })
}

/// PAL-5.3: records with audit matches or observed default denies (`palisade logs --audit`).
pub fn is_audit(r: &FlowRecord) -> bool {
    r.audit
}

/// PAL-5.3: the shadow policy's differing verdicts (`palisade logs --shadow-diff`).
pub fn is_shadow_diff(r: &FlowRecord) -> bool {
    r.action == "ShadowDiff"
}

/// Records of `dir` matching `q`, newest first. Lines that do not parse (a torn tail) are
/// skipped and counted in the second value.
pub fn query(dir: &Path, q: &Query) -> io::Result<(Vec<FlowRecord>, usize)> {
    query_where(dir, q, &|_| true)
}

/// Records of `dir` matching `q` and `keep` (such as [`is_audit`]), newest first.
pub fn query_where(
    dir: &Path,
    q: &Query,
    keep: &dyn Fn(&FlowRecord) -> bool,
) -> io::Result<(Vec<FlowRecord>, usize)> {
    let mut out = vec![];
    let mut bad = 0;
    let limit = q.limit.unwrap_or(usize::MAX);
    for (_, path) in segments(dir)?.into_iter().rev() {
        if let Some(since) = q.since {
            // A segment last written before `since` holds nothing newer.
            if let Ok(m) = fs::metadata(&path).and_then(|m| m.modified()) {
                if m + Duration::from_secs(1) < since {
                    continue;
                }
            }
        }
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // rotated away
            Err(e) => return Err(e),
        };
        let mut records = vec![];
        for line in BufReader::new(file).split(b'\n') {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            match serde_json::from_slice::<FlowRecord>(&line) {
                Ok(r) => records.push(r),
                Err(_) => bad += 1,
            }
        }
        for r in records.into_iter().rev() {
            if q.matches(&r) && keep(&r) {
                out.push(r);
                if out.len() >= limit {
                    return Ok((out, bad));
                }
            }
        }
    }
    Ok((out, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn rec(i: u64, action: &str) -> FlowRecord {
        FlowRecord {
            time: format_time(SystemTime::now()),
            action: action.into(),
            name: Some(format!("n{i}.example.com")),
            source_port: (i % 60000) as u16,
            rule_collection: Some("apps".into()),
            rule: Some(format!("r{}", i % 3)),
            ..Default::default()
        }
    }

    #[test]
    fn writer_acknowledges_only_records_on_disk() {
        let d = tempfile::tempdir().unwrap();
        let log = Arc::new(FlowLog::open(d.path(), Options::default()).unwrap());
        let writer = Writer::spawn(log).unwrap();
        let (acks, acked) = mpsc::channel();
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let (writer, acks) = (&writer, acks.clone());
                s.spawn(move || {
                    for i in 0..250 {
                        let acks = acks.clone();
                        let n = t * 1000 + i;
                        writer.submit(
                            &rec(n, "Allow"),
                            Box::new(move |r| acks.send((n, r.is_ok())).unwrap()),
                        );
                    }
                });
            }
        });
        drop(acks);
        let acked: Vec<(u64, bool)> = acked.iter().collect();
        assert_eq!(acked.len(), 1000);
        assert!(acked.iter().all(|(_, ok)| *ok));
        let (all, torn) = query(d.path(), &Query::default()).unwrap();
        assert_eq!((all.len(), torn), (1000, 0));
        // Each thread's records are in the order it submitted them.
        let mut last = [None::<u64>; 4];
        for r in all.iter().rev() {
            let n: u64 = r
                .name
                .as_deref()
                .unwrap()
                .strip_prefix('n')
                .unwrap()
                .split('.')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let t = (n / 1000) as usize;
            assert!(
                last[t].is_none_or(|l| l < n),
                "record {n} after {:?}",
                last[t]
            );
            last[t] = Some(n);
        }
    }

    #[test]
    fn pal_5_3_audit_fields_round_trip_and_older_records_still_read() {
        // spec PAL-5.3: the audit flag with the would-be access, and the old list form.
        let old = r#"{"time":"2026-01-01T00:00:00Z","action":"Deny","audit":["apps/candidate"]}"#;
        let r: FlowRecord = serde_json::from_str(old).unwrap();
        assert!(r.audit && r.audit_rules.is_empty());
        let plain: FlowRecord = serde_json::from_str(r#"{"action":"Allow"}"#).unwrap();
        assert!(!plain.audit && plain.shadow.is_none());
        let new = FlowRecord {
            audit: true,
            audit_rules: vec![AuditEntry {
                layer: "FirewallApplication".into(),
                rule: "apps/candidate".into(),
                access: "Allow".into(),
            }],
            ..rec(1, "Deny")
        };
        let text = serde_json::to_string(&new).unwrap();
        assert!(text.contains(r#""audit":true"#), "{text}");
        assert_eq!(serde_json::from_str::<FlowRecord>(&text).unwrap(), new);
        // A record without audit matches writes none of the new fields.
        let text = serde_json::to_string(&rec(2, "Allow")).unwrap();
        assert!(
            !text.contains("audit") && !text.contains("shadow"),
            "{text}"
        );
    }

    #[test]
    fn pal_5_3_query_where_keeps_audit_and_shadow_diff_records() {
        // spec PAL-5.3
        let d = tempfile::tempdir().unwrap();
        let log = FlowLog::open(d.path(), Options::default()).unwrap();
        let audited = FlowRecord {
            audit: true,
            ..rec(1, "Deny")
        };
        let diff = FlowRecord {
            shadow: Some(ShadowDiff {
                live_action: "Allow".into(),
                shadow_action: "Deny".into(),
                ..Default::default()
            }),
            ..rec(2, "ShadowDiff")
        };
        for r in [
            rec(0, "Allow"),
            audited.clone(),
            diff.clone(),
            rec(3, "Deny"),
        ] {
            log.append(&r).unwrap();
        }
        let q = Query::default();
        assert_eq!(
            query_where(d.path(), &q, &is_audit).unwrap().0,
            vec![audited.clone()]
        );
        assert_eq!(
            query_where(d.path(), &q, &is_shadow_diff).unwrap().0,
            vec![diff.clone()]
        );
        assert_eq!(query(d.path(), &q).unwrap().0.len(), 4);
        // The same filters as query fields (the server's `audit=true`, `shadowDiff=true`).
        let by = |q: Query| query(d.path(), &q).unwrap().0;
        let audit = Query {
            audit: true,
            ..Query::default()
        };
        assert_eq!(by(audit.clone()), vec![audited]);
        let shadow = Query {
            shadow_diff: true,
            ..Query::default()
        };
        assert_eq!(by(shadow), vec![diff]);
        let both = Query {
            shadow_diff: true,
            ..audit
        };
        assert!(by(both).is_empty());
    }

    #[test]
    fn writer_close_writes_and_syncs_the_last_batch_in_interval_mode() {
        let d = tempfile::tempdir().unwrap();
        let options = Options {
            sync: SyncMode::Interval(Duration::from_secs(3600)),
            // A long window: without the close the last batch would still be waiting.
            batch_window: Duration::from_secs(3600),
            ..Options::default()
        };
        let log = Arc::new(FlowLog::open(d.path(), options).unwrap());
        let writer = Writer::spawn(log.clone()).unwrap();
        let (acks, acked) = mpsc::channel();
        for n in 0..10 {
            let acks = acks.clone();
            writer.submit(
                &rec(n, "Allow"),
                Box::new(move |r| acks.send(r.is_ok()).unwrap()),
            );
        }
        writer.close().unwrap();
        // Every record queued before the close is acknowledged by the time it returns, and
        // nothing written waits for its fdatasync any more.
        assert_eq!(acked.try_iter().filter(|ok| *ok).count(), 10);
        assert_eq!(log.sync_due(), None);
        assert_eq!(query(d.path(), &Query::default()).unwrap().0.len(), 10);
        writer.submit(
            &rec(11, "Allow"),
            Box::new(move |r| acks.send(r.is_ok()).unwrap()),
        );
        assert_eq!(acked.try_iter().collect::<Vec<_>>(), [false]);
    }

    /// A record that comes while the thread waits for more after a batch, and one that comes
    /// after it went to sleep, are each written and acknowledged.
    #[test]
    fn writer_takes_records_after_a_batch_and_after_it_slept() {
        let d = tempfile::tempdir().unwrap();
        let options = Options {
            batch_window: Duration::from_millis(50),
            ..Options::default()
        };
        let log = Arc::new(FlowLog::open(d.path(), options).unwrap());
        let writer = Writer::spawn(log.clone()).unwrap();
        let (acks, acked) = mpsc::channel();
        let submit = |n| {
            let acks = acks.clone();
            writer.submit(
                &rec(n, "Allow"),
                Box::new(move |r| acks.send(r.is_ok()).unwrap()),
            );
        };
        let ack = || acked.recv_timeout(Duration::from_secs(30)).unwrap();
        submit(0);
        assert!(ack());
        // Right after its batch: the thread is still waiting for more.
        submit(1);
        assert!(ack());
        // Long after: it sleeps until a record wakes it.
        std::thread::sleep(Duration::from_millis(300));
        submit(2);
        assert!(ack());
        assert_eq!(query(d.path(), &Query::default()).unwrap().0.len(), 3);
        writer.close().unwrap();
    }

    /// After a batch, a record nobody waits for waits up to the unawaited window for company;
    /// a record somebody waits for cuts that short, and both are written together.
    #[test]
    fn an_unawaited_record_waits_for_company_until_an_awaited_one_comes() {
        let d = tempfile::tempdir().unwrap();
        let options = Options {
            batch_window: Duration::from_millis(1),
            unawaited_window: Duration::from_secs(20),
            ..Options::default()
        };
        let log = Arc::new(FlowLog::open(d.path(), options).unwrap());
        let writer = Writer::spawn(log.clone()).unwrap();
        let (acks, acked) = mpsc::channel();
        let done = |name: &'static str| -> Done {
            let acks = acks.clone();
            Box::new(move |r| acks.send((name, r.is_ok())).unwrap())
        };
        writer.submit(&rec(0, "Allow"), done("first"));
        assert_eq!(
            acked.recv_timeout(Duration::from_secs(10)),
            Ok(("first", true))
        );
        let before = log.state.lock().unwrap().durable;
        // The thread now waits for the next records: an unawaited one is not written alone.
        writer.submit_ref_unawaited(&rec(1, "Allow").borrowed(), done("unawaited"));
        assert!(acked.recv_timeout(Duration::from_millis(500)).is_err());
        let started = Instant::now();
        writer.submit(&rec(2, "Deny"), done("awaited"));
        let mut got = vec![
            acked.recv_timeout(Duration::from_secs(10)).unwrap(),
            acked.recv_timeout(Duration::from_secs(10)).unwrap(),
        ];
        got.sort();
        assert_eq!(got, [("awaited", true), ("unawaited", true)]);
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "not after the window"
        );
        assert_eq!(
            log.state.lock().unwrap().durable,
            before + 1,
            "one write for both"
        );
        assert_eq!(query(d.path(), &Query::default()).unwrap().0.len(), 3);
        writer.close().unwrap();
    }

    #[test]
    fn a_writer_batch_shares_one_write() {
        let d = tempfile::tempdir().unwrap();
        let options = Options {
            batch_window: Duration::from_millis(200),
            ..Options::default()
        };
        let log = Arc::new(FlowLog::open(d.path(), options).unwrap());
        let writer = Writer::spawn(log.clone()).unwrap();
        let (acks, acked) = mpsc::channel();
        for n in 0..5 {
            let acks = acks.clone();
            writer.submit(
                &rec(n, "Allow"),
                Box::new(move |r| acks.send(r.is_ok()).unwrap()),
            );
        }
        for _ in 0..5 {
            assert!(acked.recv().unwrap());
        }
        // One group commit for the five: each ticket is one batch.
        assert_eq!(log.state.lock().unwrap().durable, 1);
    }

    /// A caller's `Done` that panics ends the writer thread: every record after it is refused
    /// or failed at once, none waits forever.
    #[test]
    fn a_panicking_done_stops_the_writer_and_later_records_fail() {
        let d = tempfile::tempdir().unwrap();
        let log = Arc::new(FlowLog::open(d.path(), Options::default()).unwrap());
        let writer = Writer::spawn(log).unwrap();
        writer.submit(
            &rec(1, "Allow"),
            Box::new(|_| panic!("an acknowledgement that panics")),
        );
        let mut answers = vec![];
        loop {
            let (tx, rx) = mpsc::channel();
            writer.submit(
                &rec(2, "Deny"),
                Box::new(move |r| tx.send(r.is_ok()).unwrap()),
            );
            match rx.recv_timeout(Duration::from_secs(10)) {
                // In the batch that panicked: dropped with it.
                Err(mpsc::RecvTimeoutError::Disconnected) => answers.push("dropped"),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!("a record waits forever"),
                Ok(ok) => {
                    assert!(!ok, "written by a writer that stopped");
                    break;
                }
            }
            assert!(answers.len() < 100, "{answers:?}");
        }
    }

    #[test]
    fn writer_reports_a_failed_log() {
        let d = tempfile::tempdir().unwrap();
        let log = Arc::new(FlowLog::open(d.path(), Options::default()).unwrap());
        log.state.lock().unwrap().failed = Some("disk gone".into());
        let writer = Writer::spawn(log).unwrap();
        let (tx, rx) = mpsc::channel();
        writer.submit(&rec(1, "Deny"), Box::new(move |r| tx.send(r).unwrap()));
        let err = rx.recv().unwrap().unwrap_err();
        assert!(err.to_string().contains("disk gone"), "{err}");
    }

    #[test]
    fn a_failed_log_in_interval_mode_is_never_due_for_a_sync() {
        let d = tempfile::tempdir().unwrap();
        let options = Options {
            sync: SyncMode::Interval(Duration::from_secs(3600)),
            ..Options::default()
        };
        let log = FlowLog::open(d.path(), options).unwrap();
        log.append(&rec(1, "Deny")).unwrap();
        assert!(log.sync_due().is_some(), "written, not yet synced");
        // The writer thread waits `sync_due` between batches: a failed log answering "now"
        // for ever would make it spin on a core.
        log.state.lock().unwrap().failed = Some("disk gone".into());
        assert_eq!(log.sync_due(), None);
        assert!(log.sync().is_err());
    }

    #[test]
    fn append_query_newest_first() {
        let d = tempfile::tempdir().unwrap();
        let log = FlowLog::open(d.path(), Options::default()).unwrap();
        for i in 0..10 {
            log.append(&rec(i, if i % 2 == 0 { "Allow" } else { "Deny" }))
                .unwrap();
        }
        let (all, bad) = query(d.path(), &Query::default()).unwrap();
        assert_eq!((all.len(), bad), (10, 0));
        assert_eq!(all[0].name.as_deref(), Some("n9.example.com"));
        let q = Query {
            action: Some("deny".into()),
            ..Default::default()
        };
        assert_eq!(query(d.path(), &q).unwrap().0.len(), 5);
        let q = Query {
            rule: Some("apps/r1".into()),
            ..Default::default()
        };
        assert_eq!(query(d.path(), &q).unwrap().0.len(), 3);
        let q = Query {
            name: Some("*.example.com".into()),
            limit: Some(2),
            ..Default::default()
        };
        assert_eq!(query(d.path(), &q).unwrap().0.len(), 2);
        let q = Query {
            since: Some(SystemTime::now() + Duration::from_secs(3600)),
            ..Default::default()
        };
        assert!(query(d.path(), &q).unwrap().0.is_empty());
    }

    #[test]
    fn new_fields_are_optional_both_ways() {
        // A record written before `decided_by` / `tunnel_name` existed still reads...
        let old = r#"{"time":"2026-01-01T00:00:00.000Z","action":"Deny","reason":"DefaultAction","rule":null}"#;
        let r: FlowRecord = serde_json::from_str(old).unwrap();
        assert_eq!(
            (r.rule_label(), r.decided_by, r.tunnel_name),
            ("-".to_string(), None, None)
        );
        // ...and a record without them is written as before (no new keys).
        let json = serde_json::to_string(&rec(1, "Allow")).unwrap();
        assert!(
            !json.contains("decided_by") && !json.contains("tunnel_name"),
            "{json}"
        );
    }

    #[test]
    fn query_by_check_and_tunnel_name() {
        let d = tempfile::tempdir().unwrap();
        let log = FlowLog::open(d.path(), Options::default()).unwrap();
        log.append(&rec(1, "Allow")).unwrap();
        log.append(&FlowRecord {
            action: "Deny".into(),
            name: Some("www.allowed.test".into()),
            tunnel_name: Some("evil.test".into()),
            decided_by: Some("tunnel-check".into()),
            ..rec(2, "Deny")
        })
        .unwrap();
        log.append(&FlowRecord {
            rule_collection: None,
            rule: None,
            decided_by: Some("default".into()),
            ..rec(3, "Deny")
        })
        .unwrap();
        let by = |q: Query| query(d.path(), &q).unwrap().0;
        let found = by(Query {
            name: Some("evil.test".into()),
            ..Default::default()
        });
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name.as_deref(), Some("www.allowed.test"));
        let found = by(Query {
            rule: Some("default".into()),
            ..Default::default()
        });
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].rule_label(), "default");
        // A rule decided the second record (`apps/r2`): the check name does not shadow it.
        assert_eq!(
            by(Query {
                rule: Some("tunnel-check".into()),
                ..Default::default()
            })
            .len(),
            0
        );
    }

    #[test]
    fn rotation_and_retention() {
        let d = tempfile::tempdir().unwrap();
        let log = FlowLog::open(
            d.path(),
            Options {
                max_segment_bytes: 1000,
                max_segments: 3,
                ..Options::default()
            },
        )
        .unwrap();
        for i in 0..100 {
            log.append(&rec(i, "Allow")).unwrap();
        }
        let segs = segments(d.path()).unwrap();
        assert_eq!(segs.len(), 3);
        let (all, _) = query(d.path(), &Query::default()).unwrap();
        assert_eq!(all[0].name.as_deref(), Some("n99.example.com"));
        assert!(all.len() < 100);
    }

    #[test]
    fn torn_tail_is_cut_on_open() {
        let d = tempfile::tempdir().unwrap();
        {
            let log = FlowLog::open(d.path(), Options::default()).unwrap();
            log.append(&rec(1, "Allow")).unwrap();
        }
        let path = segments(d.path()).unwrap()[0].1.clone();
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"time\":\"20").unwrap();
        drop(f);
        assert_eq!(query(d.path(), &Query::default()).unwrap().1, 1);
        let log = FlowLog::open(d.path(), Options::default()).unwrap();
        log.append(&rec(2, "Deny")).unwrap();
        let (all, bad) = query(d.path(), &Query::default()).unwrap();
        assert_eq!((all.len(), bad), (2, 0));
    }

    #[test]
    fn since_parses_durations_and_times() {
        let now = SystemTime::now();
        assert_eq!(
            parse_since("1h", now).unwrap(),
            now - Duration::from_secs(3600)
        );
        assert!(parse_since("2026-01-01T00:00:00Z", now).is_ok());
        assert!(parse_since("yesterday-ish", now).is_err());
    }
}
