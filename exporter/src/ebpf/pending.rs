//! The kernel's table of DNS queries waiting for their response, mapped into the agent.
//!
//! The array is created `BPF_F_MMAPABLE`; the agent maps it once and sweeps it with the same
//! compare-and-exchange protocol the programs use (see `sockscope_common::dns::PendingSlot`):
//! a query older than the DNS timeout is taken out by swapping its `sent_ns` to 0, and only a
//! successful swap counts it as timed out.

use std::{
    os::fd::{AsFd, AsRawFd},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::MapData;
use sockscope_common::dns::{DNS_PENDING_SLOTS, DnsKey, PENDING_BUSY, PendingSlot};

/// Why the table could not be mapped.
#[derive(Debug, thiserror::Error)]
#[error("mapping the DNS pending-query table: {0}")]
pub struct MapError(#[source] std::io::Error);

/// The mapped table.
pub struct PendingTable {
    _map: MapData,
    base: NonNull<PendingSlot>,
    len: usize,
}

// SAFETY: the mapping is shared memory owned by this value; all access to `sent_ns` is atomic
// and other fields are only read after a successful claim.
unsafe impl Send for PendingTable {}

impl PendingTable {
    /// Maps the array map `map` (created with `BPF_F_MMAPABLE`).
    pub fn new(map: MapData) -> Result<Self, MapError> {
        let len = DNS_PENDING_SLOTS as usize;
        let bytes = (len * size_of::<PendingSlot>()).next_multiple_of(page_size());
        // SAFETY: a shared read-write mapping of the map's fd; checked for MAP_FAILED below and
        // unmapped in Drop.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MapError(std::io::Error::last_os_error()));
        }
        let base = NonNull::new(ptr.cast::<PendingSlot>())
            .ok_or_else(|| MapError(std::io::Error::other("mmap returned NULL")))?;
        Ok(PendingTable {
            _map: map,
            base,
            len,
        })
    }

    fn sent(&self, i: usize) -> &AtomicU64 {
        // SAFETY: i < len; `sent_ns` is the first, 8-byte aligned field of a slot in the mapping.
        unsafe { AtomicU64::from_ptr(std::ptr::addr_of_mut!((*self.base.as_ptr().add(i)).sent_ns)) }
    }

    /// Takes every query sent before `now_ns - timeout_ns` out of the table and returns their
    /// keys; also returns how many queries are still pending.
    pub fn sweep(&mut self, now_ns: u64, timeout_ns: u64) -> (Vec<DnsKey>, usize) {
        let mut expired = Vec::new();
        let mut live = 0;
        for i in 0..self.len {
            let sent = self.sent(i).load(Ordering::Acquire);
            if sent == 0 || sent == PENDING_BUSY {
                continue;
            }
            if now_ns.saturating_sub(sent) < timeout_ns {
                live += 1;
                continue;
            }
            // Read the key before the claim: a writer changes `sent_ns` before touching it, so
            // a successful swap from `sent` proves the key read belongs to that query.
            // SAFETY: i < len, inside the mapping; a plain read of shared memory.
            let key = unsafe {
                std::ptr::read_volatile(std::ptr::addr_of!((*self.base.as_ptr().add(i)).key))
            };
            if self
                .sent(i)
                .compare_exchange(sent, 0, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                expired.push(key);
            }
        }
        (expired, live)
    }
}

impl Drop for PendingTable {
    fn drop(&mut self) {
        let bytes = (self.len * size_of::<PendingSlot>()).next_multiple_of(page_size());
        // SAFETY: exactly the region mapped in new().
        unsafe { libc::munmap(self.base.as_ptr().cast(), bytes) };
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 { p as usize } else { 4096 }
}
