//! Graceful shutdown, modelled on pingora's shutdown watch: one [`tokio::sync::watch`] channel carries the
//! gateway's [`Phase`]. `Draining` stops every accept loop at once (their listeners are dropped,
//! so new connections are refused) while established relays go on; `Closing`, at the end of the
//! grace period, closes what is left. Every connection is counted in flight from accept to its
//! last flow record, so the drain knows when nothing is left and the records are all on disk.

use crate::proxy::{observed_deny, Flow, Mode};
use crate::source_cap::SourceSlot;
use crate::{log, Closed, Established, Gateway, Running};
use atomic_waker::AtomicWaker;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

/// Where the gateway is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// No new connection or UDP session is taken; established ones go on.
    Draining,
    /// The grace period is over: what is left is closed.
    Closing,
}

/// What a shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Connections (and UDP sessions) that ended by themselves during the grace period.
    pub drained: usize,
    /// Connections closed when the grace period ended, each with a `Shutdown` record.
    pub closed: usize,
    pub elapsed: Duration,
}

/// How long the closed connections get to write their records once told to close.
const CLOSE_WAIT: Duration = Duration::from_secs(10);

/// What a connection's task shares with the code it runs.
struct Tracked {
    /// Set by [`crate::proxy::relay`] once the connection is registered: from then on the
    /// shutdown closes it through its [`Established`] entry and it writes its own record.
    relaying: AtomicBool,
    /// The client's place under `--max-connections-per-source`, given back as soon as the
    /// sockets close ([`sockets_closed`]): waiting for the end record's `fsync` too would refuse
    /// the source's next connections whenever the disk is slow.
    source_slot: Mutex<Option<SourceSlot>>,
    /// The connection's place in flight, until [`crate::proxy::relay`] hands it to its end
    /// record ([`take_in_flight`]).
    in_flight: Mutex<Option<InFlight>>,
}

tokio::task_local! {
    static TRACKED: Arc<Tracked>;
}

/// How many connections and UDP sessions are in flight, and a wake-up for a drain waiting for
/// none. An atomic rather than a `watch` channel: every connection counts itself in and out,
/// and a `watch` send locks each of its waiter lists even when nobody waits.
#[derive(Default)]
pub(crate) struct InFlightCount {
    n: AtomicUsize,
    none_left: Notify,
}

impl InFlightCount {
    fn get(&self) -> usize {
        self.n.load(Ordering::SeqCst)
    }

    fn enter(&self) {
        self.n.fetch_add(1, Ordering::SeqCst);
    }

    /// The last one to leave wakes the drain.
    fn leave(&self) {
        if self.n.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.none_left.notify_waiters();
        }
    }

    /// Resolves once nothing is in flight.
    async fn none_left(&self) {
        loop {
            let woken = self.none_left.notified();
            let mut woken = std::pin::pin!(woken);
            // Registered before the count is read: a last decrement in between still wakes it.
            woken.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            woken.await;
        }
    }
}

/// Counts one connection or UDP session in flight (and in the `connections_active` gauge)
/// for as long as it lives.
pub(crate) struct InFlight(Arc<Gateway>);

impl InFlight {
    pub(crate) fn new(gw: &Arc<Gateway>) -> InFlight {
        gw.in_flight.enter();
        gw.metrics.active.inc();
        InFlight(gw.clone())
    }
}

impl InFlight {
    pub(crate) fn gateway(&self) -> &Arc<Gateway> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.metrics.active.dec();
        self.0.in_flight.leave();
    }
}

/// Mark the current connection as relaying (no-op outside [`connection`], e.g. UDP sessions).
pub(crate) fn relaying() {
    let _ = TRACKED.try_with(|t| t.relaying.store(true, Ordering::Relaxed));
}

/// The current connection's place in flight, for a record that is to give it up once durable
/// (`None` outside [`connection`]).
pub(crate) fn take_in_flight() -> Option<InFlight> {
    TRACKED
        .try_with(|t| t.in_flight.lock().unwrap_or_else(|p| p.into_inner()).take())
        .ok()
        .flatten()
}

/// The current connection's sockets are closed: its source's slot goes back now, before its
/// record is durable (no-op outside [`connection`], or when it held none).
pub(crate) fn sockets_closed() {
    let slot = TRACKED
        .try_with(|t| {
            t.source_slot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
        })
        .ok()
        .flatten();
    drop(slot);
}

