//! CPU priority of the threads a manager's raft liveness depends on: the raft loop, its
//! WAL writer and the raft network runtime. On a loaded machine (a deploy to hundreds
//! of nodes keeps every core busy with status reports and assignment streams) they
//! otherwise get the same share as any of the process's workers, and ticks and
//! heartbeats fell seconds behind: followers campaigned and the leader stepped down.
//! They use little CPU themselves, so priority costs the rest little.

/// The nice value of those threads (Linux keeps one per thread); as etcd's operators
/// are told to `nice` it.
const RAFT_NICE: i32 = -10;

/// Raises the calling thread to [`RAFT_NICE`] unless it already runs at that priority
/// or higher. Needs CAP_SYS_NICE (the agent runs as root); without it the thread keeps
/// its priority.
pub fn raise_current_thread() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid, getpriority and setpriority only read or change the calling
        // thread's own scheduling attributes; errno is thread-local.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let current = libc::getpriority(libc::PRIO_PROCESS, tid);
            if *libc::__errno_location() != 0 || current <= RAFT_NICE {
                return;
            }
            if libc::setpriority(libc::PRIO_PROCESS, tid, RAFT_NICE) != 0 {
                tracing::debug!(
                    error = %std::io::Error::last_os_error(),
                    "cannot raise the priority of a raft thread"
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn raises_only_the_calling_thread() {
        // SAFETY: reading the calling thread's nice value.
        let nice =
            || unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) };
        let before = nice();
        let raised = std::thread::spawn(move || {
            super::raise_current_thread();
            nice()
        })
        .join()
        .expect("thread");
        assert_eq!(nice(), before, "the caller's thread is left alone");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            assert!(raised <= super::RAFT_NICE, "raised to {raised}");
        } else {
            assert!(raised <= before);
        }
    }
}
