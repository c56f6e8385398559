//! The decision for HTTP/3 and other QUIC flows to an application-rule port: the server name in
//! the client's Initial packets ([`crate::quic`]) judged exactly as the TLS path judges a
//! ClientHello's SNI (FW-6.2): HTTPS on that port, the same application rules, the same PAL-5.2
//! address check, the same ECH policy; an unreadable Initial counts as a ClientHello without
//! SNI.
//!
//! Where it plugs in: a UDP relay judges a new flow at L4 first (network and DNAT rules,
//! protocol 17). When those leave it to the application rules, it reads the flow's first
//! datagrams into a [`crate::quic::ClientInitials`] (bounded by datagrams and by the handshake
//! timeout), then calls [`judge_quic`] and relays or drops by its outcome, completing the
//! returned flow record with bytes and duration.

use crate::proxy::{address_check, key, note_ech, refusal, Flow, Mode};
use crate::quic::{Hello, QuicError};
use crate::{EchPolicy, Gateway, Version};
use palisade_flowlog::FlowRecord;
use palisade_policy::firewall::{FirewallInput, FirewallOutcome, FirewallPass};
use palisade_policy::matchers::PacketKey;
use palisade_policy::AppProtocol;
use std::net::SocketAddr;
use std::time::Instant;

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
                let policy = if outcome.allowed {
                    format!(
                        "; the policy alone would allow it ({})",
                        outcome.rule.as_ref().map(|r| r.path()).unwrap_or_default()
                    )
                } else {
                    String::new()
                };
                let detail = format!(
                    "Encrypted Client Hello in a QUIC Initial (outer SNI {}): the real name is hidden{policy}",
                    host.as_deref().unwrap_or("none")
                );
                outcome = refusal(gw, &flow, "EncryptedClientHello", detail);
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
