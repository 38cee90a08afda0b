# Let child cgroups use the memory controller (the root cgroup may hold processes itself).
grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory > /sys/fs/cgroup/cgroup.subtree_control
