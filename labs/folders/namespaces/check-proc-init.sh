out=$(lk_container 'echo "init:$(cat /proc/1/comm)"') || { echo "container.sh failed"; exit 1; }
init=$(lk_answer init "$out")
host=$(cat /proc/1/comm)
[ -n "$init" ] || { echo "the container cannot read /proc/1"; exit 1; }
[ "$init" != "$host" ] || { echo "process 1 in the container's /proc is the machine's $host"; exit 1; }
echo "process 1 in the container's /proc is its own $init (the machine's is $host)"
