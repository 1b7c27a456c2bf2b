//! The guest's `/init` and its protocol with the host.
//!
//! The host talks to `/init` through kernel parameters, all built and checked
//! against the kernel's 2047-byte limit by [`cmdline_with`] ([`cmdline_with_run`]
//! for just a command):
//!
//! | parameter | meaning |
//! |---|---|
//! | `swaplab.run=<base64>` | the command to run (standard alphabet, padded: survives spaces, quotes, semicolons) |
//! | `swaplab.swap=<device>` | before the command: `mkswap` and `swapon` this block device (e.g. `/dev/vda`) |
//! | `swaplab.channel=1` | the VM has the result channel (COM2): export `SWAPLAB_CHANNEL=/dev/ttyS1` to the command, after putting that tty in raw mode |
//! | `swaplab.shell=1` | no command: an interactive shell on the console |
//! | `swaplab.root=<serial>` | run the command on the root disk: the virtio-blk disk whose serial (GET_ID) is `<serial>`, an ext4 filesystem labelled `swaplab-root` ([`super::rootfs`]), mounted and entered with `chroot` |
//!
//! `/init` (a busybox `sh` script) mounts `/proc`, `/sys`, `/dev` (devtmpfs),
//! `/tmp`, `/run`, brings up the loopback interface, loads the image's modules in order, decodes the command, sets up
//! the channel and swap if asked, runs the command with `sh -c`, and powers off.
//!
//! On the console it prints one marker line when it starts and one when it ends,
//! and with `swaplab.swap` one about swap before the command runs:
//!
//! ```text
//! SWAPLAB-INIT uptime=<seconds since boot>
//! SWAPLAB-SWAP ok <bytes>          swap is on: <bytes> of swap space (from /proc/swaps)
//! SWAPLAB-SWAP fail <reason>       it is not; followed by SWAPLAB-FAIL swap: <reason>
//! ... the command's output ...
//! SWAPLAB-EXIT <status>            the command ran; <status> is its exit status
//! SWAPLAB-FAIL <reason>            /init could not run it (bad encoding, insmod failed,
//!                                  no channel device, swap could not be set up)
//! ```
//!
//! With `swaplab.root`, `/init` also loads the root modules (ext4 and what it
//! needs), waits up to 5 s for the disk, mounts it on `/newroot` (refusing a
//! disk that is also the swap device), bind-mounts `/proc`, `/sys`, `/dev` and
//! the initramfs's `swaplab-guest` into it, and prints `SWAPLAB-ROOT ok
//! <device>` before running the command under `chroot /newroot`, in `/root`;
//! any failure is `SWAPLAB-FAIL root: <reason>`.
//!
//! A swap failure ends the run (the command does not run without the swap it was
//! meant to have); [`find_swap`] reads the swap line. `/init` waits up to 5 s for the
//! swap device to appear.
//!
//! The end marker may follow output that did not end in a newline, so search
//! for it anywhere in a line ([`find_end`]). Without `swaplab.run`, `/init` runs
//! `swaplab-guest info`; with `swaplab.shell=1` it starts an interactive shell
//! on the console. If power-off fails, `/init` exits, the kernel panics, and
//! [`DEFAULT_CMDLINE`]'s `panic=-1` turns that (and any other panic) into an
//! immediate reboot, so a guest always ends.

