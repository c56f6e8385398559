//! nf_tables over netlink, without `nft`: the ruleset generation, and a change of single rules
//! (deleted by handle, inserted at a position) as one atomic batch.
//!
//! Why: `nft` reads the table into its cache before an `insert … position` (for a table with a
//! 155k-element set that is a quarter of a second of CPU), while the kernel needs only the
//! rules themselves. Rules are encoded from the renderer's model ([`RuleDef`]), expression by
//! expression exactly as `nft` 1.0 encodes the same text, so the kernel — and `nft list` —
//! cannot tell the two apart (checked by `tests/rule_change.rs`). Only the forms NSG rules are
//! rendered to are encoded; [`encodable`] says whether a rule is one of them.
//!
//! The batch carries the generation the caller's state was read at: the kernel refuses it when
//! anything changed the ruleset since, so a change can never land on a table that drifted.

use crate::render::{Elem, Operand, RuleDef, SetKind, Side, Stmt, TablePlan};
use ipnet::IpNet;
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use std::collections::{BTreeMap, BTreeSet};

// linux/netfilter/nfnetlink.h and nf_tables.h: the constants the kernel's ABI fixes.
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_BATCH_GENID: u16 = 1;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_GETTABLE: u16 = 1;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_GETSET: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_NEWGEN: u16 = 15;
const NFT_MSG_GETGEN: u16 = 16;
const NFT_MSG_NEWOBJ: u16 = 18;
const NFT_MSG_GETOBJ: u16 = 19;
const NFPROTO_INET: u8 = 1;

const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_ECHO: u16 = 0x8;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_APPEND: u16 = 0x800;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;

const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_GEN_ID: u16 = 1;
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_CHAIN_FLAGS: u16 = 10;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_DESC: u16 = 9;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
const NFTA_OBJ_TABLE: u16 = 1;
const NFTA_OBJ_NAME: u16 = 2;
const NFTA_OBJ_TYPE: u16 = 3;
const NFTA_OBJ_DATA: u16 = 4;
const NFT_OBJECT_COUNTER: u32 = 1;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
/// Flags of an nf_tables set: anonymous (`{ tcp, udp }`, a rule's verdict map), owned by its
/// rule; constant; interval; map.
const NFT_SET_ANONYMOUS: u32 = 0x1;
const NFT_SET_CONSTANT: u32 = 0x2;
const NFT_SET_INTERVAL: u32 = 0x4;
const NFT_SET_MAP: u32 = 0x8;
/// nft's data types of set keys (its `datatype.h`): the kernel stores them for `nft list`.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_ICMP6_TYPE: u32 = 29;
const TYPE_VERDICT: u32 = 0xffff_ff00;
/// libnftnl's set user data: the key's byte order (big endian), as `nft` records it.
const UDATA_KEY_BIG_ENDIAN: [u8; 6] = [0, 4, 2, 0, 0, 0];
/// Element lists are split once they pass this many bytes, well under a netlink attribute's
/// 64 KiB (an element, a verdict map's with its chain name, is under 300 bytes).
const ELEMENT_LIST_BYTES: usize = 60_000;
/// Register 1 (16 bytes wide), where `nft` loads every value it compares.
const REG_1: u32 = 1;
const REG_VERDICT: u32 = 0;
/// libnftnl's rule user data type for the comment.
const UDATA_RULE_COMMENT: u8 = 0;

#[derive(Debug, thiserror::Error)]
pub enum NfnlError {
    #[error("netlink: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot enter network namespace {0}: {1}")]
    Netns(String, std::io::Error),
    /// The kernel refused the batch; nothing changed. `index` is the rule edit that caused it.
    #[error("the kernel refused the change (nothing changed): {message}")]
    Refused {
        message: String,
        index: Option<usize>,
    },
    #[error("the ruleset changed since it was read (generation {expected}, now another)")]
    Stale { expected: u32 },
    #[error("netlink answer we cannot read: {0}")]
    Malformed(String),
}

/// One rule edit inside a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit<'a> {
    Delete {
        chain: &'a str,
        handle: u64,
    },
    /// Inserted before the rule `before`, or appended to the chain.
    Insert {
        chain: &'a str,
        rule: &'a RuleDef,
        before: Option<u64>,
    },
}

/// Can this rule be sent without `nft`? The forms NSG rules are rendered to; the fixed rules
/// of the base chains (loopback, neighbour discovery, reverse path), the anonymous
/// `{ tcp, udp }` set and a classified chain's verdict map are left to `nft`.
pub fn encodable(rule: &RuleDef) -> bool {
    rule.stmts.iter().all(|s| {
        !matches!(
            s,
            Stmt::TcpUdp(_)
                | Stmt::NeighbourDiscovery
                | Stmt::ReversePathMissing
                | Stmt::Loopback(_)
                | Stmt::Vmap { .. }
        )
    })
}

/// A netlink attribute writer: type-length-value, each padded to 4 bytes.
#[derive(Default)]
struct Attrs(Vec<u8>);

impl Attrs {
    fn put(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = 4 + value.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(value);
        self.0.resize(self.0.len() + (4 - len % 4) % 4, 0);
        self
    }
    fn u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.put(kind, &v.to_be_bytes())
    }
    fn str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.put(kind, &b)
    }
    /// A nested attribute written in place (its header patched once the inner attributes,
    /// each padded, are written): a table's batch has hundreds of thousands of them.
    fn nest(&mut self, kind: u16, f: impl FnOnce(&mut Attrs)) -> &mut Self {
        let start = self.0.len();
        self.0.extend_from_slice(&[0; 4]);
        f(self);
        let len = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        self.0[start + 2..start + 4].copy_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }
}

/// The expressions of one rule, in `nft`'s encoding.
struct Exprs<'a, 't> {
    list: Attrs,
    /// `meta nfproto` already matched: `nft` adds it before the first address as the inet
    /// family's dependency, once.
    family_known: bool,
    /// Where the anonymous sets a rule needs go, when the rule is part of a whole table's
    /// batch; a lone rule edit has none and leaves such rules to `nft`.
    anon: Option<&'a mut Anon<'t>>,
}

/// One message of a batch before it is numbered: type, flags, attributes.
struct Msg {
    kind: u16,
    flags: u16,
    attrs: Vec<u8>,
}

/// The anonymous sets of a whole table's rules (`{ tcp, udp }`, the neighbour discovery
/// types, a verdict map): created in the same batch right before their rule and referred to by
/// their batch id, as `nft` does; the kernel names them.
struct Anon<'t> {
    table: &'t str,
    next_id: u32,
    msgs: Vec<Msg>,
}

/// One element of a set as sent: its key, whether it ends an interval, and for a verdict map
/// the chain a start element goes to.
struct SetElem<'c> {
    key: Vec<u8>,
    end: bool,
    goto: Option<&'c str>,
}

/// The elements of an interval set as `nft` sends them: each interval's first key, and the key
/// after its last one flagged as an interval end (none after the family's last address); an
/// end at zero before an interval that does not start there. A map's end that the next
/// interval's start replaces is left out (`nft` leaves it out too).
fn interval_elements<'c>(
    width: usize,
    intervals: &[((u128, u128), Option<&'c str>)],
    map: bool,
) -> Vec<SetElem<'c>> {
    let max = if width >= 16 {
        u128::MAX
    } else {
        (1u128 << (8 * width)) - 1
    };
    let key = |v: u128| v.to_be_bytes()[16 - width.min(16)..].to_vec();
    let mut out = vec![];
    if intervals.first().is_some_and(|((a, _), _)| *a != 0) {
        out.push(SetElem {
            key: key(0),
            end: true,
            goto: None,
        });
    }
    for (i, ((a, b), goto)) in intervals.iter().enumerate() {
        out.push(SetElem {
            key: key(*a),
            end: false,
            goto: *goto,
        });
        let next = intervals.get(i + 1).map(|((n, _), _)| *n);
        if *b < max && !(map && next == Some(b + 1)) {
            out.push(SetElem {
                key: key(b + 1),
                end: true,
                goto: None,
            });
        }
    }
    out
}

