# Shell functions of the namespaces lab, put in front of every script of lab.yaml.
# POSIX sh: runs under busybox ash, dash and bash.

# lk_path NAME: the full path of the program NAME on PATH (`command -v` may answer a bare name).
lk_path() {
  lk_old_ifs=$IFS; IFS=:
  for lk_dir in $PATH; do
    if [ -f "$lk_dir/$1" ] && [ -x "$lk_dir/$1" ]; then IFS=$lk_old_ifs; echo "$lk_dir/$1"; return 0; fi
  done
  IFS=$lk_old_ifs
  return 1
}

# lk_container LINE...: start a container of $SCRIPT on $ROOTFS, type each LINE into its shell, then
# exit; prints what the container printed (stdout and stderr) and returns container.sh's status.
lk_container() {
  [ -x "$SCRIPT" ] || { echo "no executable $SCRIPT"; return 1; }
  printf '%s\n' "$@" exit | "$SCRIPT" "$ROOTFS" 2>&1
}

# lk_answer TAG OUTPUT: the value the container printed as "TAG:value" (the last one).
lk_answer() {
  printf '%s\n' "$2" | sed -n "s/^$1://p" | tail -n 1
}
