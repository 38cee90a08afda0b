before=$(grep -c . /proc/mounts)
out=$(lk_container 'touch /labkit-probe' 'echo "seen:$(ls /labkit-probe)"') || { echo "container.sh failed"; exit 1; }
[ "$(lk_answer seen "$out")" = /labkit-probe ] || { echo "the container's root is not writable"; exit 1; }
[ ! -e "$ROOTFS/labkit-probe" ] || { rm -f "$ROOTFS/labkit-probe"; echo "the container wrote into the rootfs itself"; exit 1; }
after=$(grep -c . /proc/mounts)
[ "$after" = "$before" ] || { echo "the machine has $((after - before)) more mounts after the container ended"; exit 1; }
left=$(find /tmp -maxdepth 1 -name 'labkit-ns-*' | head -n 1)
[ -z "$left" ] || { echo "left behind: $left"; exit 1; }
grep -Eq 'unshare .*(-[a-z]*m|--mount)' "$SCRIPT" || { echo "$SCRIPT starts no mount namespace (unshare -m)"; exit 1; }
echo "the overlay lived in the container's mount namespace; nothing left on the machine"