/// `NEWSETELEM` messages for `elems` of the set `name` (batch id `id`), split so that no
/// element list outgrows a netlink attribute's 16-bit length.
fn element_msgs(table: &str, name: &str, id: u32, elems: &[SetElem]) -> Vec<Msg> {
    let mut lists: Vec<Attrs> = vec![];
    let mut n = 0u16;
    for e in elems {
        if lists.last().is_none_or(|l| l.0.len() > ELEMENT_LIST_BYTES) {
            lists.push(Attrs::default());
            n = 0;
        }
        n += 1;
        let Some(l) = lists.last_mut() else { break };
        l.nest(n, |x| {
            if e.end {
                x.u32(NFTA_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
            }
            x.nest(NFTA_SET_ELEM_KEY, |k| {
                k.put(NFTA_DATA_VALUE, &e.key);
            });
            if let Some(chain) = e.goto {
                x.nest(NFTA_SET_ELEM_DATA, |d| {
                    d.nest(NFTA_DATA_VERDICT, |v| {
                        v.u32(1, NFT_GOTO as u32).str(2, chain);
                    });
                });
            }
        });
    }
    lists
        .into_iter()
        .map(|list| {
            let mut a = Attrs::default();
            a.str(NFTA_SET_ELEM_LIST_TABLE, table)
                .str(NFTA_SET_ELEM_LIST_SET, name)
                .u32(NFTA_SET_ELEM_LIST_SET_ID, id)
                .put(NFTA_SET_ELEM_LIST_ELEMENTS | NLA_F_NESTED, &list.0);
            Msg {
                kind: NFT_MSG_NEWSETELEM,
                flags: NLM_F_REQUEST | NLM_F_CREATE,
                attrs: a.0,
            }
        })
        .collect()
}

/// A set's `NEWSET` message.
struct SetHead<'s> {
    name: &'s str,
    flags: u32,
    key_type: u32,
    key_len: u32,
    /// A verdict map: its data type.
    map: bool,
    id: u32,
    /// The element count, for an anonymous set (the kernel sizes it by this).
    size: Option<u32>,
    userdata: bool,
}

fn set_msg(table: &str, h: &SetHead) -> Msg {
    let mut a = Attrs::default();
    a.str(NFTA_SET_TABLE, table)
        .str(NFTA_SET_NAME, h.name)
        .u32(NFTA_SET_FLAGS, h.flags)
        .u32(NFTA_SET_KEY_TYPE, h.key_type)
        .u32(NFTA_SET_KEY_LEN, h.key_len);
    if h.map {
        a.u32(NFTA_SET_DATA_TYPE, TYPE_VERDICT)
            .u32(NFTA_SET_DATA_LEN, 0);
    }
    a.u32(NFTA_SET_ID, h.id);
    if let Some(n) = h.size {
        a.nest(NFTA_SET_DESC, |d| {
            d.u32(1, n);
        });
    }
    if h.userdata {
        let mut u = UDATA_KEY_BIG_ENDIAN.to_vec();
        u[2..].copy_from_slice(&2u32.to_ne_bytes());
        a.put(NFTA_SET_USERDATA, &u);
    }
    Msg {
        kind: NFT_MSG_NEWSET,
        flags: NLM_F_REQUEST | NLM_F_CREATE,
        attrs: a.0,
    }
}

impl Anon<'_> {
    /// An anonymous constant set of one-byte keys; returns its batch id.
    fn bytes(&mut self, key_type: u32, keys: &[u8]) -> u32 {
        self.next_id += 1;
        let id = self.next_id;
        let elems: Vec<SetElem> = keys
            .iter()
            .map(|k| SetElem {
                key: vec![*k],
                end: false,
                goto: None,
            })
            .collect();
        self.msgs.push(set_msg(
            self.table,
            &SetHead {
                name: ANON_SET,
                flags: NFT_SET_ANONYMOUS | NFT_SET_CONSTANT,
                key_type,
                key_len: 1,
                map: false,
                id,
                size: Some(keys.len() as u32),
                userdata: false,
            },
        ));
        self.msgs
            .extend(element_msgs(self.table, ANON_SET, id, &elems));
        id
    }

    /// A verdict map over disjoint address intervals (`goto` each interval's chain).
    fn vmap(&mut self, v6: bool, entries: &[crate::render::VmapEntry]) -> u32 {
        self.next_id += 1;
        let id = self.next_id;
        let num = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(x) => u128::from(u32::from(x)),
            std::net::IpAddr::V6(x) => u128::from(x),
        };
        let mut intervals: Vec<((u128, u128), Option<&str>)> = entries
            .iter()
            .map(|e| ((num(e.first), num(e.last)), Some(e.chain.as_str())))
            .collect();
        intervals.sort();
        let width = if v6 { 16 } else { 4 };
        let elems = interval_elements(width, &intervals, true);
        self.msgs.push(set_msg(
            self.table,
            &SetHead {
                name: ANON_MAP,
                flags: NFT_SET_ANONYMOUS | NFT_SET_CONSTANT | NFT_SET_INTERVAL | NFT_SET_MAP,
                key_type: if v6 { TYPE_IP6ADDR } else { TYPE_IPADDR },
                key_len: width as u32,
                map: true,
                id,
                size: Some(2 * entries.len() as u32),
                userdata: false,
            },
        ));
        self.msgs
            .extend(element_msgs(self.table, ANON_MAP, id, &elems));
        id
    }
}

/// Names of anonymous sets; the kernel puts a number in place of `%d`.
const ANON_SET: &str = "__set%d";
const ANON_MAP: &str = "__map%d";
const NFT_GOTO: i32 = -4;
const META_IIFNAME: u32 = 6;
const META_OIFNAME: u32 = 7;
const NFTA_LOOKUP_SET: u16 = 1;
const NFTA_LOOKUP_SREG: u16 = 2;
const NFTA_LOOKUP_DREG: u16 = 3;
const NFTA_LOOKUP_SET_ID: u16 = 4;
const NFTA_LOOKUP_FLAGS: u16 = 5;
const NFT_LOOKUP_F_INV: u32 = 1;
/// `fib saddr . iif oif missing`: flags saddr | iif | present, result oif.
const NFTA_FIB_DREG: u16 = 1;
const NFTA_FIB_RESULT: u16 = 2;
const NFTA_FIB_FLAGS: u16 = 3;
const NFTA_FIB_F_SADDR: u32 = 1;
const NFTA_FIB_F_IIF: u32 = 8;
const NFTA_FIB_F_PRESENT: u32 = 0x20;
const NFT_FIB_RESULT_OIF: u32 = 1;

impl Exprs<'_, '_> {
    fn expr(&mut self, name: &str, f: impl FnOnce(&mut Attrs)) {
        self.list.nest(NFTA_LIST_ELEM, |e| {
            e.str(NFTA_EXPR_NAME, name).nest(NFTA_EXPR_DATA, f);
        });
    }
    fn meta(&mut self, key: u32) {
        self.expr("meta", |a| {
            a.u32(2, key).u32(1, REG_1);
        });
    }
    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |a| {
            a.u32(1, REG_1).u32(2, op).nest(3, |d| {
                d.put(NFTA_DATA_VALUE, data);
            });
        });
    }
    fn payload(&mut self, base: u32, offset: u32, len: u32) {
        self.expr("payload", |a| {
            a.u32(1, REG_1).u32(2, base).u32(3, offset).u32(4, len);
        });
    }
    fn bitwise(&mut self, mask: &[u8]) {
        self.expr("bitwise", |a| {
            a.u32(1, REG_1)
                .u32(2, REG_1)
                .u32(3, mask.len() as u32)
                .nest(4, |d| {
                    d.put(NFTA_DATA_VALUE, mask);
                })
                .nest(5, |d| {
                    d.put(NFTA_DATA_VALUE, &vec![0; mask.len()]);
                });
        });
    }
    fn lookup(&mut self, set: &str) {
        self.expr("lookup", |a| {
            a.str(NFTA_LOOKUP_SET, set).u32(NFTA_LOOKUP_SREG, REG_1);
        });
    }
    /// A lookup in an anonymous set of this batch: `invert` for `!=`, `verdict` for a map.
    fn lookup_anon(&mut self, set: &str, id: u32, invert: bool, verdict: bool) {
        self.expr("lookup", |a| {
            a.u32(NFTA_LOOKUP_SREG, REG_1).str(NFTA_LOOKUP_SET, set);
            if verdict {
                a.u32(NFTA_LOOKUP_DREG, REG_VERDICT);
            }
            a.u32(NFTA_LOOKUP_SET_ID, id);
            if invert {
                a.u32(NFTA_LOOKUP_FLAGS, NFT_LOOKUP_F_INV);
            }
        });
    }
    fn family(&mut self, v6: bool) {
        self.meta(META_NFPROTO);
        self.cmp(CMP_EQ, &[if v6 { 10 } else { 2 }]);
        self.family_known = true;
    }
    fn verdict(&mut self, code: i32, chain: Option<&str>) {
        self.expr("immediate", |a| {
            a.u32(1, REG_VERDICT).nest(2, |d| {
                d.nest(NFTA_DATA_VERDICT, |v| {
                    v.u32(1, code as u32);
                    if let Some(c) = chain {
                        v.str(2, c);
                    }
                });
            });
        });
    }
}

const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const CMP_LTE: u32 = 3;
const CMP_GTE: u32 = 5;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;

/// The `expressions` attribute of `rule`; `None` when it is not [`encodable`].
fn encode_exprs(rule: &RuleDef) -> Option<Vec<u8>> {
    encode_rule(rule, None)
}

