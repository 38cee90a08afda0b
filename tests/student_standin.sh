#!/bin/sh
# A STAND-IN for a student's own VM, used by scripts/bench_class only (never by a test of labkit's
# behaviour). A class of 200 students has 200 VMs, each running its own checks on its own CPU; 200
# VMs cannot run on the benchmark's machine, and running the 200 students' real checks on it instead
# measures its CPU, not the checker. So sshd runs this script for every command of a stand-in student
# (ForceCommand), and:
#
#  - the check batch (labkit's one command holding every check, recognised by its run marker
#    @@labkit-<12 hex>) does no work here: the script waits the student-side work time, then prints
#    the recording of a real solved student's batch (stdout, stderr and exit status, captured at the
#    bench's start from a real check of a real solved student on this machine) with the marker of
#    this run in place of the recorded one, so the checker parses real output;
#  - any other command runs for real, as sshd would have run it.
#
# The login, the SSH session and the bytes on the wire are real: only the student's checks are not.
#
# Usage (an sshd_config line): ForceCommand sh tests/student_standin.sh DIR
# DIR holds: work (seconds to wait, a sleep(1) argument), stdout, stderr, status (the recording).

dir=$1
command=${SSH_ORIGINAL_COMMAND-}

# The marker's 12 hex digits, without starting a process: the 12 characters after the first
# "@@labkit-" (none when fewer follow).
case $command in
*@@labkit-*)
	rest=${command#*@@labkit-}
	hex=${rest%"${rest#????????????}"}
	;;
*) hex= ;;
esac
case $hex in
'' | *[!0-9a-f]*) exec sh -c "$command" ;;
esac

read -r work <"$dir/work"
read -r status <"$dir/status"
sleep "$work"
sed "s/@@labkit-[0-9a-f]\{12\}/@@labkit-$hex/g" "$dir/stdout"
sed "s/@@labkit-[0-9a-f]\{12\}/@@labkit-$hex/g" "$dir/stderr" >&2
exit "$status"
