# Allocate more than memory.max inside the container: dd holds one block of ALLOCATE in memory.
out=$(lk_container "echo \"cgroup:\$(cat /proc/self/cgroup)\"" \
  "dd if=/dev/zero of=/dev/null bs=$ALLOCATE count=1 2>/dev/null; echo \"dd:\$?\"")
cgroup=$(lk_answer cgroup "$out")
case "$cgroup" in 0::/?*) ;; *) echo "the container runs in the machine's cgroup ${cgroup:-?}"; exit 1;; esac
status=$(lk_answer dd "$out")
[ "$status" != 0 ] || { echo "dd of $ALLOCATE succeeded: no memory limit below it"; exit 1; }
kills=$(printf '%s\n' "$out" | sed -n 's/.*oom_kill \([0-9]*\).*/\1/p' | tail -n 1)
[ "${kills:-0}" -ge 1 ] || { printf '%s\n' "$out" | tail -n 2; echo "no oom_kill in the container's memory.events"; exit 1; }
left=$(find /sys/fs/cgroup -maxdepth 1 -name 'labkit-ns-*' | head -n 1)
[ -z "$left" ] || { echo "left behind: $left"; exit 1; }
echo "dd of $ALLOCATE was killed in ${cgroup#0::} (oom_kill $kills); the cgroup is gone"
