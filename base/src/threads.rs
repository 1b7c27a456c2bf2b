//! What every thread of this process is doing, from `/proc/self/task`: for
//! a guest that stops making progress (the watchdog's time limit), the one
//! record that says which thread waits where (a vCPU in `handle_userfault`, a
//! device worker on a lock, a handler spinning).

use std::fmt::Write;
use std::path::Path;

/// Kernel stack frames kept per thread.
const STACK_FRAMES: usize = 8;

/// One line per thread: `tid comm state wchan [stack frames]` (the stack
/// only where the kernel shows it, i.e. to root).
pub fn dump() -> String {
    dump_from(Path::new("/proc/self/task"))
}

/// Listings of the task directory merged: Linux walks a process's thread
/// list for `readdir` and stops early when the thread it stands on exits, so
/// one listing can miss live threads while others come and go.
const LISTINGS: usize = 3;

fn dump_from(tasks: &Path) -> String {
    let mut tids = std::collections::BTreeSet::new();
    for _ in 0..LISTINGS {
        match std::fs::read_dir(tasks) {
            Ok(d) => {
                tids.extend(d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok()))
            }
            Err(e) => return format!("cannot list {}: {e}", tasks.display()),
        }
    }
    let mut out = String::new();
    for tid in tids {
        let dir = tasks.join(tid.to_string());
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        let comm = read("comm");
        let state = state_of(&read("stat")).unwrap_or('?');
        let wchan = read("wchan");
        let stack: Vec<String> = read("stack")
            .lines()
            .take(STACK_FRAMES)
            .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
            .collect();
        let _ = write!(
            out,
            "{tid} {} {state} {}",
            comm.trim(),
            match wchan.trim() {
                "" | "0" => "-",
                w => w,
            }
        );
        if !stack.is_empty() {
            let _ = write!(out, " [{}]", stack.join(" < "));
        }
        out.push('\n');
    }
    out
}

/// The state letter of a `/proc/.../stat` line (after the parenthesised
/// command, which may itself hold spaces and parentheses).
fn state_of(stat: &str) -> Option<char> {
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_letter_survives_odd_command_names() {
        assert_eq!(state_of("123 (vcpu 0) S 1 2 3"), Some('S'));
        assert_eq!(state_of("7 (a) b) (c) D 1"), Some('D'));
        assert_eq!(state_of("garbage"), None);
    }

    #[test]
    fn lists_every_thread_by_name_with_its_state() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (started_tx, started) = std::sync::mpsc::channel::<()>();
        let t = std::thread::Builder::new()
            .name("dump-probe".into())
            .spawn(move || {
                // std names the OS thread before running this.
                let _ = started_tx.send(());
                let _ = rx.recv();
            })
            .unwrap();
        started.recv().unwrap();
        let d = dump();
        let _ = tx.send(());
        t.join().unwrap();
        let probe = d
            .lines()
            .find(|l| l.contains(" dump-probe "))
            .unwrap_or_else(|| panic!("{d}"));
        // A real state letter (running, or already parked on its channel).
        let state = probe.split(' ').nth(2).unwrap();
        assert!(["R", "S"].contains(&state), "{probe}");
        assert!(d.lines().count() >= 2, "{d}");
        assert!(dump_from(Path::new("/nonexistent")).starts_with("cannot list"));
    }
}
