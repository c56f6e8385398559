//! The TCP listeners served on a runtime per thread ([`crate::Config::serving_threads`]).
//!
//! Each serving thread runs a current-thread tokio runtime with a listener of its own on the
//! listener's address (`SO_REUSEPORT`: the kernel spreads new connections over the listeners
//! by a hash of their addresses), and a connection lives on the thread that accepted it. This
//! is HAProxy's and nginx's shape: a poller per thread, and no work-stealing sibling to wake
//! for a task that another thread would run (an idle vCPU of a virtual machine halts, and each
//! such wake-up pays for its halt). docs/benchmarks.md ("twelfth step") has the measurement.
//!
//! A shared port could let another process join the group unseen and take a share of the
//! connections. So the address is first bound by a probe socket without `SO_REUSEPORT`: it
//! fails while any listener holds the port, this gateway's group included, and a second
//! gateway started on the same address is refused as before.
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
/// `SO_REUSEPORT`, after a probe bind without it; `transparent`: `IP_TRANSPARENT` sockets,
/// the nftables `tproxy` target. Returns the bound address and the listeners.
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
            s.set_reuse_port(true)?;
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
    pub(crate) fn start(
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
        let mut threads = ServingThreads::default();
        for (i, share) in shares.into_iter().enumerate() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            // Registered with the thread's own runtime, whose poller then waits on them.
            let listeners = {
                let _in_rt = rt.enter();
                share
                    .into_iter()
                    .map(|(mode, l)| Ok((mode, tokio::net::TcpListener::from_std(l)?)))
                    .collect::<io::Result<Vec<_>>>()?
            };
            let (accepting, accepted_last) = oneshot::channel();
            let stop = Arc::new(Signal::default());
            let (gw, until) = (gw.clone(), stop.clone());
            std::thread::Builder::new()
                .name(format!("serving-{i}"))
                .spawn(move || {
                    rt.block_on(async move {
                        let serve = async {
                            let loops: Vec<_> = listeners
                                .into_iter()
                                .map(|(mode, l)| {
                                    tokio::spawn(proxy::accept_loop(gw.clone(), l, mode))
                                })
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
                            _ = until.raised() => {}
                        }
                    });
                })?;
            threads.threads.push(Thread {
                accepting: Some(accepted_last),
                stop,
            });
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
