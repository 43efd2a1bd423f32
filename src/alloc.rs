//! The `spoke` binary's memory allocator, used by every thread: dlmalloc (one
//! heap behind one lock, see `main.rs` for why), with a cache of small freed
//! blocks for the thread that allocates all the time, the event loop, so that
//! most of its allocations take no lock at all.
//!
//! A thread opts in by holding a [`ThreadCache`] (the event loop does, for as
//! long as it runs); dropping it gives the cached blocks back to the heap.
//! Other threads (discovery, identity, admin) go to the heap directly and so
//! keep nothing cached while they sleep, which is the reason for dlmalloc.
//!
//! The cache is right whichever thread frees a block because of one rule kept
//! on every thread: a *small* request (at most [`MAX_CACHED`] bytes, aligned to
//! at most 16) is always taken from the heap at its size class's full size
//! (16·k + 8 bytes, the usable sizes of dlmalloc's chunks, so the rounding costs
//! no memory). Any small block freed with a layout of class k therefore holds
//! at least that class's size and can serve any later request of class k, and
//! dlmalloc gives every such block its natural 16-byte alignment.
//!
//! A class always keeps up to [`PER_CLASS`] blocks, and more while the blocks
//! all classes hold beyond that floor stay under [`EXTRA_BYTES`]; the rest go
//! back to the heap. The extra room is for bursts: an HTTP/2 poll that carries
//! hundreds of streams frees hundreds of blocks of one class at once, and each
//! one the cache cannot keep is a locked heap call on the next burst (measured
//! with `bench/cost_h2.sh` at 8 connections of 100 streams: 56,774 instructions
//! per request with the floor alone, 51,418 with an unbounded cache; 8 × 100
//! streams need about 1.4 MiB). So a cache holds at most
//! `PER_CLASS · Σ class sizes + EXTRA_BYTES`, about 3 MiB.
//!
//! The library (and so its tests) works under any global allocator; the test
//! harness (`tests/support`) installs this one so every integration test runs
//! the event loop over the cache.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::ptr;

use dlmalloc::GlobalDlmalloc;

/// Requests of at most this many bytes (aligned to at most [`ALIGN`]) are small.
pub const MAX_CACHED: usize = 16 * 64 + 8;
/// The alignment dlmalloc gives every block it hands out.
const ALIGN: usize = 16;
/// Size classes: class k holds blocks of `16·k + 8` bytes.
const CLASSES: usize = class(MAX_CACHED) + 1;
/// Freed blocks every class may keep (the floor: about 1.1 MiB over all classes).
pub const PER_CLASS: u32 = 32;
/// Bytes the blocks kept beyond each class's floor may add up to.
pub const EXTRA_BYTES: usize = 2 << 20;

const fn class(size: usize) -> usize {
    (size + 7) / 16
}

const fn class_size(k: usize) -> usize {
    16 * k + 8
}

fn small(layout: Layout) -> bool {
    layout.size() <= MAX_CACHED && layout.align() <= ALIGN
}

/// The layout a small request is taken from the heap with: its class's size.
fn heap_layout(layout: Layout) -> Layout {
    if !small(layout) {
        return layout;
    }
    // SAFETY: the alignment comes from a valid layout (a power of two, at most
    // 16) and the size is at most MAX_CACHED, far below isize::MAX rounded up
    // to any such alignment: the conditions of `from_size_align`.
    unsafe { Layout::from_size_align_unchecked(class_size(class(layout.size())), layout.align()) }
}

/// One thread's freed small blocks: per class, a list linked through the first
/// word of each block.
struct Bins {
    heads: [*mut u8; CLASSES],
    counts: [u32; CLASSES],
    /// Σ over classes of (blocks beyond PER_CLASS) · class size.
    extra: usize,
}

thread_local! {
    /// This thread's bins, or null when it has no cache. A const-initialised
    /// cell of a type with no destructor: reading it never allocates and is
    /// valid until the thread is gone.
    static CACHE: Cell<*mut Bins> = const { Cell::new(ptr::null_mut()) };
}