/// [`encode_exprs`]; with `anon`, also the forms that need an anonymous set or that only a
/// whole table's batch carries (loopback, reverse path), their sets added to `anon`.
fn encode_rule(rule: &RuleDef, anon: Option<&mut Anon>) -> Option<Vec<u8>> {
    let whole = anon.is_some();
    let mut x = Exprs {
        list: Attrs::default(),
        family_known: false,
        anon,
    };
    for s in &rule.stmts {
        match s {
            Stmt::CtEstablished => {
                x.expr("ct", |a| {
                    a.u32(2, 0).u32(1, REG_1);
                });
                // ct state bits are host-endian: established (2) | related (4).
                x.bitwise(&6u32.to_ne_bytes());
                x.cmp(CMP_NEQ, &[0; 4]);
            }
            Stmt::Family(v6) => x.family(*v6),
            Stmt::L4proto(p) => {
                x.meta(META_L4PROTO);
                x.cmp(CMP_EQ, &[*p]);
            }
            Stmt::Addr { v6, side, operand } => {
                if !x.family_known {
                    x.family(*v6);
                }
                let (width, offset) = addr_field(*v6, *side);
                match operand {
                    Operand::Set(name) => {
                        x.payload(BASE_NETWORK, offset, width);
                        x.lookup(name);
                    }
                    Operand::Elem(Elem::Net(net)) => {
                        let bytes = match net.trunc() {
                            IpNet::V4(n) => n.network().octets().to_vec(),
                            IpNet::V6(n) => n.network().octets().to_vec(),
                        };
                        let len = net.prefix_len() as usize;
                        // A whole-byte prefix is a shorter load; any other is masked.
                        if len.is_multiple_of(8) {
                            x.payload(BASE_NETWORK, offset, (len / 8) as u32);
                            x.cmp(CMP_EQ, &bytes[..len / 8]);
                        } else {
                            x.payload(BASE_NETWORK, offset, width);
                            let mask: Vec<u8> = (0..width as usize)
                                .map(|i| {
                                    let bits = len.saturating_sub(i * 8).min(8);
                                    (0xffu16 << (8 - bits)) as u8
                                })
                                .collect();
                            x.bitwise(&mask);
                            x.cmp(CMP_EQ, &bytes);
                        }
                    }
                    Operand::Elem(Elem::Ports(..)) => return None,
                }
            }
            Stmt::Port { side, operand } => {
                let offset = match side {
                    Side::Src => 0,
                    Side::Dst => 2,
                };
                x.payload(BASE_TRANSPORT, offset, 2);
                match operand {
                    Operand::Set(name) => x.lookup(name),
                    Operand::Elem(Elem::Ports(a, b)) if a == b => {
                        x.cmp(CMP_EQ, &a.to_be_bytes());
                    }
                    Operand::Elem(Elem::Ports(a, b)) => {
                        x.cmp(CMP_GTE, &a.to_be_bytes());
                        x.cmp(CMP_LTE, &b.to_be_bytes());
                    }
                    Operand::Elem(Elem::Net(_)) => return None,
                }
            }
            Stmt::Counter(name) => x.expr("objref", |a| {
                a.u32(1, 1).str(2, name);
            }),
            Stmt::Log { group, prefix } => x.expr("log", |a| {
                a.put(1, &group.to_be_bytes()).str(2, prefix);
            }),
            Stmt::Accept => x.verdict(1, None),
            Stmt::Drop => x.verdict(0, None),
            Stmt::Return => x.verdict(-5, None),
            Stmt::Jump(chain) => x.verdict(-3, Some(chain)),
            Stmt::Loopback(input) if whole => {
                x.meta(if *input { META_IIFNAME } else { META_OIFNAME });
                // An interface name compares as the kernel's 16-byte name, NUL-padded.
                let mut name = [0u8; 16];
                name[..2].copy_from_slice(b"lo");
                x.cmp(CMP_EQ, &name);
            }
            Stmt::ReversePathMissing if whole => {
                x.expr("fib", |a| {
                    a.u32(
                        NFTA_FIB_FLAGS,
                        NFTA_FIB_F_SADDR | NFTA_FIB_F_IIF | NFTA_FIB_F_PRESENT,
                    )
                    .u32(NFTA_FIB_RESULT, NFT_FIB_RESULT_OIF)
                    .u32(NFTA_FIB_DREG, REG_1);
                });
                x.cmp(CMP_EQ, &[0; 4]);
            }
            Stmt::TcpUdp(yes) => {
                let id = x.anon.as_mut()?.bytes(TYPE_INET_PROTOCOL, &[6, 17]);
                x.meta(META_L4PROTO);
                x.lookup_anon(ANON_SET, id, !yes, false);
            }
            Stmt::NeighbourDiscovery => {
                let id = x
                    .anon
                    .as_mut()?
                    .bytes(TYPE_ICMP6_TYPE, &[133, 134, 135, 136]);
                x.payload(BASE_TRANSPORT, 0, 1);
                x.lookup_anon(ANON_SET, id, false, false);
            }
            Stmt::Vmap { v6, side, entries } => {
                let id = x.anon.as_mut()?.vmap(*v6, entries);
                if !x.family_known {
                    x.family(*v6);
                }
                let (width, offset) = addr_field(*v6, *side);
                x.payload(BASE_NETWORK, offset, width);
                x.lookup_anon(ANON_MAP, id, false, true);
            }
            Stmt::ReversePathMissing | Stmt::Loopback(_) => return None,
        }
    }
    Some(x.list.0)
}

/// A rule's comment as `nft` sends it: libnftnl's user data TLV, NUL included
/// (`kernel_comment` keeps it under 128 bytes); `None` without a comment.
fn comment_udata(rule: &RuleDef) -> Option<Vec<u8>> {
    let comment = rule.kernel_comment();
    if comment.is_empty() {
        return None;
    }
    let mut u = vec![UDATA_RULE_COMMENT, (comment.len() + 1) as u8];
    u.extend_from_slice(comment.as_bytes());
    u.push(0);
    Some(u)
}

/// The kernel's number of a base chain's hook (`linux/netfilter.h`).
fn hook_number(hook: &str) -> Option<u32> {
    Some(match hook {
        "prerouting" => 0,
        "input" => 1,
        "forward" => 2,
        "output" => 3,
        "postrouting" => 4,
        _ => return None,
    })
}

/// The whole table of `plan` as one batch: `add table; delete table; add table`, then its
/// sets with their elements, counters, chains and rules — what [`TablePlan::replace_text`]
/// sends through `nft`, encoded without it, so that the kernel commits the old table or the
/// new one, never half. With `genid` the kernel refuses it unless the ruleset is still at that
/// generation. Message `i` has sequence number `base + i`; returns the bytes and the number of
/// messages. `None` when something in the plan has no encoding here (nothing to send).
pub fn replace_batch(plan: &TablePlan, genid: Option<u32>, base: u32) -> Option<(Vec<u8>, u32)> {
    let table = plan.table.as_str();
    let mut msgs = vec![];
    let named = |kind: u16| {
        let mut a = Attrs::default();
        a.str(NFTA_TABLE_NAME, table);
        if kind == NFT_MSG_NEWTABLE {
            a.u32(2, 0);
        }
        Msg {
            kind,
            flags: NLM_F_REQUEST
                | if kind == NFT_MSG_NEWTABLE {
                    NLM_F_CREATE
                } else {
                    0
                },
            attrs: a.0,
        }
    };
    msgs.push(named(NFT_MSG_NEWTABLE));
    msgs.push(named(NFT_MSG_DELTABLE));
    msgs.push(named(NFT_MSG_NEWTABLE));
    let mut anon = Anon {
        table,
        next_id: 0,
        msgs: vec![],
    };
    for set in &plan.sets {
        anon.next_id += 1;
        let id = anon.next_id;
        let (key_type, width) = match set.kind {
            SetKind::Ipv4Addr => (TYPE_IPADDR, 4),
            SetKind::Ipv6Addr => (TYPE_IP6ADDR, 16),
            SetKind::InetService => (TYPE_INET_SERVICE, 2),
        };
        msgs.push(set_msg(
            table,
            &SetHead {
                name: &set.name,
                flags: NFT_SET_INTERVAL,
                key_type,
                key_len: width as u32,
                map: false,
                id,
                size: None,
                userdata: true,
            },
        ));
        let mut intervals: Vec<((u128, u128), Option<&str>)> =
            set.elements.iter().map(|e| (e.interval(), None)).collect();
        intervals.sort();
        msgs.extend(element_msgs(
            table,
            &set.name,
            id,
            &interval_elements(width, &intervals, false),
        ));
    }
    for c in &plan.counters {
        let mut a = Attrs::default();
        a.str(NFTA_OBJ_TABLE, table)
            .str(NFTA_OBJ_NAME, c)
            .u32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER)
            .nest(NFTA_OBJ_DATA, |d| {
                d.put(1, &0u64.to_be_bytes()).put(2, &0u64.to_be_bytes());
            });
        msgs.push(Msg {
            kind: NFT_MSG_NEWOBJ,
            flags: NLM_F_REQUEST | NLM_F_CREATE,
            attrs: a.0,
        });
    }
    // Regular chains first so that jumps resolve; base chains last, as `create_text` orders them.
    let mut order: Vec<&crate::render::ChainDef> =
        plan.chains.iter().filter(|c| c.base.is_none()).collect();
    order.extend(plan.chains.iter().filter(|c| c.base.is_some()));
    for c in &order {
        let mut a = Attrs::default();
        a.str(NFTA_CHAIN_TABLE, table).str(NFTA_CHAIN_NAME, &c.name);
        if let Some(b) = &c.base {
            let hook = hook_number(&b.hook)?;
            a.str(NFTA_CHAIN_TYPE, "filter")
                .u32(NFTA_CHAIN_POLICY, 1)
                .nest(NFTA_CHAIN_HOOK, |h| {
                    h.u32(NFTA_HOOK_HOOKNUM, hook)
                        .u32(NFTA_HOOK_PRIORITY, b.priority as u32);
                });
        }
        msgs.push(Msg {
            kind: NFT_MSG_NEWCHAIN,
            flags: NLM_F_REQUEST | NLM_F_CREATE,
            attrs: a.0,
        });
    }
    for c in &order {
        for rule in c.rules.iter() {
            let exprs = encode_rule(rule, Some(&mut anon))?;
            msgs.append(&mut anon.msgs);
            let mut a = Attrs::default();
            a.str(NFTA_RULE_TABLE, table)
                .str(NFTA_RULE_CHAIN, &c.name)
                .put(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &exprs);
            if let Some(u) = comment_udata(rule) {
                a.put(NFTA_RULE_USERDATA, &u);
            }
            msgs.push(Msg {
                kind: NFT_MSG_NEWRULE,
                flags: NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND,
                attrs: a.0,
            });
        }
    }
    let mut begin = Attrs::default();
    if let Some(g) = genid {
        begin.u32(NFNL_BATCH_GENID, g);
    }
    let mut out = message(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        base,
        0,
        NFNL_SUBSYS_NFTABLES,
        &begin.0,
    );
    for (i, m) in msgs.iter().enumerate() {
        out.extend(message(
            nft_type(m.kind),
            m.flags,
            base + 1 + i as u32,
            NFPROTO_INET,
            0,
            &m.attrs,
        ));
    }
    let n = msgs.len() as u32 + 2;
    out.extend(message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        base + n - 1,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    ));
    Some((out, n))
}

