//! The TCP listeners served on a runtime per thread ([`crate::Config::serving_threads`]).
//!
//! Each serving thread runs a current-thread tokio runtime with a listener of its own on the
//! listener's address (`SO_REUSEPORT`: the kernel spreads new connections over the listeners
//! by a hash of their addresses), and a connection lives on the thread that accepted it. This
//! is HAProxy's and nginx's shape: a poller per thread, and no work-stealing sibling to wake
//! for a task that another thread would run (an idle vCPU of a virtual machine halts, and each
//! such wake-up pays for its halt). docs/benchmarks.md ("twelfth step") has the measurement.
//!
//! A shared port lets another socket join the group and take a share of the connections. The
//! kernel allows that only to a socket of the same user that sets `SO_REUSEPORT` too, as
//! HAProxy's and nginx's `reuseport` listeners allow it. Beyond that, the address is first bound
//! by a probe socket without `SO_REUSEPORT`: it fails while any socket listens on the port, so
//! the group holds none that was there before, and a second gateway started on the same
//! address is refused as before. One serving thread (`--worker-threads 1`) binds without
//! `SO_REUSEPORT`, and then no socket can join.
//!
//! The rest of the gateway (admin, DNS proxy, UDP, DNAT, reloads) stays on the runtime that
//! called [`crate::Gateway::start`]; the state all share (the policy, the flow log, the
//! registry of established connections) is behind atomics and locks already.

use crate::proxy::{self, Mode};
use crate::shutdown::Signal;
use crate::Gateway;
use socket2::{Domain, Socket, Type};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::oneshot;

/// A connection queue of this length per listener; the kernel's `somaxconn` caps it.
const BACKLOG: i32 = 1024;

/// `n` listeners on `addr` (port 0: one port the kernel picks) sharing it through
/// `SO_REUSEPORT` (one alone: without it), after a probe bind without it; `transparent`:
/// `IP_TRANSPARENT` sockets, the nftables `tproxy` target. Returns the bound address and the
/// listeners.
pub(crate) fn bind_group(
    addr: SocketAddr,
    n: usize,
    transparent: bool,
) -> io::Result<(SocketAddr, Vec<std::net::TcpListener>)> {
    let socket = || -> io::Result<Socket> {
        if transparent {
            crate::udp::transparent_socket(addr, Type::STREAM)
        } else {
            let s = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
            s.set_reuse_address(true)?;
            s.set_nonblocking(true)?;
            Ok(s)
        }
    };
    let probe = socket()?;
    // Refused while any socket listens on the address, with `SO_REUSEPORT` or without.
    probe.bind(&addr.into())?;
    let bound = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("the probe socket has no IP address"))?;
    drop(probe);
    let listeners = (0..n.max(1))
        .map(|_| {
            let s = socket()?;
            // One listener shares the port with nobody.
            s.set_reuse_port(n > 1)?;
            s.bind(&bound.into())?;
            s.listen(BACKLOG)?;
            Ok(s.into())
        })
        .collect::<io::Result<Vec<_>>>()?;
    Ok((bound, listeners))
}

/// The serving threads, each running the accept loops of its share of the listeners.
#[derive(Default)]
pub(crate) struct ServingThreads {
    threads: Vec<Thread>,
}

struct Thread {
    /// Sent once the thread's accept loops have returned: its listeners are closed.
    accepting: Option<oneshot::Receiver<()>>,
    /// Raised to end the thread's runtime, dropping what it still runs.
    stop: Arc<Signal>,
}

impl ServingThreads {
    /// Start the threads: thread `i` serves the `i`th listener of every group (explicit,
    /// transparent), each with its group's mode; every group has a listener per thread.
    /// Returns once each has its runtime and listeners, or the first one's error.
    pub(crate) async fn start(
        gw: &Arc<Gateway>,
        groups: Vec<(Mode, Vec<std::net::TcpListener>)>,
    ) -> io::Result<ServingThreads> {
        let n = groups.iter().map(|(_, g)| g.len()).max().unwrap_or(0);
        let mut shares: Vec<Vec<(Mode, std::net::TcpListener)>> = (0..n).map(|_| vec![]).collect();
        for (mode, group) in groups {
            for (i, l) in group.into_iter().enumerate() {
                shares[i].push((mode, l));
            }
        }
        // Dropped on an error below: the threads started so far end.
        let mut threads = ServingThreads::default();
        for (i, share) in shares.into_iter().enumerate() {
            let (ready, started) = oneshot::channel();
            let (accepting, accepted_last) = oneshot::channel();
            let stop = Arc::new(Signal::default());
            let (gw, until) = (gw.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("serving-{i}"))
                .spawn(move || serve(gw, share, n, ready, accepting, until))?;
            threads.threads.push(Thread {
                accepting: Some(accepted_last),
                stop,
            });
            started
                .await
                .unwrap_or_else(|_| Err(io::Error::other("a serving thread ended at its start")))?;
        }
        Ok(threads)
    }

    /// Resolves once every thread's accept loops have returned (after the gateway reached
    /// `Draining`): their listeners are closed.
    pub(crate) async fn stopped_accepting(&mut self) {
        for t in &mut self.threads {
            if let Some(a) = t.accepting.take() {
                let _ = a.await;
            }
        }
    }

    /// End every thread's runtime; the connections it still runs are dropped.
    pub(crate) fn stop(&mut self) {
        for t in self.threads.drain(..) {
            t.stop.raise();
        }
    }
}

impl Drop for ServingThreads {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A serving thread: its runtime, made here (a runtime may not be dropped where async code
/// runs, as on an error in [`crate::Gateway::start`]), its listeners registered with it, then
/// their accept loops until the gateway drains, then their connections until `stop`.
fn serve(
    gw: Arc<Gateway>,
    share: Vec<(Mode, std::net::TcpListener)>,
    threads: usize,
    ready: oneshot::Sender<io::Result<()>>,
    accepting: oneshot::Sender<()>,
    stop: Arc<Signal>,
) {
    let made = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // The default pool (512) per runtime would multiply the name lookups' threads by
        // the serving threads.
        .max_blocking_threads((512 / threads).max(1))
        .build()
        .and_then(|rt| {
            let listeners = {
                let _in_rt = rt.enter();
                share
                    .into_iter()
                    .map(|(mode, l)| Ok((mode, tokio::net::TcpListener::from_std(l)?)))
                    .collect::<io::Result<Vec<_>>>()?
            };
            Ok((rt, listeners))
        });
    let (rt, listeners) = match made {
        Ok(x) => x,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let _ = ready.send(Ok(()));
    rt.block_on(async move {
        let serve = async {
            let loops: Vec<_> = listeners
                .into_iter()
                .map(|(mode, l)| tokio::spawn(proxy::accept_loop(gw.clone(), l, mode)))
                .collect();
            for l in loops {
                let _ = l.await;
            }
            let _ = accepting.send(());
            // Its connections go on until the shutdown has done with them.
            std::future::pending::<()>().await
        };
        tokio::select! {
            _ = serve => {}
            _ = stop.raised() => {}
        }
    });
}
