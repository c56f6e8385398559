//! Reused byte buffers for a connection's first bytes (request head, ClientHello) and for the
//! relay. A buffer is taken while bytes move and given back right after, so a tunnel costs
//! no large allocation, and an idle tunnel holds none. Why not plain allocations: a freed
//! 16 KiB block gets carved up by the small, long-lived allocations of later connections, the
//! next 16 KiB block then comes from fresh heap, and the heap grows with every tunnel.

use std::cell::RefCell;

/// Bytes per buffer: one TLS record, the largest request head or ClientHello read.
pub(crate) const SIZE: usize = 16 * 1024;

/// Buffers kept per thread (at most 128 KiB): a worker moves bytes for one connection at a
/// time, the rest are for connections that wait to write while holding theirs.
const KEPT: usize = 8;

thread_local! {
    static SPARE: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer with room for [`SIZE`] bytes.
pub(crate) fn take() -> Vec<u8> {
    SPARE
        .try_with(|s| s.borrow_mut().pop())
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(SIZE))
}

/// Keep `buf` for the next [`take`] on this thread; one that grew (a long head) or is not
/// one of ours is freed instead, as is any beyond [`KEPT`].
pub(crate) fn give(mut buf: Vec<u8>) {
    if buf.capacity() != SIZE {
        return;
    }
    buf.clear();
    let _ = SPARE.try_with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < KEPT {
            s.push(buf);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_given_back_is_taken_again_empty() {
        let mut b = take();
        assert_eq!(b.capacity(), SIZE);
        b.extend_from_slice(b"ClientHello");
        let at = b.as_ptr();
        give(b);
        let again = take();
        assert_eq!(again.as_ptr(), at, "the same allocation is reused");
        assert!(again.is_empty());
    }

    fn spare() -> usize {
        SPARE.with(|s| s.borrow().len())
    }

    #[test]
    fn at_most_kept_buffers_stay_and_grown_ones_go() {
        let many: Vec<_> = (0..KEPT + 3).map(|_| take()).collect();
        for b in many {
            give(b);
        }
        assert_eq!(spare(), KEPT);
        let mut grown = take();
        grown.resize(SIZE + 1, 0);
        give(grown);
        assert_eq!(spare(), KEPT - 1, "a buffer that grew is freed, not kept");
        give(Vec::new());
        assert_eq!(spare(), KEPT - 1, "a buffer of another size is not kept");
    }
}
