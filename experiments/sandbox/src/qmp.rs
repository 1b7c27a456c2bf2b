//! A minimal QMP client (QEMU's JSON machine protocol) over the monitor
//! socket QEMU inherits (`-chardev socket,fd=N -mon mode=control`), used only
//! when L1 falls silent: to ask QEMU what L1's CPU is doing (`info registers`,
//! `info lapic` through `human-monitor-command`) and to send it an NMI
//! (`inject-nmi`), which wakes a CPU halted with its timer interrupt lost.
//!
//! The protocol, as QEMU documents it (docs/interop/qmp-spec): QEMU greets
//! with `{"QMP": {...}}`; the client leaves capabilities negotiation with
//! `{"execute": "qmp_capabilities"}`; each command gets one line with
//! `"return"` or `"error"`; asynchronous `"event"` lines may come between
//! (only after negotiation). Every read has a deadline: a QEMU that does not
//! answer costs seconds, never the supervisor.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{json, Value};

/// How long one answer may take.
const ANSWER: Duration = Duration::from_secs(5);
/// Longest line read from QEMU (an `info registers` is about 2 KiB per CPU).
const MAX_LINE: usize = 256 * 1024;

/// One QMP session.
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    negotiated: bool,
}

impl Qmp {
    /// A session over `stream`, QEMU's monitor; nothing is read until the
    /// first command.
    pub fn new(stream: UnixStream) -> std::io::Result<Qmp> {
        stream.set_read_timeout(Some(ANSWER))?;
        stream.set_write_timeout(Some(ANSWER))?;
        let writer = stream.try_clone()?;
        Ok(Qmp {
            reader: BufReader::new(stream),
            writer,
            negotiated: false,
        })
    }

    /// The next JSON object QEMU sends.
    fn next(&mut self) -> Result<Value, String> {
        let mut line = Vec::new();
        loop {
            let got = self
                .reader
                .by_ref()
                .take((MAX_LINE - line.len()) as u64 + 1)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("reading QEMU's monitor: {e}"))?;
            if got == 0 {
                return Err("QEMU's monitor closed".into());
            }
            if line.len() > MAX_LINE {
                return Err("QEMU's monitor sent an overlong line".into());
            }
            if line.ends_with(b"\n") {
                break;
            }
        }
        serde_json::from_slice(&line).map_err(|e| format!("QEMU's monitor sent no JSON: {e}"))
    }

    /// Sends one command and waits for its answer, skipping events.
    fn call(&mut self, execute: &str, arguments: Option<Value>) -> Result<Value, String> {
        let mut msg = json!({ "execute": execute });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .map_err(|e| format!("writing to QEMU's monitor: {e}"))?;
        loop {
            let v = self.next()?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                let desc = e.get("desc").and_then(Value::as_str).unwrap_or("no reason");
                return Err(format!("QEMU refused {execute}: {desc}"));
            }
            // An event, or anything else: not the answer.
        }
    }

    /// Leaves capabilities negotiation, once.
    fn negotiate(&mut self) -> Result<(), String> {
        if self.negotiated {
            return Ok(());
        }
        let greeting = self.next()?;
        if greeting.get("QMP").is_none() {
            return Err(format!("QEMU's monitor did not greet: {greeting}"));
        }
        self.call("qmp_capabilities", None)?;
        self.negotiated = true;
        Ok(())
    }

    /// A command, negotiating first if needed.
    pub fn execute(&mut self, execute: &str, arguments: Option<Value>) -> Result<Value, String> {
        self.negotiate()?;
        self.call(execute, arguments)
    }

    /// A human monitor command's text (`info registers`).
    pub fn hmp(&mut self, command_line: &str) -> Result<String, String> {
        let r = self.execute(
            "human-monitor-command",
            Some(json!({ "command-line": command_line })),
        )?;
        r.as_str()
            .map(str::to_string)
            .ok_or_else(|| format!("QEMU answered {command_line:?} with {r}"))
    }
}

/// The few facts of an `info registers` dump (QEMU's x86 format) that tell a
/// halted CPU (waiting for an interrupt) from a busy one: `RIP`, `CPL`,
/// whether interrupts are enabled (`IF` in `RFL`) and `HLT`. One line per CPU.
pub fn cpu_summary(registers: &str) -> String {
    let field = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!("{name}="))? + name.len() + 1;
        Some(
            line[at..]
                .split(|c: char| c.is_whitespace())
                .next()
                .unwrap_or("")
                .to_string(),
        )
    };
    let mut cpus = Vec::new();
    let mut rip = None;
    for line in registers.lines() {
        if let Some(r) = field(line, "RIP") {
            rip = Some(r);
        }
        if let (Some(flags), Some(cpl), Some(hlt)) =
            (field(line, "RFL"), field(line, "CPL"), field(line, "HLT"))
        {
            let iflag = u64::from_str_radix(&flags, 16)
                .map(|f| if f & 0x200 != 0 { "on" } else { "off" })
                .unwrap_or("?");
            cpus.push(format!(
                "CPU {}: RIP={} CPL={cpl} interrupts {iflag}, {}",
                cpus.len(),
                rip.take().unwrap_or_else(|| "?".into()),
                if hlt == "1" { "halted" } else { "running" }
            ));
        }
    }
    if cpus.is_empty() {
        "no CPU state in QEMU's answer".into()
    } else {
        cpus.join("; ")
    }
}

