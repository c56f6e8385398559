//! The decision for HTTP/3 and other QUIC flows to an application-rule port: the server name in
//! the client's Initial packets ([`crate::quic`]) judged exactly as the TLS path judges a
//! ClientHello's SNI (FW-6.2): HTTPS on that port, the same application rules, the same PAL-5.2
//! address check, the same ECH policy; an unreadable Initial counts as a ClientHello without
//! SNI.
//!
//! The transparent UDP relay (`udp.rs`) asks [`wants_initial`] of a new flow's first datagram
//! (it starts like a QUIC Initial and the network and DNAT rules left the flow to the default),
//! holds the flow's datagrams in a [`Pending`] until the ClientHello is whole (bounded by
//! datagrams and by the handshake timeout), then calls [`judge_quic`] and relays or drops.

use crate::proxy::{address_check, key, note_ech, refusal_over, Flow, Mode};
use crate::quic::{self, ClientInitials, Hello, QuicError};
use crate::{EchPolicy, Gateway, Version};
use palisade_flowlog::FlowRecord;
use palisade_policy::firewall::{FirewallInput, FirewallOutcome, FirewallPass};
use palisade_policy::matchers::PacketKey;
use palisade_policy::AppProtocol;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Whether a UDP flow's first datagram is to be judged by its QUIC Initial: it starts like one
/// and the network and DNAT rules leave the flow to the default (no rule of theirs matched).
pub fn wants_initial(gw: &Gateway, client: SocketAddr, dst: SocketAddr, first: &[u8]) -> bool {
    if !quic::starts_like_initial(first) {
        return false;
    }
    let (l4, _) = gw.judge(&FirewallInput {
        key: PacketKey {
            protocol: 17,
            ..key(client, dst)
        },
        host: None,
        app_protocol: None,
    });
    !l4.allowed && l4.pass == FirewallPass::FirewallDefault && l4.reason != "NoValidPolicy"
}

/// A UDP flow whose ClientHello is still incomplete: its datagrams so far, held to be relayed
/// if it is allowed.
#[derive(Default)]
pub struct Pending {
    initials: ClientInitials,
    pub datagrams: Vec<Vec<u8>>,
    since: Option<Instant>,
}

impl Pending {
    /// Add the flow's next datagram; the answer once there is one.
    pub fn push(&mut self, datagram: &[u8]) -> Option<Result<Hello, QuicError>> {
        self.since.get_or_insert_with(Instant::now);
        self.datagrams.push(datagram.to_vec());
        match self.initials.push(datagram) {
            Ok(None) => None,
            Ok(Some(hello)) => Some(Ok(hello)),
            Err(e) => Some(Err(e)),
        }
    }
}

/// Remove and return the pending flows older than `timeout` (judged as incomplete).
pub fn expired<K: Copy + Eq + std::hash::Hash>(
    pending: &mut HashMap<K, Pending>,
    timeout: Duration,
) -> Vec<(K, Pending)> {
    let old: Vec<K> = pending
        .iter()
        .filter(|(_, p)| p.since.is_some_and(|t| t.elapsed() >= timeout))
        .map(|(k, _)| *k)
        .collect();
    old.into_iter()
        .filter_map(|k| pending.remove(&k).map(|p| (k, p)))
        .collect()
}

/// The gateway's decision for a QUIC flow and the flow record that reports it.
pub struct QuicDecision {
    pub outcome: FirewallOutcome,
    pub version: Version,
    /// Protocol `QUIC`, the name read (or none), the rule or reason that decided.
    pub record: FlowRecord,
}

/// Judge a QUIC flow from `client` to `dst` by what its first datagrams gave.
pub async fn judge_quic(
    gw: &Gateway,
    client: SocketAddr,
    dst: SocketAddr,
    initial: &Result<Hello, QuicError>,
) -> QuicDecision {
    let (host, ech, unreadable) = match initial {
        Ok(hello) => (hello.sni.clone(), hello.ech, None),
        Err(e) => (None, false, Some(e)),
    };
    let flow = Flow {
        mode: Mode::Transparent,
        protocol: "QUIC",
        client,
        dst: Some(dst),
        name: host.clone(),
        started: Instant::now(),
        translated_source: None,
        tunnel_name: None,
    };
    // Application rules are compiled for TCP (Azure's are); HTTP/3 to a name is HTTPS to that
    // name, so the application pass sees the same 5-tuple as TCP.
    let input = FirewallInput {
        key: PacketKey {
            protocol: 6,
            ..key(client, dst)
        },
        host: host.as_deref(),
        app_protocol: Some(AppProtocol::Https),
    };
    let (mut outcome, version) = gw.judge(&input);
    if let Some(e) = unreadable {
        // The policy already treated it as HTTPS without SNI (`SniMissing`); say why.
        prefix_detail(&mut outcome, format!("QUIC Initial unreadable: {e}"));
    } else if ech {
        match gw.config.ech {
            EchPolicy::Deny => {
                let detail = format!(
                    "Encrypted Client Hello in a QUIC Initial (outer SNI {}): the real name is hidden",
                    host.as_deref().unwrap_or("none")
                );
                outcome = refusal_over(gw, &flow, &outcome, "EncryptedClientHello", detail);
            }
            EchPolicy::OuterSni => note_ech(&mut outcome, host.as_deref()),
        }
    }
    if outcome.allowed && outcome.pass == FirewallPass::FirewallApplication {
        if let Some(name) = &host {
            address_check(gw, &mut outcome, name, dst, Some(AppProtocol::Https)).await;
        }
    }
    let record = flow.record(gw, &outcome, &version);
    QuicDecision {
        outcome,
        version,
        record,
    }
}

fn prefix_detail(outcome: &mut FirewallOutcome, note: String) {
    outcome.detail = Some(match &outcome.detail {
        Some(d) => format!("{note}; {d}").into(),
        None => note.into(),
    });
}