/// Kernel parameter carrying the base64-encoded command.
pub const RUN_PARAM: &str = "swaplab.run";
/// Kernel parameter asking for an interactive shell (`swaplab.shell=1`).
pub const SHELL_PARAM: &str = "swaplab.shell";
/// Kernel parameter naming the block device to swap on (`swaplab.swap=/dev/vda`).
pub const SWAP_PARAM: &str = "swaplab.swap";
/// Kernel parameter naming the root disk by its serial (`swaplab.root=swaplab-root`).
pub const ROOT_PARAM: &str = "swaplab.root";
/// Printed by `/init` once the root disk is mounted: `ok <device>`.
pub const ROOT_MARKER: &str = "SWAPLAB-ROOT";
/// Kernel parameter announcing the result channel (`swaplab.channel=1`).
pub const CHANNEL_PARAM: &str = "swaplab.channel";
/// The result channel as the guest sees it (COM2).
pub const CHANNEL_DEVICE: &str = "/dev/ttyS1";
/// Environment variable `/init` sets to [`CHANNEL_DEVICE`] for the command; guest
/// programs write their results to the path it names.
pub const CHANNEL_ENV: &str = "SWAPLAB_CHANNEL";
/// Printed by `/init` after setting up swap: `ok <bytes>` or `fail <reason>`.
pub const SWAP_MARKER: &str = "SWAPLAB-SWAP";
/// Printed by `/init` when it starts.
pub const INIT_MARKER: &str = "SWAPLAB-INIT";
/// Printed with the command's exit status.
pub const EXIT_MARKER: &str = "SWAPLAB-EXIT";
/// Printed when `/init` cannot run the command.
pub const FAIL_MARKER: &str = "SWAPLAB-FAIL";
/// The longest kernel command line on x86 (`COMMAND_LINE_SIZE` 2048, with its NUL).
pub const CMDLINE_MAX: usize = 2047;
/// The command `/init` runs when none is given.
pub const DEFAULT_COMMAND: &str = "swaplab-guest info";
/// A kernel command line suited to the image: serial console, quiet (a chatty
/// console is slow under emulation), reboot at once on panic, no PCI probing.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 quiet panic=-1 pci=off";

