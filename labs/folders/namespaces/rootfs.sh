# A rootfs of its own: a copy of the chroot lab's when that one works, else built from the
# target's busybox. Made under a temporary name and renamed, so a failure leaves nothing half-made.
rm -rf "$ROOTFS.new"
if [ -x "$WORKDIR/rootfs/bin/busybox" ] && chroot "$WORKDIR/rootfs" /bin/busybox true 2>/dev/null; then
  echo "copying the chroot lab's rootfs"
  cp -a "$WORKDIR/rootfs" "$ROOTFS.new"
else
  busybox=$(lk_path busybox) || { echo "the target has no busybox: install busybox-static"; exit 1; }
  echo "building a rootfs from $busybox"
  mkdir -p "$ROOTFS.new/bin" "$ROOTFS.new/sbin" "$ROOTFS.new/usr/bin" "$ROOTFS.new/usr/sbin"
  cp "$busybox" "$ROOTFS.new/bin/busybox"
fi
mkdir -p "$ROOTFS.new/proc" "$ROOTFS.new/tmp" &&
  chroot "$ROOTFS.new" /bin/busybox --install -s &&
  mv "$ROOTFS.new" "$ROOTFS"
