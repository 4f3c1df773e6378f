//! The global allocator of the workspace's binaries: mimalloc, without transparent huge
//! pages.
//!
//! No library sets a global allocator; the binaries (`peershare`, `peershare-bench`,
//! `peershare-signaling`, the examples) declare [`GLOBAL`] as theirs and call
//! [`configure`] first thing in `main`.
//!
//! Why not glibc malloc: the stack moves packet buffers between threads, and glibc then
//! takes the owning arena's lock on frees; through a relay that was ~150k futex calls per
//! 256 MiB and about 15 % more CPU per byte (docs/DECISIONS.md). Why [`configure`]: with
//! transparent huge pages (`always` on many distributions) the kernel backs mimalloc's
//! large, aligned regions with 2 MiB pages, and a sender's peak RSS rose from 49 to 87 MiB;
//! with THP off for the process it is 52 MiB at the same speed.

/// The allocator to declare with `#[global_allocator]`.
pub type Global = mimalloc::MiMalloc;

/// The value of [`Global`].
pub const GLOBAL: Global = mimalloc::MiMalloc;

/// Turn transparent huge pages off for this process (see the module docs). Call first
/// thing in `main`; memory touched before keeps its pages.
pub fn configure() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and only sets a flag on this process.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::debug!(
            error = %std::io::Error::last_os_error(),
            "could not turn transparent huge pages off; peak RSS may be higher"
        );
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn configure_turns_transparent_huge_pages_off() {
        super::configure();
        // SAFETY: PR_GET_THP_DISABLE reads the flag.
        let flag = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) };
        assert_eq!(flag, 1);
    }
}
