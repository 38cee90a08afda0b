out=$(lk_container 'echo "pid:$$"') || { echo "container.sh failed"; exit 1; }
pid=$(lk_answer pid "$out")
[ "$pid" = 1 ] || { echo "the container's shell is process ${pid:-?} (it should be 1)"; exit 1; }
echo "the container's shell is process 1 of its own PID namespace"
