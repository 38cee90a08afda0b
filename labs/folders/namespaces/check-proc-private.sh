out=$(lk_container 'echo "count:$(ls /proc | grep -c "^[0-9]")"') || { echo "container.sh failed"; exit 1; }
count=$(lk_answer count "$out")
[ "${count:-0}" -gt 0 ] || { echo "no /proc inside the container"; exit 1; }
[ "$count" -le 5 ] || { echo "the container's /proc shows $count processes: it is the machine's"; exit 1; }
echo "the container's /proc shows $count processes: its own"
