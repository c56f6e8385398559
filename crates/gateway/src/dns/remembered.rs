//! The addresses the DNS proxy has seen for names (FW-5): each A/AAAA answer's addresses stay
//! valid for their TTL plus a grace period (15 minutes by default: "an address no longer
//! returned stays valid 15 min"). Pure: the time is an argument, so tests move it by hand.

use palisade_model::bindings::normalize;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// FW-5's grace period after an answer's TTL.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(15 * 60);

/// Names remembered at most; past it new names are not remembered (their queries are still
/// answered), so a client asking for endless names cannot grow the gateway without bound.
pub const DEFAULT_MAX_NAMES: usize = 100_000;

/// Name → address → until when it is valid, and address → names for the firewall's question
/// (which names was this destination resolved from?).
#[derive(Debug, Clone)]
pub struct Remembered {
    grace: Duration,
    max_names: usize,
    names: HashMap<String, HashMap<IpAddr, Instant>>,
    /// The names each address is held for (expired ones until purged).
    by_address: HashMap<IpAddr, HashSet<String>>,
    /// Counts the changes an answer or a purge made: a judgement made under one generation
    /// saw the same addresses as another under it, until `first_expiry`.
    generation: u64,
    /// No remembered address expires before this (`None`: nothing remembered).
    first_expiry: Option<Instant>,
}

/// What a judgement's view of the remembered addresses depended on: it still holds while the
/// table is at this generation and no address has expired since.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    generation: u64,
    until: Option<Instant>,
}

impl Epoch {
    /// Whether `now` the table at `current` shows what it showed at this epoch.
    pub fn holds(&self, current: Epoch, now: Instant) -> bool {
        self.generation == current.generation && self.until.is_none_or(|u| now < u)
    }
}

impl Remembered {
    pub fn new(grace: Duration, max_names: usize) -> Remembered {
        Remembered {
            grace,
            max_names,
            names: HashMap::new(),
            by_address: HashMap::new(),
            generation: 0,
            first_expiry: None,
        }
    }

    /// The table's epoch (see [`Epoch`]).
    pub fn epoch(&self) -> Epoch {
        Epoch {
            generation: self.generation,
            until: self.first_expiry,
        }
    }

    /// Remember `name`'s addresses from an answer received at `now`, each with its TTL. An
    /// address already remembered longer keeps its later expiry. Returns false when the table
    /// is full and the name was not remembered.
    pub fn remember(
        &mut self,
        name: &str,
        answers: impl IntoIterator<Item = (IpAddr, Duration)>,
        now: Instant,
    ) -> bool {
        let name = normalize(name);
        if !self.names.contains_key(&name) && self.names.len() >= self.max_names {
            self.purge(now);
            if self.names.len() >= self.max_names {
                return false;
            }
        }
        let addresses = self.names.entry(name.clone()).or_default();
        for (ip, ttl) in answers {
            let until = now + ttl + self.grace;
            // A new address, or one valid longer: names_of may answer differently now.
            match addresses.entry(ip) {
                Entry::Vacant(v) => {
                    v.insert(until);
                    self.first_expiry = Some(self.first_expiry.map_or(until, |f| f.min(until)));
                    self.generation += 1;
                }
                Entry::Occupied(mut o) if until > *o.get() => {
                    o.insert(until);
                    self.generation += 1;
                }
                Entry::Occupied(_) => {}
            }
            let names = self.by_address.entry(ip).or_default();
            if !names.contains(&name) {
                names.insert(name.clone());
            }
        }
        true
    }

    /// Whether `ip` is valid for `name` at `now`.
    pub fn resolves_to(&self, name: &str, ip: IpAddr, now: Instant) -> bool {
        self.get(name)
            .and_then(|a| a.get(&ip))
            .is_some_and(|until| now < *until)
    }

    /// Call `each` with every name `ip` is valid for at `now`.
    pub fn names_of(&self, ip: IpAddr, now: Instant, each: &mut dyn FnMut(&str)) {
        for name in self.by_address.get(&ip).into_iter().flatten() {
            if self.resolves_to(name, ip, now) {
                each(name);
            }
        }
    }

