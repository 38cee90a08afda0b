rm -f /tmp/labkit-upload-*
for cgroup in /sys/fs/cgroup/labkit-ns-*; do
  [ -d "$cgroup" ] || continue
  while read -r pid; do kill -9 "$pid" 2>/dev/null; done < "$cgroup/cgroup.procs"
  rmdir "$cgroup" && echo "removed $cgroup"
done
rm -rf /tmp/labkit-ns-* "$ROOTFS" "$ROOTFS.new" "$SCRIPT" && echo "removed $ROOTFS and $SCRIPT"
# The cgroup step let child cgroups use the memory controller; undo that when nothing else needs it.
if grep -qw memory /sys/fs/cgroup/cgroup.subtree_control; then
  echo -memory 2>/dev/null > /sys/fs/cgroup/cgroup.subtree_control && echo "memory controller off for child cgroups"
fi
true