fn bins() -> *mut Bins {
    CACHE.with(Cell::get)
}

/// dlmalloc, with the small-block cache of the threads that hold a
/// [`ThreadCache`].
pub struct Allocator;

// SAFETY: every block handed out comes from dlmalloc's heap (through
// GlobalDlmalloc, whose lock makes it safe from any thread) either directly or
// from a cache. A cache belongs to one thread (thread-local, never shared) and
// holds only blocks that were freed, so none is handed out twice. By the rule
// of the module header, a small block in class k's list has at least
// class_size(k) usable bytes and 16-byte alignment, which covers any small
// request of class k; blocks go back to the heap with the layout they were
// taken with (heap_layout), as dlmalloc requires.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if small(layout) {
            let b = bins();
            if !b.is_null() {
                // SAFETY: `b` is this thread's own Bins, alive while its
                // ThreadCache is (which clears the cell before freeing it).
                let b = unsafe { &mut *b };
                let k = class(layout.size());
                let head = b.heads[k];
                if !head.is_null() {
                    // SAFETY: a cached block is free memory of at least 8
                    // bytes, 16-aligned, whose first word links the list.
                    b.heads[k] = unsafe { head.cast::<*mut u8>().read() };
                    if b.counts[k] > PER_CLASS {
                        b.extra -= class_size(k);
                    }
                    b.counts[k] -= 1;
                    return head;
                }
            }
        }
        // SAFETY: the caller's layout has a non-zero size; heap_layout keeps it
        // non-zero and valid.
        unsafe { GlobalDlmalloc.alloc(heap_layout(layout)) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if small(layout) {
            let b = bins();
            if !b.is_null() {
                // SAFETY: as in `alloc`, this thread's own live Bins.
                let b = unsafe { &mut *b };
                let k = class(layout.size());
                let keep = b.counts[k] < PER_CLASS || {
                    let extra = b.extra + class_size(k);
                    extra <= EXTRA_BYTES && {
                        b.extra = extra;
                        true
                    }
                };
                if keep {
                    debug_assert_eq!(ptr as usize % ALIGN, 0);
                    // SAFETY: the caller gives the block up; it has at least
                    // class_size(k) >= 8 bytes and is 16-aligned, so its first
                    // word can hold the link.
                    unsafe { ptr.cast::<*mut u8>().write(b.heads[k]) };
                    b.heads[k] = ptr;
                    b.counts[k] += 1;
                    return;
                }
            }
        }
        // SAFETY: `ptr` was taken from the heap with heap_layout(layout).
        unsafe { GlobalDlmalloc.dealloc(ptr, heap_layout(layout)) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !small(layout) {
            // SAFETY: a valid, non-zero layout, taken from the heap as it is.
            return unsafe { GlobalDlmalloc.alloc_zeroed(layout) };
        }
        // SAFETY: as `alloc`; a cached block may hold old bytes, so the
        // requested size is cleared.
        unsafe {
            let p = self.alloc(layout);
            if !p.is_null() {
                ptr::write_bytes(p, 0, layout.size());
            }
            p
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc's caller guarantees `new_size`, rounded
        // up to `layout.align()`, does not overflow isize.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !small(new) {
            // SAFETY: the block was taken with heap_layout(layout); dlmalloc
            // gives back a block of at least new_size bytes with the same
            // alignment guarantee, large, so outside the class rule.
            return unsafe { GlobalDlmalloc.realloc(ptr, heap_layout(layout), new_size) };
        }
        if small(layout) && class(layout.size()) == class(new_size) {
            // The block already holds the class's full size.
            return ptr;
        }
        // A small result must be a block of its class's size: taken anew (it
        // may come from the cache) and the old one freed.
        // SAFETY: `new` is valid and non-zero; the copy stays inside both
        // blocks; `ptr` is given up with its own layout.
        unsafe {
            let p = self.alloc(new);
            if !p.is_null() {
                ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}

/// While held, small blocks this thread frees are kept for its next
/// allocations (see the module header). Not `Send`: it belongs to the thread
/// that made it.
pub struct ThreadCache {
    _not_send: std::marker::PhantomData<*mut Bins>,
}

impl ThreadCache {
    /// Gives this thread a cache (a no-op when it has one already; that one
    /// stays with its first holder).
    pub fn enable() -> Option<ThreadCache> {
        if !bins().is_null() {
            return None;
        }
        let layout = Layout::new::<Bins>();
        // SAFETY: Bins has a non-zero size; the block comes from the heap
        // itself, not through a cache.
        let b = unsafe { GlobalDlmalloc.alloc(layout) }.cast::<Bins>();
        if b.is_null() {
            return None;
        }
        // SAFETY: `b` is a fresh block with Bins's layout.
        unsafe {
            b.write(Bins {
                heads: [ptr::null_mut(); CLASSES],
                counts: [0; CLASSES],
                extra: 0,
            })
        };
        CACHE.with(|c| c.set(b));
        Some(ThreadCache {
            _not_send: std::marker::PhantomData,
        })
    }

    /// The blocks this thread's cache holds (for tests and metrics).
    pub fn held() -> usize {
        let b = bins();
        if b.is_null() {
            return 0;
        }
        // SAFETY: this thread's own live Bins.
        unsafe { (*b).counts.iter().map(|&n| n as usize).sum() }
    }
}

impl Drop for ThreadCache {
    fn drop(&mut self) {
        let b = bins();
        // From here on this thread allocates from the heap directly.
        CACHE.with(|c| c.set(ptr::null_mut()));
        if b.is_null() {
            return;
        }
        // SAFETY: `b` was this thread's Bins and nothing can reach it any more;
        // each cached block of class k was taken from the heap with
        // class_size(k) bytes and an alignment of at most 16, which dlmalloc
        // frees the same whatever that alignment was.
        unsafe {
            let bins = &mut *b;
            for (k, head) in bins.heads.iter_mut().enumerate() {
                let layout = Layout::from_size_align_unchecked(class_size(k), ALIGN);
                let mut p = *head;
                while !p.is_null() {
                    let next = p.cast::<*mut u8>().read();
                    GlobalDlmalloc.dealloc(p, layout);
                    p = next;
                }
                *head = ptr::null_mut();
            }
            GlobalDlmalloc.dealloc(b.cast(), Layout::new::<Bins>());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: usize, align: usize) -> Layout {
        Layout::from_size_align(size, align).unwrap()
    }

    #[test]
    fn classes_are_dlmalloc_usable_sizes_covering_every_small_size() {
        assert_eq!(class_size(class(1)), 8);
        assert_eq!(class_size(class(8)), 8);
        assert_eq!(class_size(class(9)), 24);
        assert_eq!(class_size(class(24)), 24);
        assert_eq!(class_size(class(25)), 40);
        assert_eq!(class_size(class(MAX_CACHED)), MAX_CACHED);
        for s in 1..=MAX_CACHED {
            let c = class_size(class(s));
            assert!(c >= s && c < s + 16, "{s} -> {c}");
        }
    }

    #[test]
    fn a_cached_block_serves_the_next_request_of_its_class() {
        let a = Allocator;
        let _cache = ThreadCache::enable().unwrap();
        unsafe {
            let p = a.alloc(layout(100, 8));
            p.write_bytes(0xab, 100);
            a.dealloc(p, layout(100, 8));
            assert_eq!(ThreadCache::held(), 1);
            // Same class (97..=104), a stricter alignment: the same block.
            let q = a.alloc(layout(104, 16));
            assert_eq!(p, q);
            assert_eq!(q as usize % 16, 0);
            assert_eq!(ThreadCache::held(), 0);
            // Zeroed even when it comes from the cache.
            a.dealloc(q, layout(104, 16));
            let z = a.alloc_zeroed(layout(99, 1));
            assert_eq!(z, p);
            assert!(std::slice::from_raw_parts(z, 99).iter().all(|&b| b == 0));
            a.dealloc(z, layout(99, 1));
        }
    }

    #[test]
    fn classes_keep_a_floor_each_and_share_the_extra_room() {
        let a = Allocator;
        let cache = ThreadCache::enable().unwrap();
        let take = |n: usize, size: usize| -> Vec<*mut u8> {
            (0..n)
                .map(|_| unsafe { a.alloc(layout(size, 8)) })
                .collect()
        };
        let give = |blocks: &[*mut u8], size: usize| {
            for &p in blocks {
                unsafe { a.dealloc(p, layout(size, 8)) };
            }
        };
        let floor = PER_CLASS as usize;
        // A burst of the largest class: its floor, then as many as the extra
        // room holds; the rest go back to the heap.
        let room = EXTRA_BYTES / MAX_CACHED;
        let big = take(floor + room + 50, MAX_CACHED);
        give(&big, MAX_CACHED);
        assert_eq!(ThreadCache::held(), floor + room);
        // The room is (all but) full, but another class still keeps its floor.
        let left = (EXTRA_BYTES - room * MAX_CACHED) / class_size(class(40));
        assert!(left < 10);
        let small = take(floor + 10, 40);
        give(&small, 40);
        assert_eq!(ThreadCache::held(), 2 * floor + room + left);
        // Taking big blocks back frees room the small class can use.
        let again = take(room, MAX_CACHED);
        let small = take(floor + 10, 40);
        give(&small, 40);
        assert_eq!(ThreadCache::held(), 2 * floor + 10);
        give(&again, MAX_CACHED);
        // 10 small blocks use the room now, so fewer big ones fit.
        let fit = (EXTRA_BYTES - 10 * class_size(class(40))) / MAX_CACHED;
        assert_eq!(ThreadCache::held(), 2 * floor + 10 + fit);
        drop(cache);
        assert_eq!(ThreadCache::held(), 0, "dropping the cache empties it");
    }

    #[test]
    fn blocks_cross_threads_and_sizes_both_ways() {
        let a = Allocator;
        let _cache = ThreadCache::enable().unwrap();
        // Taken on a thread with no cache, freed into this one's, and reused.
        let addr = std::thread::spawn(|| unsafe {
            let p = Allocator.alloc(layout(200, 8));
            p.write_bytes(7, 200);
            p as usize
        })
        .join()
        .unwrap();
        unsafe {
            a.dealloc(addr as *mut u8, layout(200, 8));
            let q = a.alloc(layout(195, 4));
            assert_eq!(q as usize, addr);
            // Grown within its class, to a larger class, to a large block
            // and back: the bytes follow.
            q.write_bytes(1, 195);
            let q = a.realloc(q, layout(195, 4), 200);
            assert_eq!(q as usize, addr, "same class: the same block");
            let q = a.realloc(q, layout(200, 4), 900);
            let q = a.realloc(q, layout(900, 4), 100_000);
            assert!(std::slice::from_raw_parts(q, 195).iter().all(|&b| b == 1));
            let q = a.realloc(q, layout(100_000, 4), 10);
            assert!(std::slice::from_raw_parts(q, 10).iter().all(|&b| b == 1));
            a.dealloc(q, layout(10, 4));
        }
        // A block this thread cached, freed by a thread with no cache.
        let p = unsafe { a.alloc(layout(64, 8)) } as usize;
        std::thread::spawn(move || unsafe { Allocator.dealloc(p as *mut u8, layout(64, 8)) })
            .join()
            .unwrap();
    }

    #[test]
    fn large_and_overaligned_requests_go_to_the_heap() {
        let a = Allocator;
        let _cache = ThreadCache::enable().unwrap();
        unsafe {
            let big = a.alloc(layout(MAX_CACHED + 1, 8));
            a.dealloc(big, layout(MAX_CACHED + 1, 8));
            let aligned = a.alloc(layout(64, 64));
            assert_eq!(aligned as usize % 64, 0);
            a.dealloc(aligned, layout(64, 64));
        }
        assert_eq!(ThreadCache::held(), 0);
        assert!(ThreadCache::enable().is_none(), "one cache per thread");
    }
}
