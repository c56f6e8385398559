//! Unsigned integer keys shared by the matchers: IPv4 addresses are `u32`, IPv6 addresses `u128`.
//! The classifier and the LPM are written once, generic over this trait, and instantiated twice.

use std::fmt::Debug;
use std::hash::Hash;

/// An unsigned integer used as a search key.
pub(crate) trait Key:
    Copy + Ord + Eq + Default + Hash + Debug + Send + Sync + 'static
{
    /// Largest value.
    const MAX: Self;
    /// Truncating conversion from `u128`.
    fn from_u128(v: u128) -> Self;
    /// Widening conversion to `u128`.
    fn to_u128(self) -> u128;
    /// `self + 1`, saturating at `MAX`.
    fn succ(self) -> Self;
    /// `self - 1`, saturating at zero.
    fn pred(self) -> Self;
    /// The six bits starting at bit `offset` counted from the most significant bit (bits past the
    /// end read as zero). `offset` must be smaller than `BITS`.
    fn six_bits(self, offset: u32) -> usize;
    /// The top `n` bits (`0 < n <= 32`).
    fn top_bits(self, n: u32) -> usize;
}

impl Key for u32 {
    const MAX: Self = u32::MAX;
    #[inline]
    fn from_u128(v: u128) -> Self {
        v as u32
    }
    #[inline]
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    #[inline]
    fn succ(self) -> Self {
        self.saturating_add(1)
    }
    #[inline]
    fn pred(self) -> Self {
        self.saturating_sub(1)
    }
    #[inline]
    fn six_bits(self, offset: u32) -> usize {
        ((self << offset) >> 26) as usize
    }
    #[inline]
    fn top_bits(self, n: u32) -> usize {
        (self >> (32 - n)) as usize
    }
}

impl Key for u128 {
    const MAX: Self = u128::MAX;
    #[inline]
    fn from_u128(v: u128) -> Self {
        v
    }
    #[inline]
    fn to_u128(self) -> u128 {
        self
    }
    #[inline]
    fn succ(self) -> Self {
        self.saturating_add(1)
    }
    #[inline]
    fn pred(self) -> Self {
        self.saturating_sub(1)
    }
    #[inline]
    fn six_bits(self, offset: u32) -> usize {
        ((self << offset) >> 122) as usize
    }
    #[inline]
    fn top_bits(self, n: u32) -> usize {
        (self >> (128 - n)) as usize
    }
}

/// Sorts closed intervals and merges those that overlap or touch.
pub(crate) fn merge_intervals<A: Key>(mut v: Vec<(A, A)>) -> Vec<(A, A)> {
    v.retain(|&(lo, hi)| lo <= hi);
    v.sort_unstable();
    let mut out: Vec<(A, A)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if last.1 == A::MAX || lo <= last.1.succ() => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out.shrink_to_fit();
    out
}

/// Whether `x` lies in one of the sorted, disjoint intervals.
#[inline]
pub(crate) fn in_intervals<A: Ord + Copy>(ivs: &[(A, A)], x: A) -> bool {
    let i = ivs.partition_point(|&(_, hi)| hi < x);
    i < ivs.len() && ivs[i].0 <= x
}