    /// The addresses valid for `name` at `now`, sorted.
    pub fn addresses(&self, name: &str, now: Instant) -> Vec<IpAddr> {
        let mut out: Vec<IpAddr> = self
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(_, until)| now < **until)
            .map(|(ip, _)| *ip)
            .collect();
        out.sort();
        out
    }

    /// The names with an address valid at `now`, sorted.
    pub fn names(&self, now: Instant) -> Vec<String> {
        let mut out: Vec<String> = self
            .names
            .iter()
            .filter(|(_, a)| a.values().any(|until| now < *until))
            .map(|(n, _)| n.clone())
            .collect();
        out.sort();
        out
    }

    /// Forget what expired by `now`; answers are unchanged.
    pub fn purge(&mut self, now: Instant) {
        if self.first_expiry.is_none_or(|f| now < f) {
            return;
        }
        self.generation += 1;
        let by_address = &mut self.by_address;
        self.names.retain(|name, a| {
            a.retain(|ip, until| {
                let valid = now < *until;
                if !valid {
                    if let Some(names) = by_address.get_mut(ip) {
                        names.remove(name);
                        if names.is_empty() {
                            by_address.remove(ip);
                        }
                    }
                }
                valid
            });
            !a.is_empty()
        });
        self.first_expiry = self.names.values().flat_map(|a| a.values()).min().copied();
    }

    /// Names held, expired ones not yet purged included.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    fn get(&self, name: &str) -> Option<&HashMap<IpAddr, Instant>> {
        // Rules' names come normalised: the firewall's evaluation looks them up without
        // allocating.
        let normal = !name.ends_with(['.', ' '])
            && !name.starts_with(char::is_whitespace)
            && !name.bytes().any(|b| b.is_ascii_uppercase());
        if normal {
            self.names.get(name)
        } else {
            self.names.get(&normalize(name))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    // spec FW-5: an address stays valid for TTL + 15 min, then no longer.
    #[test]
    fn fw_5_valid_for_ttl_plus_grace() {
        let t0 = Instant::now();
        let mut r = Remembered::new(DEFAULT_GRACE, 10);
        assert!(r.remember(
            "DB.Example.test.",
            [(ip("192.0.2.10"), Duration::from_secs(60))],
            t0
        ));
        let limit = Duration::from_secs(60 + 15 * 60);
        assert!(r.resolves_to("db.example.test", ip("192.0.2.10"), t0));
        assert!(r.resolves_to(
            "db.example.test",
            ip("192.0.2.10"),
            t0 + limit - Duration::from_millis(1)
        ));
        assert!(!r.resolves_to("db.example.test", ip("192.0.2.10"), t0 + limit));
        assert!(!r.resolves_to("db.example.test", ip("192.0.2.11"), t0));
        assert!(!r.resolves_to("other.test", ip("192.0.2.10"), t0));
    }

    // spec FW-5: a later answer without the address does not shorten its validity.
    #[test]
    fn fw_5_address_no_longer_returned_keeps_its_time() {
        let t0 = Instant::now();
        let mut r = Remembered::new(Duration::from_secs(10), 10);
        r.remember("a.test", [(ip("192.0.2.1"), Duration::from_secs(5))], t0);
        r.remember(
            "a.test",
            [(ip("192.0.2.2"), Duration::from_secs(5))],
            t0 + Duration::from_secs(3),
        );
        let t = t0 + Duration::from_secs(14);
        assert_eq!(
            r.addresses("a.test", t),
            vec![ip("192.0.2.1"), ip("192.0.2.2")]
        );
        let t = t0 + Duration::from_secs(16);
        assert_eq!(r.addresses("a.test", t), vec![ip("192.0.2.2")]);
        r.purge(t0 + Duration::from_secs(18));
        assert!(r.is_empty());
    }

    // spec FW-5: a judgement's view of the remembered addresses holds until an answer adds or
    // extends one, or one of them expires.
    #[test]
    fn fw_5_an_epoch_holds_until_an_address_is_learnt_or_expires() {
        let t0 = Instant::now();
        let mut r = Remembered::new(Duration::from_secs(10), 10);
        let empty = r.epoch();
        r.remember("a.test", [(ip("192.0.2.1"), Duration::from_secs(5))], t0);
        assert!(!empty.holds(r.epoch(), t0));
        let e = r.epoch();
        assert!(e.holds(r.epoch(), t0 + Duration::from_secs(14)));
        // The same answer again, earlier than what is held: nothing changes.
        r.remember("a.test", [(ip("192.0.2.1"), Duration::from_secs(1))], t0);
        assert!(e.holds(r.epoch(), t0));
        // An answer that keeps the address longer changes what later judgements see.
        r.remember(
            "a.test",
            [(ip("192.0.2.1"), Duration::from_secs(5))],
            t0 + Duration::from_secs(1),
        );
        assert!(!e.holds(r.epoch(), t0 + Duration::from_secs(1)));
        let e = r.epoch();
        // 192.0.2.1 expires at 16 s: by then the view no longer holds, purged or not.
        assert!(!e.holds(r.epoch(), t0 + Duration::from_secs(16)));
        r.purge(t0 + Duration::from_secs(16));
        assert!(!e.holds(r.epoch(), t0 + Duration::from_secs(16)));
        assert!(r.is_empty());
    }

    #[test]
    fn full_table_remembers_no_new_name_until_one_expires() {
        let t0 = Instant::now();
        let mut r = Remembered::new(Duration::ZERO, 1);
        assert!(r.remember("a.test", [(ip("192.0.2.1"), Duration::from_secs(5))], t0));
        assert!(!r.remember("b.test", [(ip("192.0.2.2"), Duration::from_secs(5))], t0));
        assert!(r.remember("a.test", [(ip("192.0.2.3"), Duration::from_secs(5))], t0));
        assert!(r.remember(
            "b.test",
            [(ip("192.0.2.2"), Duration::from_secs(5))],
            t0 + Duration::from_secs(5)
        ));
        assert_eq!(r.names(t0 + Duration::from_secs(5)), vec!["b.test"]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Remember(u8, Vec<(u8, u16)>),
        Advance(u16),
        Purge,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..4, prop::collection::vec((0u8..4, 0u16..30), 0..4))
                .prop_map(|(n, a)| Op::Remember(n, a)),
            (0u16..40).prop_map(Op::Advance),
            Just(Op::Purge),
        ]
    }

    proptest! {
        // spec FW-5: after any sequence of answers, purges and time steps, an address is valid
        // exactly when some answer for the name returned it with TTL + grace still ahead.
        #[test]
        fn fw_5_table_equals_answer_history(ops in prop::collection::vec(op(), 0..40), grace in 0u16..20) {
            let t0 = Instant::now();
            let grace = Duration::from_secs(grace.into());
            let mut r = Remembered::new(grace, usize::MAX);
            let mut history: Vec<(u8, u8, Instant)> = vec![];
            let mut now = t0;
            for op in ops {
                let purged = matches!(op, Op::Purge);
                match op {
                    Op::Remember(n, answers) => {
                        let name = format!("N{n}.test.");
                        let answers: Vec<(IpAddr, Duration)> = answers
                            .iter()
                            .map(|(a, ttl)| (IpAddr::from([192, 0, 2, *a]), Duration::from_secs((*ttl).into())))
                            .collect();
                        prop_assert!(r.remember(&name, answers.clone(), now));
                        for (a, ttl) in answers {
                            let IpAddr::V4(v4) = a else { unreachable!() };
                            history.push((n, v4.octets()[3], now + ttl + grace));
                        }
                    }
                    Op::Advance(s) => now += Duration::from_secs(s.into()),
                    Op::Purge => r.purge(now),
                }
                for n in 0u8..4 {
                    for a in 0u8..4 {
                        let expected = history.iter().any(|(hn, ha, until)| *hn == n && *ha == a && now < *until);
                        let name = format!("n{n}.test");
                        prop_assert_eq!(r.resolves_to(&name, IpAddr::from([192, 0, 2, a]), now), expected);
                    }
                }
                // The reverse view agrees: the names an address is valid for.
                for a in 0u8..4 {
                    let mut got = vec![];
                    r.names_of(IpAddr::from([192, 0, 2, a]), now, &mut |n| got.push(n.to_string()));
                    got.sort();
                    let mut expected: Vec<String> = (0u8..4)
                        .filter(|n| history.iter().any(|(hn, ha, until)| hn == n && *ha == a && now < *until))
                        .map(|n| format!("n{n}.test"))
                        .collect();
                    expected.sort();
                    prop_assert_eq!(got, expected);
                }
                // Purging leaves no address entry without a name.
                if purged {
                    prop_assert!(r.by_address.values().all(|n| !n.is_empty()));
                }
            }
        }
    }
}