/// Errors building a command line.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InitError {
    /// Empty command.
    #[error("the guest command is empty")]
    EmptyCommand,
    /// A NUL byte cannot pass through the shell.
    #[error("the guest command contains a NUL byte")]
    NulInCommand,
    /// The command line would exceed the kernel's limit.
    #[error("kernel command line would be {len} bytes, over the kernel's limit of {max}; the guest command may be at most {max_command} bytes here")]
    TooLong {
        /// Resulting length.
        len: usize,
        /// [`CMDLINE_MAX`].
        max: usize,
        /// How long the command could be with this base command line.
        max_command: usize,
    },
    /// A module path that the script cannot hold.
    #[error("module path {0:?} contains whitespace or quotes")]
    BadModulePath(String),
    /// Not valid base64 (decoding).
    #[error("not valid base64")]
    BadBase64,
    /// A swap device the script cannot take.
    #[error("swap device {0:?} must be a /dev path of letters, digits and / _ . - : only")]
    BadSwapDevice(String),
    /// A root disk serial the script cannot take.
    #[error("root disk serial {0:?} must be 1 to 20 letters, digits, _ . or -")]
    BadRootSerial(String),
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decode standard padded base64 (the inverse of [`base64_encode`]).
pub fn base64_decode(text: &str) -> Result<Vec<u8>, InitError> {
    let bytes = text.as_bytes();
    if bytes.len() % 4 != 0 {
        return Err(InitError::BadBase64);
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for (ci, chunk) in bytes.chunks(4).enumerate() {
        let last = ci == bytes.len() / 4 - 1;
        let pad = chunk.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 || (pad > 0 && !last) {
            return Err(InitError::BadBase64);
        }
        let mut n = 0u32;
        for &c in &chunk[..4 - pad] {
            let v = B64
                .iter()
                .position(|&x| x == c)
                .ok_or(InitError::BadBase64)? as u32;
            n = (n << 6) | v;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Ok(out)
}

/// `swaplab.run=<base64>` for `command`.
pub fn run_param(command: &str) -> Result<String, InitError> {
    if command.trim().is_empty() {
        return Err(InitError::EmptyCommand);
    }
    if command.contains('\0') {
        return Err(InitError::NulInCommand);
    }
    Ok(format!("{RUN_PARAM}={}", base64_encode(command.as_bytes())))
}

/// What to ask of `/init` on the kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitParams {
    /// The command (`swaplab.run`); none runs `swaplab-guest info`.
    pub run: Option<String>,
    /// A block device to swap on (`swaplab.swap`), e.g. `/dev/vda`.
    pub swap: Option<String>,
    /// The VM has the result channel (`swaplab.channel=1`).
    pub channel: bool,
    /// The serial of the root disk to run the command on (`swaplab.root`).
    pub root: Option<String>,
}

/// `swaplab.root=<serial>`, checked: what virtio-blk's 20-byte GET_ID can
/// carry and the script can hold unquoted.
pub fn root_param(serial: &str) -> Result<String, InitError> {
    let ok = (1..=20).contains(&serial.len())
        && serial
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(InitError::BadRootSerial(serial.to_string()));
    }
    Ok(format!("{ROOT_PARAM}={serial}"))
}

/// `swaplab.swap=<device>`, checked: a `/dev/` path the script can hold unquoted.
pub fn swap_param(device: &str) -> Result<String, InitError> {
    let ok = device.len() > "/dev/".len()
        && device.starts_with("/dev/")
        && device
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/_.-:".contains(c));
    if !ok {
        return Err(InitError::BadSwapDevice(device.to_string()));
    }
    Ok(format!("{SWAP_PARAM}={device}"))
}

/// `base` plus the parameters for `params`, checked against the kernel's length
/// limit (the error says how long the command may be).
pub fn cmdline_with(base: &str, params: &InitParams) -> Result<String, InitError> {
    let mut words: Vec<String> = Vec::new();
    if !base.trim().is_empty() {
        words.push(base.trim().to_string());
    }
    if let Some(dev) = &params.swap {
        words.push(swap_param(dev)?);
    }
    if params.channel {
        words.push(format!("{CHANNEL_PARAM}=1"));
    }
    if let Some(serial) = &params.root {
        words.push(root_param(serial)?);
    }
    let prefix = words.join(" ");
    let line = match &params.run {
        None => prefix.clone(),
        Some(c) if prefix.is_empty() => run_param(c)?,
        Some(c) => format!("{prefix} {}", run_param(c)?),
    };
    if line.len() > CMDLINE_MAX {
        let overhead = if prefix.is_empty() {
            0
        } else {
            prefix.len() + 1
        } + RUN_PARAM.len()
            + 1;
        let max_command = CMDLINE_MAX.saturating_sub(overhead) / 4 * 3;
        return Err(InitError::TooLong {
            len: line.len(),
            max: CMDLINE_MAX,
            max_command,
        });
    }
    Ok(line)
}

/// `base` plus, if given, the `swaplab.run` parameter for `command`, checked
/// against the kernel's length limit.
pub fn cmdline_with_run(base: &str, command: Option<&str>) -> Result<String, InitError> {
    cmdline_with(
        base,
        &InitParams {
            run: command.map(str::to_string),
            ..InitParams::default()
        },
    )
}

/// What `/init` reported about swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapSetup {
    /// Swap is on, with this many bytes of swap space.
    On(u64),
    /// Swap could not be set up, for this reason.
    Failed(String),
}

/// The swap line `/init` printed, if any.
pub fn find_swap(console: &str) -> Option<SwapSetup> {
    console.lines().find_map(|l| {
        let rest = l[l.find(SWAP_MARKER)? + SWAP_MARKER.len()..].trim_end_matches('\r');
        if let Some(v) = rest.strip_prefix(" ok ") {
            return v.trim().parse().ok().map(SwapSetup::On);
        }
        rest.strip_prefix(" fail ")
            .map(|why| SwapSetup::Failed(why.trim().to_string()))
    })
}

/// How a guest run ended, as `/init` reported it on the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestEnd {
    /// The command ran and exited with this status.
    Exited(i32),
    /// `/init` could not run the command, for this reason.
    Failed(String),
}

/// Find the last end marker in console output (tolerates `\r\n` and output
/// before the marker on the same line).
pub fn find_end(console: &str) -> Option<GuestEnd> {
    let mut end = None;
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(i) = line.rfind(EXIT_MARKER) {
            let rest = line[i + EXIT_MARKER.len()..].trim();
            if let Ok(status) = rest.parse::<i32>() {
                end = Some(GuestEnd::Exited(status));
            }
        }
        if let Some(i) = line.rfind(FAIL_MARKER) {
            let rest = &line[i + FAIL_MARKER.len()..];
            if rest.is_empty() || rest.starts_with(' ') {
                end = Some(GuestEnd::Failed(rest.trim().to_string()));
            }
        }
    }
    end
}