/// A message: netlink header, nfgenmsg, attributes.
fn message(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) -> Vec<u8> {
    let len = 16 + 4 + attrs.len();
    let mut m = Vec::with_capacity(len);
    m.extend_from_slice(&(len as u32).to_ne_bytes());
    m.extend_from_slice(&kind.to_ne_bytes());
    m.extend_from_slice(&flags.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.push(family);
    m.push(0); // NFNETLINK_V0
    m.extend_from_slice(&res_id.to_be_bytes());
    m.extend_from_slice(attrs);
    m
}

fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// The batch for `edits` on `table` (family inet), valid only at generation `genid`; `None`
/// when a rule is not [`encodable`]. Edit `i` is sent with sequence number `base + 1 + i`.
pub fn batch(table: &str, edits: &[Edit], genid: u32, base: u32) -> Option<Vec<u8>> {
    let mut out = message(
        NFNL_MSG_BATCH_BEGIN,
        NLM_F_REQUEST,
        base,
        0,
        NFNL_SUBSYS_NFTABLES,
        &Attrs::default().u32(NFNL_BATCH_GENID, genid).0,
    );
    for (i, e) in edits.iter().enumerate() {
        let seq = base + 1 + i as u32;
        let mut a = Attrs::default();
        a.str(NFTA_RULE_TABLE, table);
        match e {
            Edit::Delete { chain, handle } => {
                a.str(NFTA_RULE_CHAIN, chain)
                    .put(NFTA_RULE_HANDLE, &handle.to_be_bytes());
                out.extend(message(
                    nft_type(NFT_MSG_DELRULE),
                    NLM_F_REQUEST | NLM_F_ACK,
                    seq,
                    NFPROTO_INET,
                    0,
                    &a.0,
                ));
            }
            Edit::Insert {
                chain,
                rule,
                before,
            } => {
                a.str(NFTA_RULE_CHAIN, chain);
                a.put(NFTA_RULE_EXPRESSIONS | NLA_F_NESTED, &encode_exprs(rule)?);
                // Without APPEND the kernel inserts before the rule at `position`; with APPEND
                // and no position, at the end.
                let mut flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_ECHO | NLM_F_CREATE;
                match before {
                    Some(h) => {
                        a.put(NFTA_RULE_POSITION, &h.to_be_bytes());
                    }
                    None => flags |= NLM_F_APPEND,
                }
                // The comment as `nft` sends it: libnftnl's user data TLV, NUL included
                // (`kernel_comment` keeps it under 128 bytes).
                if let Some(u) = comment_udata(rule) {
                    a.put(NFTA_RULE_USERDATA, &u);
                }
                out.extend(message(
                    nft_type(NFT_MSG_NEWRULE),
                    flags,
                    seq,
                    NFPROTO_INET,
                    0,
                    &a.0,
                ));
            }
        }
    }
    out.extend(message(
        NFNL_MSG_BATCH_END,
        NLM_F_REQUEST,
        base + 1 + edits.len() as u32,
        0,
        NFNL_SUBSYS_NFTABLES,
        &[],
    ));
    Some(out)
}

/// A table as the kernel holds it, in the kernel's own bytes: enough to tell whether anything
/// in it changed since it was recorded, without `nft` listing every set element. Chains, sets
/// and rules are kept as digests of their attributes (a rule: its expressions and comment, the
/// bytes the kernel echoes when it is inserted and dumps afterwards), rules with their handles.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KernelTable {
    /// Chain → digest of its hook, priority, type, policy and flags.
    pub chains: BTreeMap<String, u64>,
    /// Chain → (handle, digest) of each of its rules, in order.
    pub rules: BTreeMap<String, Vec<(u64, u64)>>,
    /// Named set → digest of its type and flags and of all its elements.
    pub sets: BTreeMap<String, u64>,
    /// Stateful objects (named counters): type and name.
    pub objects: BTreeSet<(u32, String)>,
}

impl KernelTable {
    /// The same table (a chain without rules may be absent from either).
    pub fn same(&self, other: &KernelTable) -> bool {
        let rules = |k: &KernelTable| {
            k.rules
                .iter()
                .filter(|(_, r)| !r.is_empty())
                .map(|(c, r)| (c.clone(), r.clone()))
                .collect::<BTreeMap<_, _>>()
        };
        self.chains == other.chains
            && self.sets == other.sets
            && self.objects == other.objects
            && rules(self) == rules(other)
    }
}

/// FNV-1a over the given byte strings: a digest that stays the same across versions (it is
/// recorded in the state file), each part's length mixed in so that parts cannot run together.
fn digest<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    for p in parts {
        for b in (p.len() as u32).to_le_bytes() {
            eat(b);
        }
        for &b in p {
            eat(b);
        }
    }
    h
}

/// A rule in the kernel: its handle and the digest of its expressions and comment.
pub type RuleId = (u64, u64);

/// A rule's handle and digest from a NEWRULE message's attributes (a dump entry or an echo).
pub fn rule_digest(attrs: &[u8]) -> Option<RuleId> {
    let handle = u64::from_be_bytes(attr(attrs, NFTA_RULE_HANDLE)?.try_into().ok()?);
    let d = digest([
        attr(attrs, NFTA_RULE_EXPRESSIONS).unwrap_or_default(),
        attr(attrs, NFTA_RULE_USERDATA).unwrap_or_default(),
    ]);
    Some((handle, d))
}

/// A NUL-terminated string attribute.
fn str_attr(attrs: &[u8], kind: u16) -> Option<&str> {
    let v = attr(attrs, kind)?;
    std::str::from_utf8(v.strip_suffix(&[0]).unwrap_or(v)).ok()
}

