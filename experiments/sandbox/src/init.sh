#!/bin/busybox sh
# /init of the swaplab nested sandbox (L1). Built into the L1 initramfs by
# experiments::sandbox::initramfs; the protocol is described in sandbox/protocol.rs.
#
# Loads the modules listed in /etc/swaplab-modules, finds the virtio-serial ports
# the host named swaplab.status / swaplab.stdout / swaplab.stderr, reads the job
# (a shell script) from fw_cfg, mounts the host's root over 9p on /newroot, runs
# the job chrooted there with stdout/stderr on the ports, reports its status and
# powers off. Any failure is reported and also powers off: the host never waits
# on a stuck L1.
export PATH=/bin
stage=boot
prefix="swaplab-init: "

say() {
    echo "$prefix$*" >&3
}
off() {
    sync
    poweroff -f
    reboot -f
    exit 1
}
fail() {
    say "fail $stage: $*"
    echo "swaplab-init: fail $stage: $*" >/dev/ttyS0
    off
}
stage() {
    stage=$1
    say "stage $1"
}

mount -t devtmpfs devtmpfs /dev
mount -t proc proc /proc
mount -t sysfs sysfs /sys
# Until the status port exists, protocol lines go to the kernel console.
exec 3>/dev/ttyS0

load() {
    while read -r m; do
        insmod "/lib/modules/$m.ko" || fail "insmod $m"
    done <"$1"
}

stage modules
# Two independent chains (virtio/9p, and kvm) load at once on L1's two vCPUs.
load /etc/swaplab-modules-parallel &
parallel=$!
load /etc/swaplab-modules
wait $parallel || fail "loading the modules in /etc/swaplab-modules-parallel"

# virtio_console adds named ports from a workqueue after the host announces
# them, so they may appear a moment after insmod returns. The modules loaded
# after virtio_console usually cover that; otherwise poll briefly (bounded).
stage ports
tries=0
while :; do
    st= out= err= kick=
    for p in /sys/class/virtio-ports/*; do
        [ -r "$p/name" ] || continue
        case "$(cat "$p/name")" in
        swaplab.status) st=/dev/${p##*/} ;;
        swaplab.stdout) out=/dev/${p##*/} ;;
        swaplab.stderr) err=/dev/${p##*/} ;;
        swaplab.kick) kick=/dev/${p##*/} ;;
        esac
    done
    [ -c "$st" ] && [ -c "$out" ] && [ -c "$err" ] && [ -c "$kick" ] && break
    tries=$((tries + 1))
    [ "$tries" -le 500 ] || fail "virtio-serial ports swaplab.{status,stdout,stderr,kick} did not appear"
    sleep 0.01
done
exec 3>"$st" || fail "cannot open $st"
prefix=

stage job
job=$(cat /sys/firmware/qemu_fw_cfg/by_name/opt/swaplab/job/raw) || fail "no job in fw_cfg (opt/swaplab/job)"

stage mount
mount -t 9p -o trans=virtio,version=9p2000.L,access=any,msize=512000,cache=loose hostroot /newroot ||
    fail "cannot mount the host's root (9p tag hostroot)"
mount -t proc proc /newroot/proc || fail "mount proc"
mount -t sysfs sysfs /newroot/sys || fail "mount sysfs"
mount -t devtmpfs devtmpfs /newroot/dev || fail "mount devtmpfs"
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts /newroot/dev/pts || fail "mount devpts"
mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm || fail "mount /dev/shm"
# L1's own /run (the host's holds its daemons' sockets): inner ends of forwarded sockets live here.
mount -t tmpfs -o mode=755 tmpfs /newroot/run || fail "mount /run"
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup 2>/dev/null
# Loopback up: a command may serve on 127.0.0.1 in L1 (a private redis-server
# for a scenario's far-memory store). L1 has no other network.
ip link set lo up || fail "ip link set lo up"

stage run
# Heartbeat: while the command runs, "alive" every second. The host
# stops an L1 whose heartbeat stops (its kernel wedged: nothing in L1 runs).
# In the background, so the command keeps the foreground's signals.
(while :; do sleep 1; say alive; done) &
beat=$!
echo "$beat" >/newroot/run/swaplab-heartbeat.pid
# Kicks: when the heartbeat stops, the host writes a line to swaplab.kick,
# an interrupt for L1's CPU (see NUDGE_AFTER in qemu.rs). Reading them keeps
# the port's buffers free; their count is in /run/swaplab-kicks.
(n=0; while read -r _; do n=$((n + 1)); echo "$n" >/newroot/run/swaplab-kicks; done) <"$kick" &
kicks=$!
env -i chroot /newroot /bin/sh -c "$job" </dev/null >"$out" 2>"$err"
rc=$?
kill "$beat" "$kicks" 2>/dev/null
# Flush what the command wrote through 9p's cache before saying it is done.
sync
say "exit $rc"
off