/// The guest uptime (seconds) at which `/init` started, from its start marker.
pub fn find_init_uptime(console: &str) -> Option<f64> {
    console.lines().find_map(|l| {
        let i = l.find(INIT_MARKER)?;
        l[i + INIT_MARKER.len()..]
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("uptime="))
            .and_then(|v| v.trim_end_matches('\r').parse().ok())
    })
}

/// The part of `/init` that mounts the root disk (`swaplab.root`) and runs
/// the command in it, loading `root_list` first.
fn root_block(root_list: &str) -> String {
    let label = super::rootfs::LABEL;
    let guest_program = super::rootfs::GUEST_PROGRAM;
    format!(
        r#"    for m in {root_list}; do
        insmod "$m" || root_fail "insmod $m"
    done
    rm -f {root_list}
    dev=
    i=0
    while [ -z "$dev" ]; do
        for b in "$SWAPLAB_SYS_BLOCK"/vd*; do
            s=
            read -r s < "$b/serial" 2>/dev/null
            [ "$s" = "$root" ] && dev=/dev/${{b##*/}}
        done
        [ -n "$dev" ] && break
        i=$((i + 1))
        [ "$i" -le 50 ] || root_fail "no virtio disk with serial $root"
        sleep 0.1
    done
    [ "$dev" != "$swap" ] || root_fail "$dev is both the root disk and the swap device"
    mkdir -p /newroot
    out=$(mount -t ext4 -o noatime "$dev" /newroot 2>&1) || root_fail "mount $dev:" $out
    test -f /newroot/etc/swaplab-rootfs || root_fail "$dev is not a swaplab root disk (no /etc/swaplab-rootfs; label {label} expected)"
    for d in proc sys dev; do
        mount -o bind /$d /newroot/$d || root_fail "bind-mounting /$d"
    done
    mount -t tmpfs -o mode=755 tmpfs /newroot/run || root_fail "mounting /run"
    mount -o bind /usr/bin/swaplab-guest /newroot{guest_program} || root_fail "bind-mounting swaplab-guest"
    # The booted kernel's modules (the image's, for its own kernel): the disk holds none.
    kv=$(uname -r)
    if [ -d "/lib/modules/$kv" ]; then
        mkdir -p "/newroot/lib/modules/$kv"
        mount -o bind "/lib/modules/$kv" "/newroot/lib/modules/$kv" || root_fail "bind-mounting /lib/modules/$kv"
    fi
    echo "{ROOT_MARKER} ok $dev"
    chroot /newroot /bin/sh -c "cd /root && $cmd"
"#
    )
}

/// The `/init` script, loading `modules` (absolute paths inside the initramfs)
/// in order, and `root_modules` after them when the root disk is asked for.
pub fn script(modules: &[String], root_modules: &[String]) -> Result<String, InitError> {
    for m in modules.iter().chain(root_modules) {
        if m.is_empty() || m.contains(|c: char| c.is_whitespace() || "'\"\\$`".contains(c)) {
            return Err(InitError::BadModulePath(m.clone()));
        }
    }
    let list = modules.join(" ");
    let root_list = root_modules.join(" ");
    let root_block = root_block(&root_list);
    Ok(format!(
        r#"#!/bin/sh
# swaplab guest /init (generated by workloads::image::init; see its docs for the protocol).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=linux
: "${{SWAPLAB_CMDLINE_FILE:=/proc/cmdline}}"
: "${{SWAPLAB_SWAPS_FILE:=/proc/swaps}}"
: "${{SWAPLAB_SYS_BLOCK:=/sys/block}}"
: "${{SWAPLAB_KMSG:=/dev/kmsg}}"

off() {{
    sync
    poweroff -f
    reboot -f
    exit 1
}}
fail() {{
    echo "{FAIL_MARKER} $*"
    off
}}
swap_fail() {{
    echo "{SWAP_MARKER} fail $*"
    fail "swap: $*"
}}
root_fail() {{
    fail "root: $*"
}}

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /tmp /run /root
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run

# Loopback, for programs that talk to themselves (redis-benchmark to redis-server).
ip link set lo up 2>/dev/null

up=unknown
read -r up _ < /proc/uptime
echo "{INIT_MARKER} uptime=$up"

for m in {list}; do
    insmod "$m" || fail "insmod $m"
done

run=
shell=
swap=
channel=
root=
set -f
for arg in $(cat "$SWAPLAB_CMDLINE_FILE"); do
    case "$arg" in
        {RUN_PARAM}=*) run="${{arg#{RUN_PARAM}=}}" ;;
        {SHELL_PARAM}=1) shell=1 ;;
        {SWAP_PARAM}=*) swap="${{arg#{SWAP_PARAM}=}}" ;;
        {CHANNEL_PARAM}=1) channel=1 ;;
        {ROOT_PARAM}=*) root="${{arg#{ROOT_PARAM}=}}" ;;
    esac