/// A named set's digest: its type and flags as the kernel dumps them, and its elements as
/// merged numeric intervals — the same whether they come from a dump of the kernel's interval
/// elements or from the plan just committed (so recording a table needs no element dump).
fn set_digest(head: [&[u8]; 4], intervals: &[(u128, u128)]) -> u64 {
    let mut v = intervals.to_vec();
    v.sort_unstable();
    let mut merged: Vec<(u128, u128)> = vec![];
    for (a, b) in v {
        match merged.last_mut() {
            Some(l) if a <= l.1.saturating_add(1) => l.1 = l.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let bytes: Vec<[u8; 32]> = merged
        .iter()
        .map(|(a, b)| {
            let mut x = [0u8; 32];
            x[..16].copy_from_slice(&a.to_be_bytes());
            x[16..].copy_from_slice(&b.to_be_bytes());
            x
        })
        .collect();
    digest(head.into_iter().chain(bytes.iter().map(|x| &x[..])))
}

/// The intervals of an interval set's dumped element lists: each start key opens one, an end
/// key (flagged) closes it just before; one still open at the end runs to the top of the key
/// space. Elements that cannot be read are left out (the digest then differs: drift).
fn dumped_intervals<'a>(lists: impl Iterator<Item = &'a [u8]>) -> Vec<(u128, u128)> {
    let mut keys: Vec<(u128, bool, usize)> = vec![];
    for mut list in lists {
        while list.len() >= 4 {
            let len = u16::from_ne_bytes([list[0], list[1]]) as usize;
            if len < 4 || len > list.len() {
                break;
            }
            let e = &list[4..len];
            let key = attr(e, NFTA_SET_ELEM_KEY).and_then(|k| attr(k, NFTA_DATA_VALUE));
            let end = attr(e, NFTA_SET_ELEM_FLAGS)
                .and_then(|f| f.try_into().ok())
                .is_some_and(|f: [u8; 4]| u32::from_be_bytes(f) & NFT_SET_ELEM_INTERVAL_END != 0);
            if let Some(k) = key.filter(|k| !k.is_empty() && k.len() <= 16) {
                let v = k.iter().fold(0u128, |v, b| (v << 8) | u128::from(*b));
                keys.push((v, !end, k.len()));
            }
            list = &list[((len + 3) & !3).min(list.len())..];
        }
    }
    // Ends before starts at the same key: an interval may start where the last one ended.
    keys.sort_unstable();
    let mut out = vec![];
    let mut open: Option<(u128, usize)> = None;
    for (k, start, width) in keys {
        if let Some((a, _)) = open {
            if k > a {
                out.push((a, k - 1));
            }
            open = None;
        }
        if start {
            open = Some((k, width));
        }
    }
    if let Some((a, width)) = open {
        let top = if width >= 16 {
            u128::MAX
        } else {
            (1u128 << (8 * width)) - 1
        };
        out.push((a, top));
    }
    out
}

/// Read a table from dump replies (`chains`, `rules`, `sets`, `objects`: the payloads of each
/// dump, nfgenmsg included; `elements`: set name → its element dump payloads). Entries of other
/// tables are skipped, anonymous sets are part of their rule. With `known`, the plan the kernel
/// just committed, its sets' elements are taken from it instead of `elements`. `None` on any
/// entry that lacks the attributes the kernel always sends.
pub fn read_table(
    table: &str,
    chains: &[Vec<u8>],
    rules: &[Vec<u8>],
    sets: &[Vec<u8>],
    elements: &BTreeMap<String, Vec<Vec<u8>>>,
    objects: &[Vec<u8>],
    known: Option<&TablePlan>,
) -> Option<KernelTable> {
    let mut k = KernelTable::default();
    let body = |p: &Vec<u8>| p.get(4..).map(<[u8]>::to_vec);
    for p in chains {
        let a = body(p)?;
        if str_attr(&a, NFTA_CHAIN_TABLE)? != table {
            continue;
        }
        let d = digest([
            attr(&a, NFTA_CHAIN_HOOK).unwrap_or_default(),
            attr(&a, NFTA_CHAIN_POLICY).unwrap_or_default(),
            attr(&a, NFTA_CHAIN_TYPE).unwrap_or_default(),
            attr(&a, NFTA_CHAIN_FLAGS).unwrap_or_default(),
        ]);
        k.chains
            .insert(str_attr(&a, NFTA_CHAIN_NAME)?.to_string(), d);
    }
    for p in rules {
        let a = body(p)?;
        if str_attr(&a, NFTA_RULE_TABLE)? != table {
            continue;
        }
        let chain = str_attr(&a, NFTA_RULE_CHAIN)?.to_string();
        k.rules.entry(chain).or_default().push(rule_digest(&a)?);
    }
    for p in sets {
        let a = body(p)?;
        if str_attr(&a, NFTA_SET_TABLE)? != table {
            continue;
        }
        let flags = attr(&a, NFTA_SET_FLAGS).unwrap_or_default();
        let anonymous = flags
            .try_into()
            .map(|f: [u8; 4]| u32::from_be_bytes(f) & NFT_SET_ANONYMOUS != 0)
            .unwrap_or(false);
        if anonymous {
            continue;
        }
        let name = str_attr(&a, NFTA_SET_NAME)?.to_string();
        let intervals = match known.and_then(|p| p.set(&name)) {
            Some(set) => set.elements.iter().map(Elem::interval).collect(),
            None => dumped_intervals(
                elements
                    .get(&name)
                    .into_iter()
                    .flatten()
                    .filter_map(|e| attr(e.get(4..)?, NFTA_SET_ELEM_LIST_ELEMENTS)),
            ),
        };
        let head = [
            flags,
            attr(&a, NFTA_SET_KEY_TYPE).unwrap_or_default(),
            attr(&a, NFTA_SET_KEY_LEN).unwrap_or_default(),
            attr(&a, NFTA_SET_USERDATA).unwrap_or_default(),
        ];
        k.sets.insert(name, set_digest(head, &intervals));
    }
    for p in objects {
        let a = body(p)?;
        if str_attr(&a, NFTA_OBJ_TABLE)? != table {
            continue;
        }
        let kind = u32::from_be_bytes(attr(&a, NFTA_OBJ_TYPE)?.try_into().ok()?);
        k.objects
            .insert((kind, str_attr(&a, NFTA_OBJ_NAME)?.to_string()));
    }
    Some(k)
}

/// The payloads of the dumps that make up one table.
struct Dumps {
    chains: Vec<Vec<u8>>,
    rules: Vec<Vec<u8>>,
    sets: Vec<Vec<u8>>,
    elements: BTreeMap<String, Vec<Vec<u8>>>,
    objects: Vec<Vec<u8>>,
}

/// A table as `host diff` reports it, read by netlink dumps instead of `nft -j list table`
/// (which needs the `nft` binary and prints every set element as JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// The same dumps as [`Nfnl::table`] reads them: chains, rules by handle and digest.
    pub kernel: KernelTable,
    /// Chain → its rules' comments, in order, as `nft list` shows them (empty without one).
    pub comments: BTreeMap<String, Vec<String>>,
    /// Named set → its key type as `nft` names it (empty when unknown) and its elements as
    /// inclusive numeric intervals.
    pub sets: SetIntervals,
    /// Named counter → packets, bytes.
    pub counters: BTreeMap<String, (u64, u64)>,
}

/// Named set → its key type as `nft` names it and its elements as inclusive intervals.
pub type SetIntervals = BTreeMap<String, (String, Vec<(u128, u128)>)>;

/// nft's name of a set key type, for messages that print elements.
fn key_type_name(t: u32) -> &'static str {
    match t {
        TYPE_IPADDR => "ipv4_addr",
        TYPE_IP6ADDR => "ipv6_addr",
        TYPE_INET_PROTOCOL => "inet_proto",
        TYPE_INET_SERVICE => "inet_service",
        _ => "",
    }
}

/// A rule's comment from its user data (libnftnl's TLVs); empty without one.
fn udata_comment(udata: &[u8]) -> String {
    let mut rest = udata;
    while let [kind, len, tail @ ..] = rest {
        let Some(value) = tail.get(..usize::from(*len)) else {
            break;
        };
        if *kind == UDATA_RULE_COMMENT {
            let value = value.strip_suffix(&[0]).unwrap_or(value);
            return String::from_utf8_lossy(value).into_owned();
        }
        rest = &tail[usize::from(*len)..];
    }
    String::new()
}

/// A u64 attribute in network byte order.
fn be_u64(attrs: &[u8], kind: u16) -> Option<u64> {
    Some(u64::from_be_bytes(attr(attrs, kind)?.try_into().ok()?))
}

/// Read a [`Listing`] from dump replies (the same payloads as [`read_table`], all set
/// elements dumped). `None` on any entry that lacks the attributes the kernel always sends.
pub fn read_listing(
    table: &str,
    chains: &[Vec<u8>],
    rules: &[Vec<u8>],
    sets: &[Vec<u8>],
    elements: &BTreeMap<String, Vec<Vec<u8>>>,
    objects: &[Vec<u8>],
) -> Option<Listing> {
    const NFTA_COUNTER_BYTES: u16 = 1;
    const NFTA_COUNTER_PACKETS: u16 = 2;
    let mut l = Listing {
        kernel: read_table(table, chains, rules, sets, elements, objects, None)?,
        ..Listing::default()
    };
    for p in rules {
        let a = p.get(4..)?;
        if str_attr(a, NFTA_RULE_TABLE)? != table {
            continue;
        }
        l.comments
            .entry(str_attr(a, NFTA_RULE_CHAIN)?.to_string())
            .or_default()
            .push(udata_comment(
                attr(a, NFTA_RULE_USERDATA).unwrap_or_default(),
            ));
    }
    for p in sets {
        let a = p.get(4..)?;
        if str_attr(a, NFTA_SET_TABLE)? != table {
            continue;
        }
        let name = str_attr(a, NFTA_SET_NAME)?;
        if !l.kernel.sets.contains_key(name) {
            continue;
        }
        let key_type = attr(a, NFTA_SET_KEY_TYPE)
            .and_then(|t| Some(u32::from_be_bytes(t.try_into().ok()?)))
            .unwrap_or_default();
        let intervals = dumped_intervals(
            elements
                .get(name)
                .into_iter()
                .flatten()
                .filter_map(|e| attr(e.get(4..)?, NFTA_SET_ELEM_LIST_ELEMENTS)),
        );
        l.sets.insert(
            name.to_string(),
            (key_type_name(key_type).to_string(), intervals),
        );
    }
    for p in objects {
        let a = p.get(4..)?;
        if str_attr(a, NFTA_OBJ_TABLE)? != table {
            continue;
        }
        if u32::from_be_bytes(attr(a, NFTA_OBJ_TYPE)?.try_into().ok()?) != NFT_OBJECT_COUNTER {
            continue;
        }
        let data = attr(a, NFTA_OBJ_DATA).unwrap_or_default();
        l.counters.insert(
            str_attr(a, NFTA_OBJ_NAME)?.to_string(),
            (
                be_u64(data, NFTA_COUNTER_PACKETS).unwrap_or(0),
                be_u64(data, NFTA_COUNTER_BYTES).unwrap_or(0),
            ),
        );
    }
    Some(l)
}

