//! Reading a thread's `/proc/<pid>/task/<tid>/stat` line: its name, state and
//! CPU time. Shared by the run's per-thread CPU accounting and the sandbox's
//! view of a silent L1's QEMU threads.

/// What a thread's `stat` line says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskStat {
    /// The thread's name (`comm`), which may hold spaces and parentheses.
    pub name: String,
    /// Its state letter (`R`, `S`, `D`, …).
    pub state: String,
    /// User time, in clock ticks (a vCPU's guest time is counted here).
    pub user_ticks: u64,
    /// System time, in clock ticks.
    pub sys_ticks: u64,
    /// Major page faults the thread took (`majflt`; also those the kernel
    /// took on its behalf through get_user_pages, as KVM does for a vCPU).
    pub major_faults: u64,
}

/// Parses a `stat` line. `None` for a malformed one.
pub fn parse_task_stat(line: &str) -> Option<TaskStat> {
    // The name is between the first '(' and the last ')' and may hold
    // anything, spaces and parentheses included.
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let name = line.get(open + 1..close)?.to_string();
    // After the name: field 3 (state) onwards; majflt is field 12, utime
    // and stime are fields 14 and 15.
    let mut rest = line.get(close + 1..)?.split_ascii_whitespace();
    let state = rest.next()?.to_string();
    let major_faults = rest.nth(8)?.parse().ok()?;
    let mut rest = rest.skip(1);
    let user_ticks = rest.next()?.parse().ok()?;
    let sys_ticks = rest.next()?.parse().ok()?;
    Some(TaskStat {
        name,
        state,
        user_ticks,
        sys_ticks,
        major_faults,
    })
}

/// Clock ticks per second (`CLK_TCK`), the unit of [`TaskStat`]'s times;
/// 100 when the system does not say or says something out of range.
pub fn clock_ticks_per_s() -> u64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&t| t > 0 && t <= 1000)
        .map_or(100, |t| t as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_gives_name_state_user_and_system_ticks() {
        let line =
            "4242 (swapper-evict) S 1 2 3 0 -1 4194368 10 0 31 0 187 2271 0 0 20 0 9 0 100 0 0";
        assert_eq!(
            parse_task_stat(line),
            Some(TaskStat {
                name: "swapper-evict".into(),
                state: "S".into(),
                user_ticks: 187,
                sys_ticks: 2271,
                major_faults: 31,
            })
        );
        let odd = "7 (a) b (c)) R 1 2 3 0 -1 0 0 0 0 0 5 6 0 0";
        let t = parse_task_stat(odd).unwrap();
        assert_eq!(
            (t.name.as_str(), t.state.as_str(), t.user_ticks, t.sys_ticks),
            ("a) b (c)", "R", 5, 6)
        );
        for bad in [
            "",
            "12 swapper 1 2",
            "1 (x) S 1 2",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 u s",
            "1 (x) S 1 2 3 4 5 6 7 8 m 10 1 2",
        ] {
            assert_eq!(parse_task_stat(bad), None, "{bad}");
        }
    }

    #[test]
    fn this_threads_own_stat_line_parses() {
        let line = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
        let t = parse_task_stat(&line).unwrap();
        assert_eq!(t.state, "R", "{line}");
        assert!((1..=1000).contains(&clock_ticks_per_s()));
    }
}