done
set +f

# The root disk's modules take guest RAM in the initramfs (ext4 alone is
# about 2 MiB): without a root disk they go at once, with one after loading.
[ -n "$root" ] || rm -f {root_list}

if [ -n "$run" ]; then
    cmd=$(printf '%s' "$run" | base64 -d 2>/dev/null) || fail "{RUN_PARAM} is not valid base64"
    [ -n "$cmd" ] || fail "{RUN_PARAM} decodes to an empty command"
elif [ -n "$shell" ]; then
    cmd='setsid cttyhack sh -l'
else
    cmd='{DEFAULT_COMMAND}'
fi

if [ -n "$channel" ]; then
    test -c {CHANNEL_DEVICE} || fail "{CHANNEL_PARAM}=1 but {CHANNEL_DEVICE} does not exist"
    # Raw: no newline translation for writers that do not set it up themselves.
    stty -F {CHANNEL_DEVICE} raw -echo 2>/dev/null
    export {CHANNEL_ENV}={CHANNEL_DEVICE}
fi

if [ -n "$swap" ]; then
    set -f
    case "$swap" in
        /dev/?*) ;;
        *) swap_fail "{SWAP_PARAM}=$swap is not a /dev path" ;;
    esac
    i=0
    while ! test -b "$swap"; do
        i=$((i + 1))
        [ "$i" -le 50 ] || swap_fail "no block device $swap"
        sleep 0.1
    done
    out=$(mkswap "$swap" 2>&1) || swap_fail "mkswap $swap:" $out
    out=$(swapon "$swap" 2>&1) || swap_fail "swapon $swap:" $out
    bytes=
    areas=0
    last=
    while read -r name _ size _; do
        case "$size" in ''|*[!0-9]*) continue ;; esac
        areas=$((areas + 1))
        last=$((size * 1024))
        [ "$name" = "$swap" ] && bytes=$last
    done < "$SWAPLAB_SWAPS_FILE"
    [ -n "$bytes" ] || [ "$areas" != 1 ] || bytes=$last
    [ -n "$bytes" ] || swap_fail "$swap is not in /proc/swaps after swapon"
    echo "{SWAP_MARKER} ok $bytes"
    set +f
fi

if [ -n "$root" ]; then
{root_block}else
    cd /root
    sh -c "$cmd"