/// A netfilter netlink socket in the caller's namespace or a named one.
pub struct Nfnl {
    socket: Socket,
    seq: u32,
}

impl Nfnl {
    /// Open a socket in `netns` (a dedicated thread enters it; a socket stays in the namespace
    /// it was made in, and the caller's thread never moves).
    pub fn open(netns: Option<&str>) -> Result<Nfnl, NfnlError> {
        let socket = match netns {
            None => Self::socket()?,
            Some(ns) => {
                let ns = ns.to_string();
                std::thread::spawn(move || {
                    crate::routes::enter_netns(&ns).map_err(|e| NfnlError::Netns(ns.clone(), e))?;
                    Self::socket()
                })
                .join()
                .map_err(|_| NfnlError::Malformed("netlink thread panicked".into()))??
            }
        };
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Nfnl { socket, seq })
    }

    fn socket() -> Result<Socket, NfnlError> {
        let mut s = Socket::new(NETLINK_NETFILTER)?;
        s.bind_auto()?;
        s.connect(&SocketAddr::new(0, 0))?;
        Ok(s)
    }

    /// The ruleset's generation: it moves on with every committed transaction in the namespace.
    pub fn generation(&mut self) -> Result<u32, NfnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = message(nft_type(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, 0, 0, &[]);
        self.socket.send(&req, 0)?;
        loop {
            for (kind, mseq, payload) in self.receive()? {
                if mseq != seq {
                    continue;
                }
                if kind == nft_type(NFT_MSG_NEWGEN) {
                    return attr(payload.get(4..).unwrap_or_default(), NFTA_GEN_ID)
                        .and_then(|v| Some(u32::from_be_bytes(v.try_into().ok()?)))
                        .ok_or_else(|| NfnlError::Malformed("generation without an id".into()));
                }
                if kind == NLMSG_ERROR {
                    let code = error_code(&payload)?;
                    return Err(NfnlError::Io(std::io::Error::from_raw_os_error(-code)));
                }
            }
        }
    }

    /// Apply `edits` to `table` as one transaction, refused by the kernel unless the ruleset is
    /// still at `genid`. Returns, per edit, the handle and digest ([`KernelTable`]) of the rule
    /// it inserted, as the kernel echoed it (`None` for a delete). `None` overall when a rule
    /// cannot be encoded (nothing was sent).
    pub fn change(
        &mut self,
        table: &str,
        edits: &[Edit],
        genid: u32,
    ) -> Result<Option<Vec<Option<RuleId>>>, NfnlError> {
        let base = self.seq.wrapping_add(1);
        self.seq = base.wrapping_add(edits.len() as u32 + 1);
        let Some(msg) = batch(table, edits, genid, base) else {
            return Ok(None);
        };
        self.socket.send(&msg, 0)?;
        let mut handles: Vec<Option<RuleId>> = vec![None; edits.len()];
        let mut acked = vec![false; edits.len()];
        let mut refused: Option<(i32, Option<usize>)> = None;
        while acked.iter().any(|a| !a) && refused.is_none() {
            for (kind, seq, payload) in self.receive()? {
                let i = seq.wrapping_sub(base).wrapping_sub(1) as usize;
                if kind == NLMSG_ERROR {
                    let code = error_code(&payload)?;
                    if code != 0 {
                        // An error for the batch itself (the generation check) carries the
                        // BATCH_BEGIN sequence number.
                        let index = (i < edits.len()).then_some(i);
                        refused = refused.or(Some((code, index)));
                    } else if i < edits.len() {
                        acked[i] = true;
                    }
                } else if kind == nft_type(NFT_MSG_NEWRULE) && i < edits.len() {
                    handles[i] = rule_digest(payload.get(4..).unwrap_or_default());
                }
            }
        }
        if let Some((code, index)) = refused {
            // ERESTART: the generation moved on (someone changed the ruleset).
            if -code == 85 {
                return Err(NfnlError::Stale { expected: genid });
            }
            return Err(NfnlError::Refused {
                message: std::io::Error::from_raw_os_error(-code).to_string(),
                index,
            });
        }
        for (i, e) in edits.iter().enumerate() {
            if matches!(e, Edit::Insert { .. }) && handles[i].is_none() {
                return Err(NfnlError::Malformed(format!(
                    "no handle echoed for inserted rule {i}"
                )));
            }
        }
        Ok(Some(handles))
    }

    /// Replace `table` whole with `plan` in one transaction ([`replace_batch`]), refused by
    /// the kernel unless the ruleset is at `genid` (when given). Returns the generation the
    /// commit made; `Ok(None)` when the plan has a form not encoded here (nothing was sent).
    pub fn replace(
        &mut self,
        plan: &TablePlan,
        genid: Option<u32>,
    ) -> Result<Option<u32>, NfnlError> {
        let base = self.seq.wrapping_add(1);
        let Some((msg, n)) = replace_batch(plan, genid, base) else {
            return Ok(None);
        };
        self.seq = base.wrapping_add(n);
        // The batch goes in one write (the kernel takes a batch from one datagram), larger
        // than the default send buffer for a big set: raise it for this socket (root only).
        let size = libc::c_int::try_from(msg.len() + 4096).unwrap_or(libc::c_int::MAX);
        // SAFETY: setsockopt reads `size` for the given length; the descriptor is ours.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.socket),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        self.socket.send(&msg, 0)?;
        // Only errors are answered (no message asks for an ACK); the kernel has handled the
        // batch before `send` returns, so its errors come before the generation's reply.
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = message(nft_type(NFT_MSG_GETGEN), NLM_F_REQUEST, seq, 0, 0, &[]);
        self.socket.send(&req, 0)?;
        let mut refused: Option<(i32, u32)> = None;
        loop {
            for (kind, mseq, payload) in self.receive()? {
                if kind == NLMSG_ERROR && mseq.wrapping_sub(base) < n {
                    let code = error_code(&payload)?;
                    if code != 0 {
                        refused = refused.or(Some((code, mseq.wrapping_sub(base))));
                    }
                    continue;
                }
                if mseq != seq {
                    continue;
                }
                if kind == NLMSG_ERROR {
                    let code = error_code(&payload)?;
                    return Err(NfnlError::Io(std::io::Error::from_raw_os_error(-code)));
                }
                if kind != nft_type(NFT_MSG_NEWGEN) {
                    continue;
                }
                if let Some((code, at)) = refused {
                    if -code == 85 {
                        return Err(NfnlError::Stale {
                            expected: genid.unwrap_or_default(),
                        });
                    }
                    return Err(NfnlError::Refused {
                        message: format!(
                            "{} (message {at} of the table's batch)",
                            std::io::Error::from_raw_os_error(-code)
                        ),
                        index: None,
                    });
                }
                return attr(payload.get(4..).unwrap_or_default(), NFTA_GEN_ID)
                    .and_then(|v| Some(u32::from_be_bytes(v.try_into().ok()?)))
                    .map(Some)
                    .ok_or_else(|| NfnlError::Malformed("generation without an id".into()));
            }
        }
    }

    /// The payloads of one dump request (`kind`, family inet, with `attrs` as its filter),
    /// read up to the kernel's DONE; `Ok(None)` when the kernel answers ENOENT (no such
    /// table or set).
    fn dump(
        &mut self,
        kind: u16,
        reply: u16,
        attrs: &[u8],
    ) -> Result<Option<Vec<Vec<u8>>>, NfnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let req = message(
            nft_type(kind),
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            NFPROTO_INET,
            0,
            attrs,
        );
        self.socket.send(&req, 0)?;
        let mut out = vec![];
        loop {
            for (k, mseq, payload) in self.receive()? {
                if mseq != seq {
                    continue;
                }
                if k == NLMSG_DONE {
                    return Ok(Some(out));
                }
                if k == NLMSG_ERROR {
                    let code = error_code(&payload)?;
                    if code == 0 {
                        continue;
                    }
                    if -code == libc::ENOENT {
                        return Ok(None);
                    }
                    return Err(NfnlError::Io(std::io::Error::from_raw_os_error(-code)));
                }
                if k == nft_type(reply) {
                    out.push(payload);
                }
            }
        }
    }

    /// Does `table` (family inet) exist?
    pub fn has_table(&mut self, table: &str) -> Result<bool, NfnlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let attrs = Attrs::default().str(NFTA_TABLE_NAME, table).0.clone();
        let req = message(
            nft_type(NFT_MSG_GETTABLE),
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            NFPROTO_INET,
            0,
            &attrs,
        );
        self.socket.send(&req, 0)?;
        loop {
            for (k, mseq, payload) in self.receive()? {
                if mseq != seq {
                    continue;
                }
                if k == nft_type(NFT_MSG_NEWTABLE) {
                    return Ok(true);
                }
                if k == NLMSG_ERROR {
                    return match error_code(&payload)? {
                        0 => Ok(true),
                        c if -c == libc::ENOENT => Ok(false),
                        c => Err(NfnlError::Io(std::io::Error::from_raw_os_error(-c))),
                    };
                }
            }
        }
    }

    /// The table as the kernel holds it (dumps of its chains, rules, sets with their elements
    /// and objects); `None` when it does not exist. The dumps are several reads: a caller
    /// that needs them consistent checks the generation did not move around them.
    pub fn table(&mut self, table: &str) -> Result<Option<KernelTable>, NfnlError> {
        self.table_as(table, None)
    }

    /// [`Nfnl::table`] right after `plan` was committed: the elements of its sets are taken
    /// from the plan instead of dumped (a 155k-element set's dump is a large part of an apply).
    pub fn table_as(
        &mut self,
        table: &str,
        known: Option<&TablePlan>,
    ) -> Result<Option<KernelTable>, NfnlError> {
        let Some(d) = self.dumps(table, known)? else {
            return Ok(None);
        };
        read_table(
            table,
            &d.chains,
            &d.rules,
            &d.sets,
            &d.elements,
            &d.objects,
            known,
        )
        .map(Some)
        .ok_or_else(|| NfnlError::Malformed(format!("a dump of table {table}")))
    }

    /// The table as `host diff` reports it ([`Listing`]), from the same dumps as
    /// [`Nfnl::table`]; `None` when it does not exist.
    pub fn listing(&mut self, table: &str) -> Result<Option<Listing>, NfnlError> {
        let Some(d) = self.dumps(table, None)? else {
            return Ok(None);
        };
        read_listing(table, &d.chains, &d.rules, &d.sets, &d.elements, &d.objects)
            .map(Some)
            .ok_or_else(|| NfnlError::Malformed(format!("a dump of table {table}")))
    }

    /// The dumps of a table's chains, rules, sets, set elements (but those of `known`'s sets)
    /// and objects; `None` when the table does not exist.
    fn dumps(
        &mut self,
        table: &str,
        known: Option<&TablePlan>,
    ) -> Result<Option<Dumps>, NfnlError> {
        if !self.has_table(table)? {
            return Ok(None);
        }
        let named = |kind: u16| Attrs::default().str(kind, table).0.clone();
        let gone = || NfnlError::Malformed(format!("table {table} vanished while it was read"));
        let chains = self
            .dump(NFT_MSG_GETCHAIN, NFT_MSG_NEWCHAIN, &[])?
            .ok_or_else(gone)?;
        let rules = self
            .dump(NFT_MSG_GETRULE, NFT_MSG_NEWRULE, &named(NFTA_RULE_TABLE))?
            .ok_or_else(gone)?;
        let sets = self
            .dump(NFT_MSG_GETSET, NFT_MSG_NEWSET, &named(NFTA_SET_TABLE))?
            .ok_or_else(gone)?;
        let mut elements = BTreeMap::new();
        for p in &sets {
            let Some(name) = p.get(4..).and_then(|a| str_attr(a, NFTA_SET_NAME)) else {
                continue;
            };
            if known.is_some_and(|k| k.set(name).is_some()) {
                continue;
            }
            let mut a = Attrs::default();
            a.str(NFTA_SET_ELEM_LIST_TABLE, table)
                .str(NFTA_SET_ELEM_LIST_SET, name);
            let elems = self
                .dump(NFT_MSG_GETSETELEM, NFT_MSG_NEWSETELEM, &a.0)?
                .ok_or_else(gone)?;
            elements.insert(name.to_string(), elems);
        }
        let objects = self
            .dump(NFT_MSG_GETOBJ, NFT_MSG_NEWOBJ, &named(NFTA_OBJ_TABLE))?
            .ok_or_else(gone)?;
        Ok(Some(Dumps {
            chains,
            rules,
            sets,
            elements,
            objects,
        }))
    }

    fn receive(&self) -> Result<Vec<Message>, NfnlError> {
        // A large buffer: the kernel sizes each dump datagram by the reader's buffer (up to
        // 32 KiB), and a set's element dump walks the set from its start for every datagram.
        let mut buf = Vec::with_capacity(1 << 16);
        self.socket.recv_from(&mut buf, 0)?;
        messages(&buf)
    }
}

