#!/usr/bin/env bash
# Install what swaplab needs on a Debian 12 machine (idempotent), build it, and
# build the guest image into the cache. Safe to run again: it only does what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(busybox-static qemu-system-x86 cpio zstd xz-utils util-linux kmod debian-archive-keyring tmux librsvg2-bin mmdebstrap e2fsprogs redis-server iproute2)

missing=()
for p in "${PKGS[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # redis-server's package starts a system redis on install. The tests start their
    # own servers on free loopback ports and the far-memory store is pointed at one by
    # URL, so setup must leave none running that was not running before: a
    # policy-rc.d that denies every start (exit 101, see
    # /usr/share/doc/init-system-helpers/README.policy-rc.d) stands while apt runs
    # (removed on exit, also when apt fails), unless the machine has its own policy,
    # which is left alone. Should a redis start all the same (a policy that allows it),
    # its service is stopped and disabled afterwards.
    policy=/usr/sbin/policy-rc.d
    own_policy=no
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\n# swaplab setup: no service starts while packages install\nexit 101\n' >"$policy"
        chmod 0755 "$policy"
        own_policy=yes
        trap 'rm -f "$policy"' EXIT
    fi
    redis_before=$(pgrep -x redis-server >/dev/null && echo yes || echo no)
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    if [ "$own_policy" = yes ]; then
        rm -f "$policy"
        trap - EXIT
    fi
    if [[ " ${missing[*]} " == *" redis-server "* ]]; then
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
            systemctl disable --now redis-server.service >/dev/null 2>&1 || true
        elif [ "$redis_before" = no ] && pgrep -x redis-server >/dev/null; then
            service redis-server stop >/dev/null 2>&1 || true
        fi
    fi
fi
# `apt-get download` (the guest kernel) needs package lists even when nothing was missing.
if [ -z "$(ls -A /var/lib/apt/lists 2>/dev/null | grep -v -e lock -e partial)" ]; then
    apt-get update -qq
fi

echo "setup: building swaplab (release)" >&2
cargo build --release --quiet -p swaplab --bin swaplab
echo "setup: building the guest image and root disk (cached)" >&2
# The root disk (Debian bookworm with the applications, an ext4 image) is built
# with mmdebstrap from Debian's archive on the first run only (about 100 s).
./target/release/swaplab image --root-disk >&2
# The nested sandbox's L1 kernel (bookworm-backports, through a private apt setup under
# the cache; the host's apt sources are not changed) and initramfs. No network when cached.
echo "setup: preparing the nested sandbox's L1 kernel (cached)" >&2
./target/release/swaplab sandbox --prepare >&2
