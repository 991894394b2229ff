//! The TCP iterator's link, and one run of it per drain.
//!
//! aya 0.14's `IterLink::into_file` consumes the link, so it gives one run; the agent runs the
//! iterator at every drain. So the link is made here with `BPF_LINK_CREATE` and kept, and each
//! run is a `BPF_ITER_CREATE` on it, read to EOF. (`iter_info` stays empty: a task iterator
//! walks every task the reader's PID namespace holds.)

use std::{
    fs::File,
    io::{ErrorKind, Read},
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

/// `BPF_LINK_CREATE`, `BPF_ITER_CREATE` (enum bpf_cmd) and `BPF_TRACE_ITER` (enum
/// bpf_attach_type), include/uapi/linux/bpf.h.
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_ITER_CREATE: libc::c_long = 33;
const BPF_TRACE_ITER: u32 = 28;

/// `union bpf_attr`'s `link_create` for an iterator: prog_fd, target_fd (0), attach_type,
/// flags, then `iter_info` (a user pointer to `union bpf_iter_link_info`) and its length.
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
    iter_info: u64,
    iter_info_len: u32,
    _pad: u32,
    /// The rest of `union bpf_attr` the kernel may read, zero.
    _rest: [u64; 8],
}

/// `union bpf_attr`'s `iter_create`.
#[repr(C)]
#[derive(Default)]
struct IterCreateAttr {
    link_fd: u32,
    flags: u32,
    _rest: [u64; 8],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<OwnedFd> {
    // SAFETY: `attr` is a zero-tailed, repr(C) prefix of `union bpf_attr` for `cmd`, alive for
    // the call; the size passed is its own.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            size_of::<T>() as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a file descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A linked iterator program. Dropping it closes the link; the kernel then unloads the program
/// once nothing else holds it.
pub struct TaskIter {
    link: OwnedFd,
}

impl TaskIter {
    /// Links iterator program `prog`, over every task.
    pub fn link(prog: BorrowedFd<'_>) -> std::io::Result<Self> {
        let mut attr = LinkCreateAttr {
            prog_fd: prog.as_raw_fd() as u32,
            attach_type: BPF_TRACE_ITER,
            ..Default::default()
        };
        let link = bpf(BPF_LINK_CREATE, &mut attr)?;
        Ok(TaskIter { link })
    }

    /// Runs the program over every open file of every task: the kernel calls it from `read()`
    /// on a fresh iterator fd, file after file, until EOF. Returns the bytes the program
    /// wrote (sockscope's writes none).
    pub fn run(&self) -> std::io::Result<usize> {
        let mut attr = IterCreateAttr {
            link_fd: self.link.as_fd().as_raw_fd() as u32,
            ..Default::default()
        };
        let mut file = File::from(bpf(BPF_ITER_CREATE, &mut attr)?);
        let mut buf = [0u8; 4096];
        let mut total = 0;
        loop {
            match file.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n,
                // The kernel stops a read after a million objects with no output, or on a
                // signal; the next read goes on from there (`bpf_seq_read()`, kernel/bpf/bpf_iter.c).
                Err(e) if matches!(e.kind(), ErrorKind::Interrupted | ErrorKind::WouldBlock) => {}
                Err(e) => return Err(e),
            }
        }
    }
}
