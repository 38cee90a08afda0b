host=$(hostname)
out=$(lk_container 'echo "name:$(hostname)"') || { echo "container.sh failed"; exit 1; }
name=$(lk_answer name "$out")
[ "$(hostname)" = "$host" ] || { echo "the container renamed the machine to $(hostname)"; exit 1; }
[ "$name" = "$CONTAINER_HOSTNAME" ] || { echo "the container is called ${name:-?}, not $CONTAINER_HOSTNAME"; exit 1; }
echo "the container is $name; the machine is still $host"
