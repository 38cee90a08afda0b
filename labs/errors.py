"""User-facing failures: one plain line of what is wrong, one of what to do, and the exit status."""

USAGE = 2
UNREACHABLE = 3


class LabError(Exception):
    """An error the user can act on; the CLI prints `message` and `hint` and exits with `code`."""

    code = USAGE

    def __init__(self, message: str, hint: str = "", code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.message}\n{self.hint}" if self.hint else self.message


class UsageError(LabError):
    """Bad flags or configuration (exit 2)."""

    code = USAGE


class TargetError(LabError):
    """The target could not be provisioned or reached (exit 3)."""

    code = UNREACHABLE


class StepFailed(LabError):
    """A step's action failed; the step stops with this message and hint, and the lab fails (exit 1)."""

    code = 1


DISK_FULL = "No space left on device"
DISK_FULL_HINT = "Free space on the target (df -h shows where), then run the lab again: steps already done are skipped."


class DiskFull(StepFailed):
    """The target ran out of disk space during a step."""
