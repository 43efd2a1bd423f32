//! Giving back the stack pages a parked discovery thread no longer uses.
//!
//! A discovery thread spends nearly all its life parked in
//! `wait::block_on_timeout`, a few frames deep. Between waits it goes much
//! deeper: grpcio starts the next receive batch on this thread (gRPC's C core
//! runs its closures on the caller's stack), protobuf decodes, `convert` builds
//! routes, and the DNS fallback calls `getaddrinfo`. Every page that touches
//! stays resident for the life of the thread, so with two threads per
//! destination the dead stack of a thousand idle destinations came to ~36 MiB.
//!
//! [`install`] (called first thing on each discovery thread) records where the
//! thread's stack ends; [`release_unused`] (called by the wait just before it
//! parks) tells the kernel that the pages below the current frame hold nothing:
//! `madvise(MADV_DONTNEED)` frees them, and the next deep call gets fresh zeroed
//! pages. It costs one system call per wait and a few page faults per message.
//! Threads that did not call [`install`] (tests, other threads) are untouched,
//! and on other systems both are no-ops.

#[cfg(target_os = "linux")]
mod imp {
    use std::cell::Cell;

    /// Bytes below the stack pointer left alone while `madvise` runs. It is a
    /// system-call stub (glibc: a few instructions, no frame; musl: one small
    /// C frame) that needs its return address and at most the 128-byte red
    /// zone; whatever runs after it returns may touch the released pages, which
    /// just come back zeroed.
    const BELOW_SP: usize = 256;

    thread_local! {
        /// Lowest usable address of this thread's stack (above its guard
        /// page); `None` until [`install`] runs on the thread.
        static LOW: Cell<Option<usize>> = const { Cell::new(None) };
    }

    pub fn install() {
        LOW.with(|low| low.set(stack_low()));
    }

    /// The usable range of the calling thread's stack, from the C library.
    fn stack_low() -> Option<usize> {
        let mut attr = std::mem::MaybeUninit::<libc::pthread_attr_t>::uninit();
        let mut addr: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        // SAFETY: `pthread_getattr_np` initialises `attr` for the calling
        // thread (checked by its return value before any other use);
        // `pthread_attr_getstack` only writes the two out-pointers, which
        // point at live locals; the attr is destroyed exactly once.
        unsafe {
            if libc::pthread_getattr_np(libc::pthread_self(), attr.as_mut_ptr()) != 0 {
                return None;
            }
            let rc = libc::pthread_attr_getstack(attr.as_ptr(), &mut addr, &mut size);
            libc::pthread_attr_destroy(attr.as_mut_ptr());
            if rc != 0 || size == 0 {
                return None;
            }
        }
        Some(addr as usize)
    }

    fn page_size() -> usize {
        // SAFETY: `sysconf` reads a constant of the system; no memory is touched.
        let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
    }

    /// The range `release_unused` would free, given the stack's low end and
    /// the current stack pointer (pure; tested below).
    pub(super) fn unused_range(low: usize, sp: usize, page: usize) -> Option<(usize, usize)> {
        let low = low.checked_add(page - 1)? & !(page - 1);
        let high = sp.checked_sub(BELOW_SP)? & !(page - 1);
        (high > low).then_some((low, high - low))
    }

