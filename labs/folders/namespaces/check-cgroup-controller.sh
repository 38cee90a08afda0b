grep -qw memory /sys/fs/cgroup/cgroup.controllers || { echo "the kernel offers no memory controller"; exit 1; }
grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || { echo "memory is not in /sys/fs/cgroup/cgroup.subtree_control"; exit 1; }
echo "child cgroups get the memory controller"