/// The next connection `listener` takes, or `None` once `draining` (the accept loop's one
/// [`reached`]`(Draining)`, kept across accepts rather than made anew for each) resolves: the
/// caller then returns and drops the listener, so new connections are refused.
pub(crate) async fn accept(
    mut draining: Pin<&mut impl Future<Output = ()>>,
    listener: &TcpListener,
    what: &str,
) -> Option<(TcpStream, SocketAddr)> {
    loop {
        tokio::select! {
            biased;
            _ = draining.as_mut() => return None,
            r = listener.accept() => match r {
                Ok(x) => return Some(x),
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    log(format!("accept on {what}: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// Resolves once the gateway reaches `phase` (or a later one).
///
/// Its task polls it on every wake-up, beside a connection's work or an accept, so a poll must
/// be cheap: a poll of the phase `watch` locks one of its waiter lists, which every connection
/// shares. So the `watch` is polled under a waker of its own (a [`Signal`], raised by the
/// `watch`'s wake-up) and polled again only once it was raised; every other poll reads a flag.
pub(crate) async fn reached(gw: &Gateway, phase: Phase) {
    phase_reached(&gw.phase, phase).await
}

/// [`reached`] on the phase channel itself.
async fn phase_reached(phases: &tokio::sync::watch::Sender<Phase>, phase: Phase) {
    let mut rx = phases.subscribe();
    let mut watch = std::pin::pin!(rx.wait_for(|p| phase_rank(*p) >= phase_rank(phase)));
    // Raised to begin with: the first poll polls the `watch`.
    let signal = Arc::new(Signal {
        raised: AtomicBool::new(true),
        task: AtomicWaker::new(),
    });
    let waker = Waker::from(signal.clone());
    std::future::poll_fn(|cx| {
        // Registered before the flag is read: a wake in between still reaches this task.
        signal.task.register(cx.waker());
        if signal.raised.swap(false, Ordering::AcqRel) {
            let mut own = Context::from_waker(&waker);
            if watch.as_mut().poll(&mut own).is_ready() {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    })
    .await
}

/// A flag that wakes the one task waiting on it when raised: an established connection's
/// cancel (a reload that denies it, the shutdown), and the waker [`reached`] polls the phase
/// `watch` with. Its task polls it on every wake-up, and registering a waker here takes no
/// lock (as a `Notify` would, to queue and dequeue its waiter).
#[derive(Default)]
pub(crate) struct Signal {
    raised: AtomicBool,
    task: AtomicWaker,
}

impl Signal {
    /// Raise the flag and wake the task; one that polls later finds it raised.
    pub(crate) fn raise(&self) {
        self.raised.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Ready once [`Signal::raise`] was called, before or after.
    pub(crate) fn raised(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.raised.load(Ordering::Acquire) {
                return Poll::Ready(());
            }
            self.task.register(cx.waker());
            // Raised between the check and the registration: its wake-up may have missed us.
            if self.raised.load(Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.raise();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.raise();
    }
}

fn phase_rank(p: Phase) -> u8 {
    match p {
        Phase::Serving => 0,
        Phase::Draining => 1,
        Phase::Closing => 2,
    }
}

/// Run one accepted TCP connection, counted in flight by `counted` (taken by the accept loop
/// before spawning, so a drain never misses a connection that has not started yet). When the grace period ends before it
/// reaches a relay (still reading its request head or ClientHello, or dialing), it is dropped
/// and recorded as closed by the shutdown; a relay is closed through its entry instead.
/// `work` comes boxed: the task then holds a pointer, not the connection's state twice (an
/// argument of an async fn keeps its room for good). `source_slot` is held until the
/// connection's sockets close (at the latest, until it returns).
pub(crate) async fn connection(
    gw: &Arc<Gateway>,
    counted: InFlight,
    source_slot: Option<SourceSlot>,
    mode: Mode,
    peer: SocketAddr,
    dst: Option<SocketAddr>,
    work: std::pin::Pin<Box<impl Future<Output = io::Result<()>>>>,
) -> io::Result<()> {
    let tracked = Arc::new(Tracked {
        relaying: AtomicBool::new(false),
        source_slot: Mutex::new(source_slot),
        in_flight: Mutex::new(Some(counted)),
    });
    // In an `Option` pinned in place (no second box): setting it to `None` below must close
    // the connection's sockets before its record is written.
    let mut work = std::pin::pin!(Some(TRACKED.scope(tracked.clone(), work)));
    tokio::select! {
        // The work first: the shutdown's branch matters only while the work waits.
        biased;
        r = work.as_mut().as_pin_mut().expect("set until dropped below") => return r,
        _ = reached(gw, Phase::Closing) => {}
    }
    if tracked.relaying.load(Ordering::Relaxed) {
        return work.as_mut().as_pin_mut().expect("still set").await;
    }
    work.set(None);
    drop(
        tracked
            .source_slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(),
    );
    gw.closed_at_shutdown.fetch_add(1, Ordering::Relaxed);
    let flow = Flow {
        mode,
        protocol: "TCP",
        client: peer,
        dst,
        name: None,
        started: Instant::now(),
        tunnel_name: None,
        translated_source: None,
    };
    let o = observed_deny(
        "Shutdown",
        "closed by the gateway's shutdown before it was decided".into(),
    );
    let snap = gw.version();
    gw.record(flow.record(gw, &o, &snap)).await;
    Ok(())
}

impl Gateway {
    pub fn phase(&self) -> Phase {
        *self.phase.borrow()
    }

    /// Connections and UDP sessions in flight (also the `connections_active` gauge).
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Close an established connection for the shutdown, unless a reload closed it already.
    /// Returns whether this call closed it.
    pub(crate) fn close_for_shutdown(&self, e: &Established) -> bool {
        let mut closed = e.closed_by.lock().unwrap_or_else(|p| p.into_inner());
        if closed.is_some() {
            return false;
        }
        *closed = Some(Closed::Shutdown);
        e.cancel.raise();
        self.closed_at_shutdown.fetch_add(1, Ordering::Relaxed);
        true
    }
}

impl Running {
    /// Stop taking connections, let established ones finish for up to `grace`, then close what
    /// is left (each with a `Shutdown` flow record) and return once every record is written.
    pub async fn shutdown(mut self, grace: Duration) -> ShutdownReport {
        self.shutdown_by("requested", grace, std::future::pending())
            .await
    }

    /// [`Running::shutdown`]; `cut_short` resolving (a second signal) ends the grace period.
    pub(crate) async fn shutdown_by(
        &mut self,
        why: &str,
        grace: Duration,
        cut_short: impl Future<Output = ()>,
    ) -> ShutdownReport {
        let start = Instant::now();
        let gw = self.gateway.clone();
        {
            // A reload under way finishes first; later ones are refused, so none rebinds a
            // DNAT listener while draining.
            let _serial = gw.reload_lock.lock().await;
            gw.phase.send_replace(Phase::Draining);
        }
        for t in std::mem::take(&mut self.tasks) {
            t.abort();
        }
        self._watcher = None;
        let dnat = std::mem::take(&mut *gw.dnat.lock().unwrap_or_else(|p| p.into_inner()));
        let mut udp = vec![];
        let mut accepting = std::mem::take(&mut self.listeners);
        for ((transport, _), (_, task)) in dnat {
            match transport {
                crate::dnat::Transport::Tcp => accepting.push(task),
                // A UDP frontend keeps relaying its sessions' datagrams while they drain.
                crate::dnat::Transport::Udp => udp.push(task),
            }
        }
        // Once the accept loops have returned their listeners are closed.
        for t in accepting {
            let _ = t.await;
        }
        self.serving.stopped_accepting().await;
        let in_flight = gw.in_flight();
        log(format!(
            "shutting down ({why}): no longer accepting; draining {in_flight} connection(s) for up to {}s",
            grace.as_secs_f64()
        ));
        let drained_in_time = tokio::select! {
            r = tokio::time::timeout(grace, gw.in_flight.none_left()) => r.is_ok(),
            _ = cut_short => {
                log("stop signal again: closing what is left now");
                false
            }
        };
        if !drained_in_time {
            gw.phase.send_replace(Phase::Closing);
            for e in gw.established_list() {
                gw.close_for_shutdown(&e);
            }
            if tokio::time::timeout(CLOSE_WAIT, gw.in_flight.none_left())
                .await
                .is_err()
            {
                log(format!(
                    "{} connection(s) still writing their records after {}s; stopping anyway",
                    gw.in_flight(),
                    CLOSE_WAIT.as_secs()
                ));
            }
        }
        for t in udp {
            t.abort();
        }
        gw.flush_suppressed();
        // The writer drains and ends before the final fdatasync, so with an interval sync the
        // last batch is covered too.
        let closing = gw.clone();
        let closed = tokio::task::spawn_blocking(move || closing.flowlog.close()).await;
        if let Err(e) = closed.unwrap_or_else(|e| Err(io::Error::other(e))) {
            log(format!("flow log: the final fdatasync failed: {e}"));
        }
        // Nothing is left in flight on the serving threads (or it was given up after CLOSE_WAIT).
        self.serving.stop();
        let closed = gw.closed_at_shutdown.load(Ordering::Relaxed);
        let report = ShutdownReport {
            drained: in_flight.saturating_sub(closed),
            closed,
            elapsed: start.elapsed(),
        };
        log(format!(
            "shutdown complete in {:.1}s: {} drained, {} closed; flow records written",
            report.elapsed.as_secs_f64(),
            report.drained,
            report.closed
        ));
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    /// Counts the wake-ups of the task that polls.
    #[derive(Default)]
    struct Wakes(AtomicUsize);

    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(f: Pin<&mut impl Future<Output = ()>>, wakes: &Arc<Wakes>) -> Poll<()> {
        let waker = Waker::from(wakes.clone());
        f.poll(&mut Context::from_waker(&waker))
    }

    /// A relay's cancel wait stays pending through polls until the cancel, which wakes its
    /// task once; a cancel made before the first poll is not lost.
    #[test]
    fn a_cancel_wakes_the_relay_once_and_is_kept_for_a_later_poll() {
        let cancel = Signal::default();
        let wakes = Arc::new(Wakes::default());
        let mut waiting = std::pin::pin!(cancel.raised());
        for _ in 0..3 {
            assert!(poll(waiting.as_mut(), &wakes).is_pending());
        }
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        cancel.raise();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(poll(waiting.as_mut(), &wakes).is_ready());

        let early = Signal::default();
        early.raise();
        assert!(poll(std::pin::pin!(early.raised()), &wakes).is_ready());
    }

    /// A wait for `Closing` stays pending through any number of polls and through `Draining`
    /// (its task is woken for that change, polls again and waits on), and resolves at
    /// `Closing`; a wait for a phase already reached resolves on its first poll.
    #[test]
    fn reached_resolves_at_its_phase_and_not_before() {
        let phases = watch::Sender::new(Phase::Serving);
        let wakes = Arc::new(Wakes::default());
        let mut closing = std::pin::pin!(phase_reached(&phases, Phase::Closing));
        for _ in 0..5 {
            assert!(poll(closing.as_mut(), &wakes).is_pending());
        }
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            0,
            "no wake-up without a change"
        );

        phases.send_replace(Phase::Draining);
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the change wakes the task"
        );
        assert!(poll(closing.as_mut(), &wakes).is_pending());
        assert!(poll(closing.as_mut(), &wakes).is_pending());

        phases.send_replace(Phase::Closing);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 2);
        assert!(poll(closing.as_mut(), &wakes).is_ready());

        let mut draining = std::pin::pin!(phase_reached(&phases, Phase::Draining));
        assert!(
            poll(draining.as_mut(), &wakes).is_ready(),
            "a later phase counts"
        );
    }

    /// The drain's wait for no connection in flight: pending while one is, woken by the last
    /// one leaving, and at once when none is.
    #[test]
    fn none_left_wakes_when_the_last_one_leaves() {
        let count = InFlightCount::default();
        let wakes = Arc::new(Wakes::default());
        count.enter();
        count.enter();
        let mut wait = std::pin::pin!(count.none_left());
        assert!(poll(wait.as_mut(), &wakes).is_pending());
        count.leave();
        assert!(poll(wait.as_mut(), &wakes).is_pending());
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
        count.leave();
        assert_eq!(
            wakes.0.load(Ordering::SeqCst),
            1,
            "the last one wakes the drain"
        );
        assert!(poll(wait.as_mut(), &wakes).is_ready());
        let mut again = std::pin::pin!(count.none_left());
        assert!(poll(again.as_mut(), &wakes).is_ready());
    }
}