/// The interrupts an `info lapic` dump shows requested (`IRR`) and in
/// service (`ISR`): a vector requested for long with interrupts on is one the
/// emulated CPU does not take.
pub fn lapic_summary(lapic: &str) -> String {
    let line = |name: &str| {
        lapic
            .lines()
            .find_map(|l| l.trim().strip_prefix(name).map(str::trim))
            .filter(|v| !v.is_empty())
            .unwrap_or("?")
            .to_string()
    };
    format!("LAPIC IRR {}, ISR {}", line("IRR"), line("ISR"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted QEMU: checks each request line and answers it.
    fn fake(script: Vec<(&'static str, Vec<String>)>, greeting: &'static str) -> UnixStream {
        let (ours, theirs) = UnixStream::pair().unwrap();
        std::thread::spawn(move || {
            let mut w = theirs.try_clone().unwrap();
            w.write_all(greeting.as_bytes()).unwrap();
            let mut r = BufReader::new(theirs);
            for (expect, answers) in script {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 {
                    return;
                }
                assert!(line.contains(expect), "{line:?} lacks {expect:?}");
                for a in answers {
                    w.write_all(a.as_bytes()).unwrap();
                }
            }
            let mut rest = Vec::new();
            let _ = r.read_to_end(&mut rest);
        });
        ours
    }

    const GREETING: &str = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";

    #[test]
    fn negotiates_once_and_skips_events() {
        let s = fake(
            vec![
                ("qmp_capabilities", vec!["{\"return\": {}}\r\n".into()]),
                (
                    "info registers",
                    vec![
                        "{\"event\": \"NMI\", \"timestamp\": {}}\r\n".into(),
                        "{\"return\": \"RIP=ffffffff81000000 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\\r\\n\"}\r\n".into(),
                    ],
                ),
                ("inject-nmi", vec!["{\"return\": {}}\r\n".into()]),
            ],
            GREETING,
        );
        let mut q = Qmp::new(s).unwrap();
        let regs = q.hmp("info registers").unwrap();
        assert_eq!(
            cpu_summary(&regs),
            "CPU 0: RIP=ffffffff81000000 CPL=0 interrupts on, halted"
        );
        assert_eq!(q.execute("inject-nmi", None).unwrap(), json!({}));
    }

    #[test]
    fn errors_and_silence_are_errors_not_hangs() {
        let s = fake(
            vec![
                ("qmp_capabilities", vec!["{\"return\": {}}\r\n".into()]),
                (
                    "inject-nmi",
                    vec!["{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\r\n".into()],
                ),
            ],
            GREETING,
        );
        let mut q = Qmp::new(s).unwrap();
        assert_eq!(
            q.execute("inject-nmi", None).unwrap_err(),
            "QEMU refused inject-nmi: no"
        );
        // A peer that never greets: the read's deadline ends the wait.
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let mut q = Qmp::new(ours).unwrap();
        q.reader
            .get_ref()
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        assert!(q
            .hmp("info registers")
            .unwrap_err()
            .contains("reading QEMU's monitor"));
        // Not QMP at all.
        let s = fake(vec![], "(qemu) \n");
        let mut q = Qmp::new(s).unwrap();
        assert!(q.hmp("info lapic").unwrap_err().contains("no JSON"));
    }

    #[test]
    fn summary_reads_every_cpu_and_the_interrupt_flag() {
        let two = "RAX=0 RBX=0\nRIP=ffffffff8100abcd RFL=00000046 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\n\
                   RAX=1\nRIP=00007f0000001000 RFL=00000202 [-------] CPL=3 II=0 A20=1 SMM=0 HLT=0\n";
        assert_eq!(
            cpu_summary(two),
            "CPU 0: RIP=ffffffff8100abcd CPL=0 interrupts off, halted; \
             CPU 1: RIP=00007f0000001000 CPL=3 interrupts on, running"
        );
        assert_eq!(cpu_summary("garbage"), "no CPU state in QEMU's answer");
        let lapic = "dumping local APIC state for CPU 0 \nLVTT\t 0x000000ec one-shot\n\
                     ESR\t 0x00000000\nISR\t (none)\nIRR\t 236 \nAPR 0x00 TPR 0x10\n";
        assert_eq!(lapic_summary(lapic), "LAPIC IRR 236, ISR (none)");
        assert_eq!(lapic_summary(""), "LAPIC IRR ?, ISR ?");
    }
}
