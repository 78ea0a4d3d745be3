#!/usr/bin/env bash
# provision.sh: set up hostchaos inside the Vagrant VM from the synced checkout.
# The package installs are the project's own scripts (scripts/setup, scripts/install):
# the same code a developer or CI runs, not a copy.
set -euo pipefail
REPO=${HOSTCHAOS_REPO:-/hostchaos}
cd "$REPO"
export DEBIAN_FRONTEND=noninteractive

# shellcheck source=/dev/null
. /etc/os-release
if [[ ${ID:-} == ubuntu ]]; then
    # Ubuntu ships sch_netem, ifb and friends in linux-modules-extra; without it the
    # kernel answers "Specified qdisc not found"
    apt-get update -qq
    apt-get install -y -qq "linux-modules-extra-$(uname -r)"
fi

scripts/setup
scripts/install --enable

# small filesystems of the lab's own for disk-fill experiments, mounted at /mnt/fill-*
LAB=/var/lib/hostchaos-lab
mkdir -p "$LAB"
for fs in ext4 xfs btrfs; do
    image=$LAB/$fs.img
    point=/mnt/fill-$fs
    if [[ ! -f $image ]]; then
        truncate -s 320M "$image"
        "mkfs.$fs" -q "$image" >/dev/null 2>&1 || "mkfs.$fs" "$image" >/dev/null
    fi
    mkdir -p "$point"
    if ! grep -q " $point " /etc/fstab; then
        echo "$image $point $fs loop,nofail 0 0" >>/etc/fstab
    fi
    mountpoint -q "$point" || mount "$point"
done

hostchaos doctor || true  # a kind this kernel cannot run is reported, not fatal

if [[ -n ${HOSTCHAOS_RUN_TESTS:-} ]]; then
    make test
fi
echo "provision: done. Try: sudo hostchaos demo"
