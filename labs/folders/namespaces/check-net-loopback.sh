out=$(lk_container 'echo "lo:$(ip link show lo | head -n 1)"' 'echo "count:$(grep -c : /proc/net/dev)"') || { echo "container.sh failed"; exit 1; }
case "$(lk_answer lo "$out")" in *"<"*UP*">"*) ;; *) echo "lo is down in the container"; exit 1;; esac
[ "$(lk_answer count "$out")" = 1 ] || { echo "the container shares the machine's network"; exit 1; }
echo "lo is up in the container's own network namespace"
