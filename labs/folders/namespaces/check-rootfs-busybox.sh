[ -x "$ROOTFS/bin/busybox" ] || { echo "no executable $ROOTFS/bin/busybox"; exit 1; }
chroot "$ROOTFS" /bin/busybox true || { echo "busybox does not run inside $ROOTFS"; exit 1; }
echo "busybox runs in $ROOTFS"
