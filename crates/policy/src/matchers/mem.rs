//! Immutable arrays for the matchers' hot tables, placed on transparent huge pages when large.
//!
//! A random lookup into a table of several MiB misses the TLB on almost every access with 4 KiB
//! pages; in a virtual machine each such miss is a two-dimensional page walk that costs more than
//! the cache miss itself (measured on the benchmark VM: ~130–240 ns per random access from 8 MiB
//! up with 4 KiB pages). [`Frozen`] copies a finished table into a fresh 2 MiB-aligned
//! allocation and, on Linux, asks the kernel for huge pages on it (`madvise(MADV_HUGEPAGE)`)
//! *before* the first write, so the pages are faulted in as 2 MiB pages where the kernel allows
//! it (THP `always` or `madvise`). Elsewhere, or when the kernel refuses, it is a plain
//! allocation with the same contents: the advice only changes speed, never results.

use std::alloc::{alloc, dealloc, handle_alloc_error, Layout};
use std::fmt;
use std::ops::Deref;
use std::ptr::NonNull;

/// Huge page size (x86-64 and aarch64 with 4 KiB base pages).
const HUGE: usize = 2 << 20;
/// Tables at least this large go on huge pages (rounded up to a whole number of them).
const MIN_HUGE: usize = 512 << 10;

/// An immutable boxed slice, huge-page backed when large (see the module docs).
pub(crate) struct Frozen<T: Copy> {
    ptr: NonNull<T>,
    len: usize,
    /// `None` for an empty slice or a zero-sized `T` (nothing allocated).
    layout: Option<Layout>,
}

// SAFETY: `Frozen` owns its allocation exclusively and never mutates it after construction; it is
// as thread-safe as a `Box<[T]>`.
unsafe impl<T: Copy + Send> Send for Frozen<T> {}
// SAFETY: as above; only shared references to the contents are handed out.
unsafe impl<T: Copy + Sync> Sync for Frozen<T> {}

impl<T: Copy> Frozen<T> {
    /// Copies `data` into a new allocation.
    pub(crate) fn new(data: &[T]) -> Self {
        let bytes = std::mem::size_of_val(data);
        if bytes == 0 {
            return Frozen {
                ptr: NonNull::dangling(),
                len: data.len(),
                layout: None,
            };
        }
        let (size, align) = if bytes >= MIN_HUGE {
            (bytes.div_ceil(HUGE) * HUGE, HUGE)
        } else {
            (bytes, std::mem::align_of::<T>())
        };
        let Ok(layout) = Layout::from_size_align(size, align.max(std::mem::align_of::<T>())) else {
            panic!("table of {bytes} bytes is too large");
        };
        let raw = if layout.align() == HUGE {
            alloc_huge(layout)
        } else {
            // SAFETY: `layout` has a non-zero size.
            unsafe { alloc(layout) }
        };
        let Some(ptr) = NonNull::new(raw.cast::<T>()) else {
            handle_alloc_error(layout)
        };
        // SAFETY: the destination is a fresh allocation of at least `bytes` bytes, aligned for
        // `T`, not overlapping `data`; `T: Copy`, so a bitwise copy is a valid copy.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.as_ptr(), data.len()) };
        Frozen {
            ptr,
            len: data.len(),
            layout: Some(layout),
        }
    }

    /// Bytes reserved (including the rounding up to whole huge pages).
    pub(crate) fn bytes(&self) -> usize {
        self.layout.map_or(0, |l| l.size())
    }

    /// Whether the table was placed on huge-page-aligned memory with the huge-page advice.
    #[cfg(test)]
    pub(crate) fn huge(&self) -> bool {
        self.layout.is_some_and(|l| l.align() == HUGE)
    }
}

/// A fresh, never-touched, 2 MiB-aligned anonymous mapping of `layout.size()` bytes (a multiple
/// of 2 MiB) with the huge-page advice; null on failure. Fresh pages matter: memory recycled by
/// the allocator is already faulted in as 4 KiB pages, and the advice would not change them.
#[cfg(target_os = "linux")]
fn alloc_huge(layout: Layout) -> *mut u8 {
    let size = layout.size();
    let Some(span) = size.checked_add(HUGE) else {
        return std::ptr::null_mut();
    };
    // SAFETY: an anonymous private mapping at an address of the kernel's choice; the result is
    // checked against MAP_FAILED.
    unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        if p == libc::MAP_FAILED {
            return std::ptr::null_mut();
        }
        let start = p as usize;
        let aligned = start.next_multiple_of(HUGE);
        // Unmap the unaligned head and the tail beyond `size`.
        if aligned > start {
            libc::munmap(p, aligned - start);
        }
        let tail = start + span - (aligned + size);
        if tail > 0 {
            libc::munmap((aligned + size) as *mut libc::c_void, tail);
        }
        // A failed advice (THP disabled) is harmless: the pages are then 4 KiB.
        libc::madvise(aligned as *mut libc::c_void, size, libc::MADV_HUGEPAGE);
        aligned as *mut u8
    }
}

#[cfg(target_os = "linux")]
fn free_huge(p: *mut u8, layout: Layout) {
    // SAFETY: `p..p + size` is exactly the mapping left by `alloc_huge`.
    unsafe {
        libc::munmap(p.cast::<libc::c_void>(), layout.size());
    }
}

#[cfg(not(target_os = "linux"))]
fn alloc_huge(layout: Layout) -> *mut u8 {
    // SAFETY: `layout` has a non-zero size.
    unsafe { alloc(layout) }
}

#[cfg(not(target_os = "linux"))]
fn free_huge(p: *mut u8, layout: Layout) {
    // SAFETY: allocated by `alloc_huge` with this layout.
    unsafe { dealloc(p, layout) }
}

impl<T: Copy> Deref for Frozen<T> {
    type Target = [T];
    #[inline]
    fn deref(&self) -> &[T] {
        // SAFETY: `ptr` points to `len` initialised `T`s (or is dangling with `len` zero-sized
        // values / `len == 0`), alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T: Copy> Drop for Frozen<T> {
    fn drop(&mut self) {
        match self.layout {
            Some(layout) if layout.align() == HUGE => {
                free_huge(self.ptr.as_ptr().cast::<u8>(), layout);
            }
            Some(layout) => {
                // SAFETY: allocated in `new` with exactly this layout.
                unsafe { dealloc(self.ptr.as_ptr().cast::<u8>(), layout) };
            }
            None => {}
        }
    }
}

impl<T: Copy> Clone for Frozen<T> {
    fn clone(&self) -> Self {
        Frozen::new(self)
    }
}

impl<T: Copy + fmt::Debug> fmt::Debug for Frozen<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy> Default for Frozen<T> {
    fn default() -> Self {
        Frozen::new(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_small_large_empty() {
        let e: Frozen<u32> = Frozen::new(&[]);
        assert!(e.is_empty() && e.bytes() == 0);
        let s = Frozen::new(&[1u64, 2, 3]);
        assert_eq!(&*s, &[1, 2, 3]);
        assert!(!s.huge());
        let v: Vec<u32> = (0..300_000).collect();
        let l = Frozen::new(&v);
        assert_eq!(&*l, &v[..]);
        assert!(l.huge() && l.bytes() == HUGE);
        let c = l.clone();
        assert_eq!(&*c, &v[..]);
        let z = Frozen::new(&[(), ()]);
        assert_eq!(z.len(), 2);
    }
}
