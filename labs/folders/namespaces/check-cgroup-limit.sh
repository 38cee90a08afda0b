# Allocate more than memory.max inside the container: a subshell holds ALLOCATE bytes in a variable
# (the container has no /dev, so no /dev/zero). Without a limit it ends well; with one it is killed.
out=$(lk_container "echo \"cgroup:\$(cat /proc/self/cgroup)\"" \
  "( x=\$(yes | head -c $ALLOCATE); echo \"size:\${#x}\" ); echo \"alloc:\$?\"")
cgroup=$(lk_answer cgroup "$out")
case "$cgroup" in 0::/?*) ;; *) echo "the container runs in the machine's cgroup ${cgroup:-?}"; exit 1;; esac
status=$(lk_answer alloc "$out")
[ -n "$status" ] || { printf '%s\n' "$out" | tail -n 2; echo "the container ended before the allocation finished"; exit 1; }
[ "$status" != 0 ] || { echo "an allocation of $ALLOCATE bytes succeeded: no memory limit below it"; exit 1; }
kills=$(printf '%s\n' "$out" | sed -n 's/.*oom_kill \([0-9]*\).*/\1/p' | tail -n 1)
[ "${kills:-0}" -ge 1 ] || { printf '%s\n' "$out" | tail -n 2; echo "no oom_kill in the container's memory.events"; exit 1; }
left=$(find /sys/fs/cgroup -maxdepth 1 -name 'labkit-ns-*' | head -n 1)
[ -z "$left" ] || { echo "left behind: $left"; exit 1; }
echo "an allocation of $ALLOCATE bytes was killed in ${cgroup#0::} (oom_kill $kills); the cgroup is gone"
