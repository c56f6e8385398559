//! Typed handles to the entries of a [`Snapshot`](crate::Snapshot). Only the snapshot makes
//! them (while compiling, or from a lookup), so another crate cannot reach an entry with a
//! stray number or a subnet's position where an NSG's was meant. [`SubnetId::index`] and its
//! siblings give the dense position back, for side tables that callers keep per entry. An id
//! belongs to the snapshot that handed it out (or one compiled from the same network, whose
//! entries come in the same order).

macro_rules! entry_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(u32);

        impl $name {
            pub(crate) fn new(index: usize) -> $name {
                // NSG-10 caps every kind far below this.
                $name(u32::try_from(index).expect("fewer than 2^32 entries"))
            }

            /// Position among the snapshot's entries of this kind: dense from 0, stable for
            /// the snapshot's lifetime.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

entry_id!(
    /// A subnet of a [`Snapshot`](crate::Snapshot) (`Snapshot::subnet`).
    SubnetId
);
entry_id!(
    /// A network interface of a [`Snapshot`](crate::Snapshot) (`Snapshot::nic`).
    NicId
);
entry_id!(
    /// An NSG compiled in one tag context (`Snapshot::nsg`): the same NSG on two subnets is two
    /// ids, since its tags expand per subnet (NSG-8).
    NsgId
);
entry_id!(
    /// A firewall of a [`Snapshot`](crate::Snapshot) (`Snapshot::firewall`).
    FirewallId
);
