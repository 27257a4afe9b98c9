//! CPU time of a process (the server under test, or the generator itself) from
//! `/proc/PID/stat`: user and system time of all its threads. Sampled before and after the
//! measured window, it gives CPU per request, which stays meaningful when the generator, not
//! the server, limits the throughput; the user/system split tells a process's own work from
//! the kernel's (on loopback, most of the TCP cost). The machine-wide times in `/proc/stat`
//! tell how much CPU other processes took meanwhile, so a run disturbed by them can be told
//! from one that was not.

use std::time::Duration;

/// CPU time used by a process: in user space, and in the kernel on its behalf.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTime {
    /// Time in user space.
    pub user: Duration,
    /// Time in the kernel.
    pub system: Duration,
}

impl CpuTime {
    /// User plus system.
    pub fn total(&self) -> Duration {
        self.user + self.system
    }

    /// The time used since `earlier` (zero where a clock went backwards).
    pub fn since(&self, earlier: CpuTime) -> CpuTime {
        CpuTime {
            user: self.user.saturating_sub(earlier.user),
            system: self.system.saturating_sub(earlier.system),
        }
    }
}

/// The user and system times in a `/proc/PID/stat` line, in clock ticks. The command name
/// (field 2) is in parentheses and may hold spaces and parentheses itself, so fields are
/// counted from the last `)`: utime and stime are fields 14 and 15 of the line.
pub fn parse_stat(line: &str) -> Option<(u64, u64)> {
    let after_name = &line[line.rfind(')')? + 1..];
    let mut fields = after_name.split_ascii_whitespace();
    // Fields 3 (state) to 13 come before utime.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime, stime))
}

/// Machine-wide CPU time, all cores together, from the first line of `/proc/stat`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineTime {
    /// Time spent running processes (user, nice and system), which per-process times account
    /// for. Interrupt and softirq time is left out: processes are not charged for it.
    pub processes: Duration,
    /// Time the hypervisor gave to other virtual machines while this one wanted to run.
    pub steal: Duration,
}

impl MachineTime {
    /// The time used since `earlier`.
    pub fn since(&self, earlier: MachineTime) -> MachineTime {
        MachineTime {
            processes: self.processes.saturating_sub(earlier.processes),
            steal: self.steal.saturating_sub(earlier.steal),
        }
    }
}

/// The process and steal ticks in `/proc/stat`'s `cpu` line (`cpu user nice system idle
/// iowait irq softirq steal ...`).
pub fn parse_machine_stat(text: &str) -> Option<(u64, u64)> {
    let line = text.lines().next()?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next()? != "cpu" {
        return None;
    }
    let ticks: Vec<u64> = fields.take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    if ticks.len() < 8 {
        return None;
    }
    Some((ticks[0] + ticks[1] + ticks[2], ticks[7]))
}

/// The machine's CPU time so far, or `None` if it cannot be read.
pub fn machine_cpu() -> Option<MachineTime> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let (processes, steal) = parse_machine_stat(&text)?;
    let hz = ticks_per_second();
    Some(MachineTime { processes: ticks_to_duration(processes, hz), steal: ticks_to_duration(steal, hz) })
}

/// Clock ticks per second, the unit of `/proc/PID/stat` times (100 on Linux everywhere in
/// practice, but asked rather than assumed).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// The CPU time `pid` has used so far, or `None` if it cannot be read (gone, or not Linux).
pub fn process_cpu(pid: u32) -> Option<CpuTime> {
    let line = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (user, system) = parse_stat(&line)?;
    let hz = ticks_per_second();
    Some(CpuTime { user: ticks_to_duration(user, hz), system: ticks_to_duration(system, hz) })
}

/// The generator's own CPU time so far.
pub fn own_cpu() -> Option<CpuTime> {
    process_cpu(std::process::id())
}

/// `ticks` clock ticks as a duration, at `per_second` ticks a second.
pub fn ticks_to_duration(ticks: u64, per_second: u64) -> Duration {
    Duration::from_nanos(ticks.saturating_mul(1_000_000_000) / per_second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime() {
        let line = "4242 (ringlock) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    250 75 0 0 20 0 2 0 123456 1000000 500 18446744073709551615";
        assert_eq!(parse_stat(line), Some((250, 75)));
    }

    #[test]
    fn a_command_name_with_spaces_and_parentheses_does_not_shift_fields() {
        let line = "7 (a) b (c)) R 1 7 7 0 -1 0 0 0 0 0 11 22 0 0 20 0 1 0 1 1 1";
        assert_eq!(parse_stat(line), Some((11, 22)));
    }

    #[test]
    fn short_or_garbled_lines_give_none() {
        assert_eq!(parse_stat("1 (x) S 1 2 3"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
        assert_eq!(parse_stat("1 (x) S 1 1 1 0 -1 0 0 0 0 0 ten 2 0"), None);
    }

    #[test]
    fn ticks_convert_at_the_given_rate() {
        assert_eq!(ticks_to_duration(250, 100), Duration::from_millis(2500));
        assert_eq!(ticks_to_duration(3, 1000), Duration::from_millis(3));
    }

    #[test]
    fn differences_split_user_and_system() {
        let ms = Duration::from_millis;
        let a = CpuTime { user: ms(100), system: ms(50) };
        let b = CpuTime { user: ms(130), system: ms(90) };
        assert_eq!(b.since(a), CpuTime { user: ms(30), system: ms(40) });
        assert_eq!(b.since(a).total(), ms(70));
        assert_eq!(a.since(b), CpuTime::default());
    }

    #[test]
    fn machine_stat_sums_process_time_and_reads_steal() {
        let text = "cpu  231715 5 73477 513020 3027 0 27206 367 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(parse_machine_stat(text), Some((231715 + 5 + 73477, 367)));
        assert_eq!(parse_machine_stat("cpu0 1 2 3 4 5 6 7 8\n"), None);
        assert_eq!(parse_machine_stat("cpu 1 2 3\n"), None);
        assert_eq!(parse_machine_stat(""), None);
        let ms = Duration::from_millis;
        let a = MachineTime { processes: ms(10), steal: ms(1) };
        let b = MachineTime { processes: ms(25), steal: ms(4) };
        assert_eq!(b.since(a), MachineTime { processes: ms(15), steal: ms(3) });
    }

    #[test]
    fn the_generator_can_read_its_own_and_the_machines_cpu_time() {
        assert!(ticks_per_second() > 0);
        assert!(own_cpu().is_some());
        assert!(machine_cpu().is_some());
    }
}
