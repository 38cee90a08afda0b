missing=""
for applet in sh mount hostname ip dd ls; do
  [ -e "$ROOTFS/bin/$applet" ] || [ -e "$ROOTFS/sbin/$applet" ] || missing="$missing $applet"
done
[ -z "$missing" ] || { echo "no applet links for:$missing"; exit 1; }
[ -d "$ROOTFS/proc" ] || { echo "no directory $ROOTFS/proc"; exit 1; }
echo "applets and /proc mount point in place"