/// A received message: type, sequence number, payload after the netlink header.
pub type Message = (u16, u32, Vec<u8>);

/// The messages of one datagram, as the kernel frames them (a dump's `NLMSG_DONE` included:
/// it ends the dump); an error for any framing that does
/// not add up (never a panic: the bytes come from outside).
pub fn messages(buf: &[u8]) -> Result<Vec<Message>, NfnlError> {
    let mut out = vec![];
    let mut rest = buf;
    while !rest.is_empty() {
        let header: [u8; 16] = rest
            .get(..16)
            .and_then(|h| h.try_into().ok())
            .ok_or_else(|| NfnlError::Malformed(format!("{} trailing bytes", rest.len())))?;
        let len = u32::from_ne_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len < 16 || len > rest.len() {
            return Err(NfnlError::Malformed(format!("message length {len}")));
        }
        let kind = u16::from_ne_bytes([header[4], header[5]]);
        let seq = u32::from_ne_bytes([header[8], header[9], header[10], header[11]]);
        out.push((kind, seq, rest[16..len].to_vec()));
        rest = rest.get((len + 3) & !3..).unwrap_or_default();
    }
    Ok(out)
}

fn error_code(payload: &[u8]) -> Result<i32, NfnlError> {
    payload
        .get(0..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or_else(|| NfnlError::Malformed("short error message".into()))
}

/// The value of the first top-level attribute of type `kind`.
pub fn attr(mut attrs: &[u8], kind: u16) -> Option<&[u8]> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let k = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if k == kind {
            return Some(&attrs[4..len]);
        }
        attrs = &attrs[((len + 3) & !3).min(attrs.len())..];
    }
    None
}

