//! The benchmark client's own CPU use, from `getrusage(RUSAGE_SELF)`, so every report can show
//! that the client was not the bottleneck: on a shared machine a client that burns as much CPU
//! as the server would be measuring itself.

use serde::Serialize;
use std::time::{Duration, Instant};

/// CPU time consumed by this process so far, user and system.
#[derive(Debug, Clone, Copy)]
pub struct CpuSample {
    user: Duration,
    system: Duration,
    at: Instant,
}

/// CPU used between two samples.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct ClientCpu {
    /// User-mode CPU seconds.
    pub user_secs: f64,
    /// Kernel-mode CPU seconds (syscalls: sockets, timers).
    pub system_secs: f64,
    /// Wall-clock seconds between the samples.
    pub wall_secs: f64,
    /// (user + system) / wall, in percent of one core; 100 means one core fully busy.
    pub percent_of_one_core: f64,
}

fn timeval(tv: libc::timeval) -> Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    Duration::from_secs(secs) + Duration::from_micros(u64::from(micros))
}

impl CpuSample {
    /// Reads the process's CPU time now. On the (never expected) failure of `getrusage` the
    /// sample reads as zero, which makes the report show 0% rather than abort a finished run.
    pub fn now() -> CpuSample {
        // SAFETY: rusage is plain old data; getrusage fills it and reads nothing else.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: RUSAGE_SELF with a valid, exclusively borrowed out-pointer.
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        let at = Instant::now();
        if rc != 0 {
            return CpuSample {
                user: Duration::ZERO,
                system: Duration::ZERO,
                at,
            };
        }
        CpuSample {
            user: timeval(usage.ru_utime),
            system: timeval(usage.ru_stime),
            at,
        }
    }

    /// CPU used since `earlier`.
    pub fn since(&self, earlier: &CpuSample) -> ClientCpu {
        let user = self.user.saturating_sub(earlier.user).as_secs_f64();
        let system = self.system.saturating_sub(earlier.system).as_secs_f64();
        let wall = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        let percent = if wall > 0.0 {
            (user + system) / wall * 100.0
        } else {
            0.0
        };
        ClientCpu {
            user_secs: user,
            system_secs: system,
            wall_secs: wall,
            percent_of_one_core: percent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_loop_shows_up_as_user_cpu() {
        // Spins until the process has used 20 ms of CPU: on a loaded machine that takes
        // longer than 20 ms of wall time, so the loop is bounded by CPU, not by the clock.
        let start = CpuSample::now();
        let give_up = Instant::now() + Duration::from_secs(20);
        let mut x: u64 = 0;
        let cpu = loop {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
            let cpu = CpuSample::now().since(&start);
            if cpu.user_secs + cpu.system_secs >= 0.02 || Instant::now() > give_up {
                break cpu;
            }
        };
        std::hint::black_box(x);
        assert!(cpu.user_secs >= 0.01, "cpu {cpu:?}");
        assert!(cpu.wall_secs >= cpu.user_secs * 0.5, "cpu {cpu:?}");
        assert!(cpu.percent_of_one_core > 0.0, "cpu {cpu:?}");
    }
}
