//! The per-source connection cap: one client address may hold at most so many connections, so
//! a client that opens idle connections up to the gateway's total cap cannot lock out the
//! others until the header timeout frees them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections held per client address.
pub struct SourceSlots {
    cap: usize,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place in its source's count; given back on drop.
pub struct SourceSlot {
    slots: Arc<SourceSlots>,
    source: IpAddr,
}

impl SourceSlots {
    pub fn new(cap: usize) -> Arc<SourceSlots> {
        Arc::new(SourceSlots {
            cap,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for `source`, or `None` when it holds its cap already.
    pub fn try_acquire(self: &Arc<Self>, source: IpAddr) -> Option<SourceSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let n = held.entry(source).or_insert(0);
        if *n >= self.cap {
            return None;
        }
        *n += 1;
        Some(SourceSlot {
            slots: self.clone(),
            source,
        })
    }

    /// Connections `source` holds now.
    pub fn held(&self, source: IpAddr) -> usize {
        let held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.get(&source).copied().unwrap_or(0)
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = held.get_mut(&self.source) {
            *n -= 1;
            if *n == 0 {
                // Keep the map as small as the set of sources connected now.
                held.remove(&self.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_at_its_cap_does_not_take_the_others_slots() {
        let slots = SourceSlots::new(2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = slots.try_acquire(a).unwrap();
        let _second = slots.try_acquire(a).unwrap();
        assert!(slots.try_acquire(a).is_none());
        assert!(slots.try_acquire(b).is_some());
        drop(first);
        assert_eq!(slots.held(a), 1);
        assert!(slots.try_acquire(a).is_some());
    }

    #[test]
    fn sources_that_left_are_forgotten() {
        let slots = SourceSlots::new(1);
        for i in 0..100u8 {
            drop(slots.try_acquire(IpAddr::from([10, 0, 0, i])).unwrap());
        }
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
