#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder's image (Ubuntu, with network).
# It installs QEMU and the image tools, installs labkit, and builds the lab VM's image into the cache
# so that each submission only boots a fresh VM from it. See docs/grading.md.
#
# LABKIT_PIP_SPEC: what pip installs as labkit; by default a checkout or wheel you put into the
# autograder zip as labkit/ (or labkit-*.whl). LABKIT_LAB: chroot (default) or docker.
set -euo pipefail
SOURCE="$(cd "$(dirname "$0")" && pwd)"
LAB="${LABKIT_LAB:-chroot}"

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
  qemu-system-x86 qemu-utils mmdebstrap uidmap e2fsprogs busybox-static openssh-client python3-venv >/dev/null

spec="${LABKIT_PIP_SPEC:-}"
if [ -z "$spec" ]; then
  wheel=$(ls "$SOURCE"/labkit-*.whl 2>/dev/null | head -n 1 || true)
  spec="${wheel:-$SOURCE/labkit}"
fi
python3 -m venv /opt/labkit
/opt/labkit/bin/pip install -q "$spec"
ln -sf /opt/labkit/bin/labkit /usr/local/bin/labkit

# Build the image once, now, rather than in every grading run: up builds it, destroy removes the VM.
vm=$([ "$LAB" = docker ] && echo docker0 || echo con0)
labkit vm.up "$vm" && labkit vm.destroy "$vm"
