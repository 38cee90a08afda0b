out=$(lk_container 'echo "links:$(sed -n "s/^ *\([^:]*\):.*/\1/p" /proc/net/dev | tr "\n" " ")"') || { echo "container.sh failed"; exit 1; }
links=$(lk_answer links "$out")
[ -n "$links" ] || { echo "the container cannot list its network interfaces"; exit 1; }
[ "$links" = "lo " ] || { echo "the container sees the interfaces $links"; exit 1; }
echo "the container's only network interface is lo"
