rm -f /tmp/labkit-upload-*
for cgroup in /sys/fs/cgroup/labkit-ns-*; do
  [ -d "$cgroup" ] || continue
  while read -r pid; do kill -9 "$pid" 2>/dev/null; done < "$cgroup/cgroup.procs"
  rmdir "$cgroup" && echo "removed $cgroup"
done
rm -rf /tmp/labkit-ns-* "$ROOTFS" "$ROOTFS.new" "$SCRIPT" && echo "removed $ROOTFS and $SCRIPT"
