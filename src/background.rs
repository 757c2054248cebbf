//! Bulk work kept behind the requests being served, for CPU time.
//!
//! A snapshot read out for a new member, a snapshot installed into a copy, and the removal of
//! compacted history each keep a core busy for seconds. On a machine whose cores the members
//! share, the puts being served then wait for a core behind them: their latency rises for the
//! whole of the bulk work, on every member, not only on the one doing it. The threads made
//! for such work lower their own scheduling priority ([`BACKGROUND_NICE`] steps below the
//! process's), as RocksDB does for its compaction threads: they take what the requests leave,
//! and all of it when the machine is otherwise idle.
//!
//! A thread cannot raise its priority back without privilege, so only threads that exist for
//! the bulk work alone lower theirs (never a thread of a shared pool).
//!
//! A slower install does not make the leader send another snapshot: while a snapshot is on
//! its way (until the receiver has answered, after its install, or the sender's deadline for
//! that answer has passed) the leader builds no new one, so the log entries right after it
//! are still there when the receiver asks for them (see
//! `raft::PeerChannels::snapshots_not_sending`).

/// How many nice steps a background thread runs below the process (at 10 steps Linux's
/// scheduler weighs it at about a tenth of a thread of normal priority when both want a core).
pub const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority by [`BACKGROUND_NICE`] steps, for the rest of its
/// life. A failure (a platform without per-thread priorities, a sandbox that forbids it) is
/// logged and otherwise ignored: the work runs at normal priority.
pub fn lower_this_thread() {
    if let Err(e) = lower_thread_priority(BACKGROUND_NICE) {
        tracing::debug!(error = %e, "background thread kept its priority");
    }
}

/// The current thread's nice value (Linux: per thread).
pub fn this_thread_nice() -> std::io::Result<i32> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid and getpriority take and return plain integers; errno is read right
        // after the call that may set it.
        unsafe {
            let tid = libc::gettid() as libc::id_t;
            *libc::__errno_location() = 0;
            let nice = libc::getpriority(libc::PRIO_PROCESS, tid);
            if nice == -1 && *libc::__errno_location() != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(nice)
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(std::io::Error::other("per-thread priorities need Linux"))
    }
}

fn lower_thread_priority(steps: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let nice = (this_thread_nice()? + steps).min(19);
        // SAFETY: as above; setpriority on our own thread id changes only this thread.
        let rc =
            unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, nice) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = steps;
        Err(std::io::Error::other("per-thread priorities need Linux"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A background thread runs below the process; the thread that spawned it keeps its
    /// priority (the change is per thread).
    #[test]
    #[cfg(target_os = "linux")]
    fn a_background_thread_runs_below_the_others() {
        let before = this_thread_nice().expect("nice");
        let inside = std::thread::spawn(|| {
            lower_this_thread();
            this_thread_nice().expect("nice")
        })
        .join()
        .expect("thread");
        assert_eq!(inside, (before + BACKGROUND_NICE).min(19));
        assert_eq!(this_thread_nice().expect("nice"), before);
    }
}