    /// The stack pointer of the calling frame, or, where reading it is not
    /// written here, a page below a local of this frame (a margin that no
    /// frame of this function and `madvise` comes near).
    #[inline(always)]
    fn stack_pointer() -> usize {
        #[cfg(target_arch = "x86_64")]
        {
            let sp: usize;
            // SAFETY: copies the stack pointer into a register; reads and
            // writes no memory, leaves the stack and flags as they were.
            unsafe {
                std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags))
            };
            sp
        }
        #[cfg(target_arch = "aarch64")]
        {
            let sp: usize;
            // SAFETY: as above: one register move, no memory, no flags.
            unsafe {
                std::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags))
            };
            sp
        }
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        {
            let marker = 0u8;
            (std::hint::black_box(&marker) as *const u8 as usize).saturating_sub(4096)
        }
    }

    /// Frees the pages of this thread's stack below the current frame, if
    /// [`install`] ran on it.
    #[inline(never)]
    pub fn release_unused() {
        let Some(low) = LOW.with(Cell::get) else {
            return;
        };
        let Some((start, len)) = unused_range(low, stack_pointer(), page_size()) else {
            return;
        };
        // SAFETY: [start, start + len) lies inside this thread's own stack
        // (from `pthread_getattr_np`, above the guard page) and ends at least
        // BELOW_SP bytes under the stack pointer of this frame. The stack
        // grows down, so nothing live is stored below the stack pointer except
        // what `madvise` (a leaf system-call stub) pushes during the call: its
        // return address and at most the red zone, well inside BELOW_SP. No
        // other thread may hold a pointer into a dead part of our stack.
        // MADV_DONTNEED on private anonymous memory only drops the pages'
        // contents; the next touch (a deeper call, or a signal handler) faults
        // in a zeroed page, as on a fresh stack.
        let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
        if rc != 0 {
            log::debug!(
                "madvise of {len} bytes of idle stack failed: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    pub fn install() {}
    pub fn release_unused() {}
}

pub use imp::{install, release_unused};

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::imp::unused_range;

    const PAGE: usize = 4096;

    #[test]
    fn the_range_ends_whole_pages_below_the_stack_pointer() {
        let low = 0x10_0000;
        // Stack pointer inside the 20th page: pages 0..=18 are free.
        let sp = low + 19 * PAGE + 300;
        assert_eq!(unused_range(low, sp, PAGE), Some((low, 19 * PAGE)));
        // Too close to the page's start: that page's predecessor is kept too.
        let sp = low + 19 * PAGE + 200;
        assert_eq!(unused_range(low, sp, PAGE), Some((low, 18 * PAGE)));
    }

    #[test]
    fn an_unaligned_low_end_is_rounded_up() {
        let low = 0x10_0010;
        let sp = 0x10_0000 + 10 * PAGE + 2000;
        let (start, len) = unused_range(low, sp, PAGE).unwrap();
        assert_eq!(start, 0x10_0000 + PAGE);
        assert_eq!(start + len, 0x10_0000 + 10 * PAGE);
    }

    #[test]
    fn nothing_is_released_near_the_bottom() {
        let low = 0x10_0000;
        assert_eq!(unused_range(low, low + PAGE + 8, PAGE), None);
        assert_eq!(unused_range(low, low + 8, PAGE), None);
        assert_eq!(unused_range(0, 8, PAGE), None);
    }

    #[test]
    fn a_thread_survives_releasing_its_stack_and_going_deep_again() {
        // Fill a deep frame, release, then go deep again: the pages come back
        // zeroed and usable, and the caller's frames are intact.
        fn deep(n: u32) -> u64 {
            let buf = std::hint::black_box([n as u8; 1024]);
            if n == 0 {
                super::release_unused();
                return buf[0] as u64;
            }
            deep(n - 1) + buf[1023] as u64
        }
        let h = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(|| {
                super::install();
                let keep = std::hint::black_box([7u8; 512]);
                let a = deep(64);
                super::release_unused();
                let b = deep(64);
                (a, b, keep[511])
            })
            .unwrap();
        let expected: u64 = (1..=64).sum();
        assert_eq!(h.join().unwrap(), (expected, expected, 7));
    }

    /// Resident KiB of the mapping that holds `addr`, from /proc/self/smaps.
    fn resident_kib_at(addr: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((a, b)) = range.split_once('-') {
                    if let (Ok(a), Ok(b)) =
                        (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
                    {
                        inside = (a..b).contains(&addr);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(kib) = line.strip_prefix("Rss:") {
                    return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
                }
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn released_pages_leave_the_resident_set() {
        fn touch(n: u32) -> u8 {
            let buf = std::hint::black_box([n as u8; 4096]);
            if n == 0 {
                return buf[0];
            }
            touch(n - 1).wrapping_add(buf[4095])
        }
        let h = std::thread::Builder::new()
            .stack_size(512 * 1024)
            .spawn(|| {
                super::install();
                let here = 0u8;
                let addr = std::hint::black_box(&here) as *const u8 as usize;
                touch(100);
                let before = resident_kib_at(addr);
                super::release_unused();
                (before, resident_kib_at(addr))
            })
            .unwrap();
        let (before, after) = h.join().unwrap();
        assert!(
            before >= 400,
            "a 400 KiB deep call left {before} KiB resident"
        );
        assert!(after <= 64, "{after} KiB still resident after the release");
    }
}
