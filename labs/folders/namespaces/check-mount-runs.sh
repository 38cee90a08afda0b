out=$(lk_container 'echo "answer:$((6 * 7))"') || { printf '%s\n' "$out" | tail -n 3; echo "container.sh failed"; exit 1; }
[ "$(lk_answer answer "$out")" = 42 ] || { printf '%s\n' "$out" | tail -n 3; echo "no shell answered in the container"; exit 1; }
echo "a container of $SCRIPT answers"