fi
rc=$?
echo "{EXIT_MARKER} $rc"
# The console tty drains by interrupts and poweroff does not wait for it, so
# the marker could be lost with the guest's last bytes. Wait for the tty to
# drain (stty sets its modes with TCSETSW, which waits until the output is
# sent), so the kernel's copy below cannot overtake the command's last bytes.
{{ s=$(stty -g) && stty "$s"; }} <&1 2>/dev/null
# The kernel's own console write is synchronous: the marker goes through it
# too, at a level `quiet` still prints.
echo "<3>{EXIT_MARKER} $rc" >"$SWAPLAB_KMSG" 2>/dev/null
off
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_known_vectors_and_round_trip() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc).unwrap(), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)).unwrap(), all);
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Z!==", "abc"] {
            assert_eq!(base64_decode(bad), Err(InitError::BadBase64), "{bad}");
        }
    }

    #[test]
    fn run_param_has_no_spaces_or_quotes() {
        let cmd = r#"grep MemTotal /proc/meminfo; echo "a  b" 'c;d' $HOME `x` \n"#;
        let p = run_param(cmd).unwrap();
        assert!(p.starts_with("swaplab.run="));
        let value = &p["swaplab.run=".len()..];
        assert!(
            value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+/=".contains(c)),
            "{value}"
        );
        assert_eq!(base64_decode(value).unwrap(), cmd.as_bytes());
    }

    #[test]
    fn cmdline_building_and_limits() {
        assert_eq!(
            cmdline_with_run(" console=ttyS0 ", None).unwrap(),
            "console=ttyS0"
        );
        assert_eq!(
            cmdline_with_run("quiet", Some("nproc")).unwrap(),
            "quiet swaplab.run=bnByb2M="
        );
        assert_eq!(
            cmdline_with_run("", Some("nproc")).unwrap(),
            "swaplab.run=bnByb2M="
        );
        assert_eq!(
            cmdline_with_run("q", Some("  ")),
            Err(InitError::EmptyCommand)
        );
        assert_eq!(
            cmdline_with_run("q", Some("a\0b")),
            Err(InitError::NulInCommand)
        );

        let base = DEFAULT_CMDLINE;
        let err = cmdline_with_run(base, Some(&"x".repeat(2000))).unwrap_err();
        let InitError::TooLong { max_command, .. } = err else {
            panic!("{err:?}")
        };
        // The reported maximum fits exactly; one more byte does not.
        let ok = cmdline_with_run(base, Some(&"x".repeat(max_command))).unwrap();
        assert!(ok.len() <= CMDLINE_MAX);
        assert!(cmdline_with_run(base, Some(&"x".repeat(max_command + 1))).is_err());
        assert!(max_command > 1400, "{max_command}");
    }

    #[test]
    fn init_params_and_swap_devices() {
        let p = InitParams {
            run: Some("nproc".into()),
            swap: Some("/dev/vda".into()),
            channel: true,
            root: None,
        };
        assert_eq!(
            cmdline_with("quiet", &p).unwrap(),
            "quiet swaplab.swap=/dev/vda swaplab.channel=1 swaplab.run=bnByb2M="
        );
        let with_root = InitParams {
            root: Some("swaplab-root".into()),
            ..p.clone()
        };
        assert_eq!(
            cmdline_with("quiet", &with_root).unwrap(),
            "quiet swaplab.swap=/dev/vda swaplab.channel=1 swaplab.root=swaplab-root swaplab.run=bnByb2M="
        );
        for bad in ["", "a b", "x$y", "123456789012345678901"] {
            assert_eq!(root_param(bad), Err(InitError::BadRootSerial(bad.into())));
        }
        assert_eq!(
            cmdline_with(
                "",
                &InitParams {
                    channel: true,
                    ..InitParams::default()
                }
            )
            .unwrap(),
            "swaplab.channel=1"
        );
        assert_eq!(
            cmdline_with("q", &InitParams::default()).unwrap(),
            cmdline_with_run("q", None).unwrap()
        );
        for bad in [
            "vda",
            "/dev/",
            "/dev/vd a",
            "/dev/$(x)",
            "/tmp/swap",
            "/dev/a'b",
        ] {
            let p = InitParams {
                swap: Some(bad.into()),
                ..InitParams::default()
            };
            assert_eq!(
                cmdline_with("q", &p),
                Err(InitError::BadSwapDevice(bad.into())),
                "{bad}"
            );
        }
        assert!(swap_param("/dev/disk/by-id/virtio-swap_1.0").is_ok());
        // The parameters count against the limit the error reports.
        let err = cmdline_with(
            DEFAULT_CMDLINE,
            &InitParams {
                run: Some("x".repeat(2000)),
                ..p.clone()
            },
        )
        .unwrap_err();
        let InitError::TooLong { max_command, .. } = err else {
            panic!("{err:?}")
        };
        let fits = InitParams {
            run: Some("x".repeat(max_command)),
            ..p.clone()
        };
        assert!(cmdline_with(DEFAULT_CMDLINE, &fits).unwrap().len() <= CMDLINE_MAX);
        let over = InitParams {
            run: Some("x".repeat(max_command + 1)),
            ..p
        };
        assert!(cmdline_with(DEFAULT_CMDLINE, &over).is_err());
    }

    #[test]
    fn swap_markers() {
        assert_eq!(
            find_swap("x\r\nSWAPLAB-SWAP ok 268431360\r\n"),
            Some(SwapSetup::On(268_431_360))
        );
        assert_eq!(
            find_swap("SWAPLAB-SWAP fail no block device /dev/vda\n"),
            Some(SwapSetup::Failed("no block device /dev/vda".into()))
        );
        assert_eq!(find_swap("SWAPLAB-SWAP ok many\nnothing"), None);
    }

    #[test]
    fn end_markers() {
        assert_eq!(
            find_end("boot\r\nhi\r\nSWAPLAB-EXIT 0\r\n"),
            Some(GuestEnd::Exited(0))
        );
        assert_eq!(
            find_end("no newline at endSWAPLAB-EXIT 127\n"),
            Some(GuestEnd::Exited(127))
        );
        assert_eq!(
            find_end("SWAPLAB-FAIL insmod /lib/modules/x.ko\n"),
            Some(GuestEnd::Failed("insmod /lib/modules/x.ko".into()))
        );
        assert_eq!(
            find_end("SWAPLAB-EXIT 1\nSWAPLAB-EXIT 3\n"),
            Some(GuestEnd::Exited(3))
        );
        assert_eq!(find_end("SWAPLAB-EXIT soon\nSWAPLAB-FAILURE\n"), None);
        assert_eq!(find_end("[    1.0] Kernel panic - not syncing\n"), None);
        assert_eq!(
            find_init_uptime("x\r\nSWAPLAB-INIT uptime=2.75\r\n"),
            Some(2.75)
        );
        assert_eq!(find_init_uptime("nothing"), None);
    }

    #[test]
    fn script_embeds_modules_and_rejects_odd_paths() {
        let s = script(
            &["/lib/modules/v/a.ko".into(), "/lib/modules/v/b.ko".into()],
            &["/lib/modules/v/ext4.ko".into()],
        )
        .unwrap();
        assert!(s.contains("for m in /lib/modules/v/ext4.ko; do"));
        assert!(s.starts_with("#!/bin/sh\n"));
        assert!(s.contains("for m in /lib/modules/v/a.ko /lib/modules/v/b.ko; do"));
        assert!(s.contains("echo \"SWAPLAB-EXIT $rc\""));
        assert!(s.contains("echo \"<3>SWAPLAB-EXIT $rc\" >\"$SWAPLAB_KMSG\""));
        // The tty drains between the two markers.
        let tty = s.find("echo \"SWAPLAB-EXIT $rc\"").unwrap();
        let drain = s
            .find("{ s=$(stty -g) && stty \"$s\"; } <&1 2>/dev/null")
            .unwrap();
        let kmsg = s.find("echo \"<3>SWAPLAB-EXIT").unwrap();
        assert!(tty < drain && drain < kmsg);
        assert!(s.contains("swaplab.swap=*) swap="));
        assert!(s.contains("export SWAPLAB_CHANNEL=/dev/ttyS1"));
        assert!(matches!(
            script(&["a b.ko".into()], &[]),
            Err(InitError::BadModulePath(_))
        ));
        assert!(matches!(
            script(&[], &["a$(x).ko".into()]),
            Err(InitError::BadModulePath(_))
        ));
    }
}