/// An address's width and offset in the network header (IPv4 or IPv6), by side.
fn addr_field(v6: bool, side: Side) -> (u32, u32) {
    match (v6, side) {
        (false, Side::Src) => (4, 12),
        (false, Side::Dst) => (4, 16),
        (true, Side::Src) => (16, 8),
        (true, Side::Dst) => (16, 24),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes frame into messages or an error; framed messages read back as written.
        #[test]
        fn replies_never_panic_and_frames_read_back(
            junk in proptest::collection::vec(any::<u8>(), 0..200),
            msgs in proptest::collection::vec((16u16..0x1000, any::<u32>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..5),
        ) {
            let _ = messages(&junk);
            let _ = attr(&junk, 1);
            let mut buf = vec![];
            for (kind, seq, attrs) in &msgs {
                buf.extend(message(*kind, 0, *seq, 0, 0, &Attrs::default().put(1, attrs).0));
            }
            let back = messages(&buf).unwrap();
            prop_assert_eq!(back.len(), msgs.len());
            for ((kind, seq, payload), (k, s, attrs)) in back.iter().zip(&msgs) {
                prop_assert_eq!((kind, seq), (k, s));
                prop_assert_eq!(attr(&payload[4..], 1), Some(&attrs[..]));
            }
        }
    }

    proptest! {
        /// Dump entries of any bytes are read or refused, never a panic; entries that carry
        /// the attributes the kernel sends are read back into the table they name.
        #[test]
        fn listing_entries_never_panic_and_read_back(
            junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..6),
            comments in proptest::collection::vec("[a-z/ 0-9]{0,20}", 0..6),
            packets in any::<u64>(),
            bytes in any::<u64>(),
        ) {
            let elements = BTreeMap::from([("s".to_string(), junk.clone())]);
            let _ = read_listing("t", &junk, &junk, &junk, &elements, &junk);
            let _ = udata_comment(junk.first().map(Vec::as_slice).unwrap_or_default());
            let entry = |h: u64, comment: &str| {
                let mut u = vec![UDATA_RULE_COMMENT, (comment.len() + 1) as u8];
                u.extend_from_slice(comment.as_bytes());
                u.push(0);
                let mut a = Attrs::default();
                a.str(NFTA_RULE_TABLE, "t")
                    .str(NFTA_RULE_CHAIN, "c")
                    .put(NFTA_RULE_HANDLE, &h.to_be_bytes())
                    .put(NFTA_RULE_USERDATA, &u);
                let mut p = vec![NFPROTO_INET, 0, 0, 0];
                p.extend(a.0);
                p
            };
            let rules: Vec<Vec<u8>> = comments
                .iter()
                .enumerate()
                .map(|(i, c)| entry(i as u64 + 1, c))
                .collect();
            let mut a = Attrs::default();
            a.str(NFTA_OBJ_TABLE, "t")
                .str(NFTA_OBJ_NAME, "n")
                .u32(NFTA_OBJ_TYPE, NFT_OBJECT_COUNTER)
                .nest(NFTA_OBJ_DATA, |d| {
                    d.put(1, &bytes.to_be_bytes()).put(2, &packets.to_be_bytes());
                });
            let mut object = vec![NFPROTO_INET, 0, 0, 0];
            object.extend(a.0);
            let l = read_listing("t", &[], &rules, &[], &BTreeMap::new(), &[object]).unwrap();
            let got: Vec<String> = l.comments.get("c").cloned().unwrap_or_default();
            prop_assert_eq!(got, comments);
            prop_assert_eq!(l.counters.get("n"), Some(&(packets, bytes)));
        }

        fn dump_entries_never_panic_and_read_back(
            junk in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..60), 0..6),
            handles in proptest::collection::vec(any::<u64>(), 0..6),
            comment in "[a-z/ 0-9]{0,20}",
        ) {
            let elements = BTreeMap::from([("s".to_string(), junk.clone())]);
            let _ = read_table("t", &junk, &junk, &junk, &elements, &junk, None);
            let entry = |table: &str, h: u64| {
                let mut a = Attrs::default();
                a.str(NFTA_RULE_TABLE, table)
                    .str(NFTA_RULE_CHAIN, "c")
                    .put(NFTA_RULE_HANDLE, &h.to_be_bytes())
                    .put(NFTA_RULE_USERDATA, comment.as_bytes());
                let mut p = vec![NFPROTO_INET, 0, 0, 0];
                p.extend(a.0);
                p
            };
            let mut rules: Vec<Vec<u8>> = handles.iter().map(|&h| entry("t", h)).collect();
            rules.push(entry("other", 7));
            let k = read_table("t", &[], &rules, &[], &BTreeMap::new(), &[], None).unwrap();
            let got: Vec<u64> = k.rules.get("c").into_iter().flatten().map(|r| r.0).collect();
            prop_assert_eq!(got, handles);
        }
    }

    proptest! {
        /// A whole table's batch of any interval set frames into exactly the messages it
        /// counts, each element list within a netlink attribute's length, and its elements
        /// alternate start and end as the kernel's interval sets need.
        #[test]
        fn a_table_batch_frames_and_its_intervals_alternate(
            starts in proptest::collection::btree_set(any::<u32>(), 0..3000),
        ) {
            let starts: Vec<u32> = starts.into_iter().collect();
            // Disjoint intervals: each from one start to just before the next.
            let elements: Vec<Elem> = starts
                .windows(2)
                .map(|w| Elem::Net(IpNet::V4(ipnet::Ipv4Net::new(w[0].into(), 32).unwrap())))
                .collect();
            let plan = TablePlan {
                table: "t".into(),
                nsg: "n".into(),
                target: crate::render::Target::Subnet("s".into()),
                hook: crate::render::HookMode::Host,
                log_group: 100,
                scope: vec![],
                sets: vec![crate::render::SetDef {
                    name: "s4".into(),
                    kind: SetKind::Ipv4Addr,
                    elements: elements.clone().into(),
                }],
                counters: vec!["c".into()],
                chains: vec![crate::render::ChainDef {
                    name: "nsg_in".into(),
                    base: None,
                    rules: vec![rule(vec![Stmt::TcpUdp(false), Stmt::Counter("c".into()), Stmt::Drop])].into(),
                }],
                rules: vec![],
                notes: vec![],
            };
            let (bytes, n) = replace_batch(&plan, Some(7), 100).unwrap();
            let msgs = messages(&bytes).unwrap();
            prop_assert_eq!(msgs.len() as u32, n);
            let mut ends = vec![];
            let mut lists = vec![];
            for (kind, _, payload) in &msgs {
                if *kind == nft_type(NFT_MSG_NEWSETELEM) {
                    let list = attr(&payload[4..], NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
                    if str_attr(&payload[4..], NFTA_SET_ELEM_LIST_SET) == Some("s4") {
                        lists.push(list);
                    }
                    let mut rest = list;
                    while rest.len() >= 4 {
                        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
                        prop_assert!(len >= 4 && len <= rest.len());
                        ends.push(attr(&rest[4..len], NFTA_SET_ELEM_FLAGS).is_some());
                        rest = &rest[(len + 3) & !3..];
                    }
                }
            }
            // The tcp/udp set's two elements, then the named set's (sent first).
            let named = &ends[..ends.len() - 2];
            prop_assert!(named.windows(2).all(|w| w[0] != w[1]) || named.is_empty());
            // Read back as a dump is read, the elements are the plan's intervals: the digest
            // recorded from the plan is the one a later dump gives.
            let model: Vec<(u128, u128)> = elements.iter().map(Elem::interval).collect();
            let head: [&[u8]; 4] = [b"f", b"t", b"l", b"u"];
            prop_assert_eq!(
                set_digest(head, &dumped_intervals(lists.into_iter())),
                set_digest(head, &model)
            );
        }
    }

    #[test]
    fn intervals_are_sent_as_nft_sends_them() {
        // What `nft --debug=netlink` shows for { 10.0.0.0/8, 11.0.0.0/8, 192.168.1.1 }: an end
        // at zero, then each interval's start and the key after it flagged as an end.
        let iv = [
            ((0x0a00_0000, 0x0aff_ffff), None),
            ((0x0b00_0000, 0x0bff_ffff), None),
            ((0xc0a8_0101, 0xc0a8_0101), None),
        ];
        let keys = |e: Vec<SetElem>| -> Vec<(u32, bool)> {
            e.iter()
                .map(|e| (u32::from_be_bytes(e.key.clone().try_into().unwrap()), e.end))
                .collect()
        };
        assert_eq!(
            keys(interval_elements(4, &iv, false)),
            [
                (0, true),
                (0x0a00_0000, false),
                (0x0b00_0000, true),
                (0x0b00_0000, false),
                (0x0c00_0000, true),
                (0xc0a8_0101, false),
                (0xc0a8_0102, true)
            ]
        );
        // A verdict map over the whole family: no end at zero, at the top, or where the next
        // interval starts.
        let map = [
            ((0, 0x09ff_ffff), Some("a")),
            ((0x0a00_0000, 0xffff_ffff), Some("b")),
        ];
        assert_eq!(
            keys(interval_elements(4, &map, true)),
            [(0, false), (0x0a00_0000, false)]
        );
    }

    fn rule(stmts: Vec<Stmt>) -> RuleDef {
        RuleDef {
            comment: "securityRules/x 100 Allow".into(),
            stmts,
        }
    }

    #[test]
    fn attributes_are_padded_and_nested() {
        let mut a = Attrs::default();
        a.str(1, "lo").nest(2, |n| {
            n.u32(1, 7);
        });
        assert_eq!(
            a.0,
            [
                7, 0, 1, 0, b'l', b'o', 0, 0, // "lo\0" padded to 8
                12, 0, 2, 0x80, 8, 0, 1, 0, 0, 0, 0, 7
            ]
        );
        assert_eq!(attr(&a.0, 1), Some(&b"lo\0"[..]));
        assert_eq!(attr(&a.0, 2).map(<[u8]>::len), Some(8));
        assert_eq!(attr(&a.0, 3), None);
    }

    #[test]
    fn prefixes_are_loaded_like_nft_does() {
        let enc = |net: &str| {
            encode_exprs(&rule(vec![Stmt::Addr {
                v6: net.contains(':'),
                side: Side::Src,
                operand: Operand::Elem(Elem::Net(net.parse().unwrap())),
            }]))
            .unwrap()
        };
        // /24: a 3-byte load and a compare, no mask; /25: a full load, masked.
        let byte = enc("10.50.2.0/24");
        let masked = enc("10.50.2.0/25");
        let has = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
        assert!(!has(&byte, b"bitwise") && has(&byte, &[10, 50, 2, 0]));
        assert!(has(&masked, b"bitwise") && has(&masked, &[0xff, 0xff, 0xff, 0x80]));
        assert!(has(
            &enc("2001:db8::/33"),
            &[0xff, 0xff, 0xff, 0xff, 0x80, 0]
        ));
    }

    #[test]
    fn only_the_nsg_rule_forms_are_encoded() {
        assert!(encodable(&rule(vec![Stmt::L4proto(6), Stmt::Return])));
        assert!(!encodable(&rule(vec![Stmt::TcpUdp(true), Stmt::Return])));
        let tcpudp = rule(vec![Stmt::TcpUdp(true), Stmt::Return]);
        let edits = [Edit::Insert {
            chain: "nsg_in",
            rule: &tcpudp,
            before: None,
        }];
        assert!(batch("t", &edits, 1, 1).is_none());
    }
}
