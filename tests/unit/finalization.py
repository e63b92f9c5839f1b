"""Children that end while their daemon threads are inside tidelog calls.

On CPython 3.11 to 3.13 a daemon thread that takes the GIL back while the interpreter
finalizes is ended by a forced unwind, which aborts the process if it meets a native panic
guard ("FATAL: exception not rethrown", exit status 134). The scripts run here make the
timing certain: a daemon thread lets go of the GIL just before the main thread ends, and
wakes while the interpreter finalizes, whose last collection goes through the cyclic
garbage of :data:`LONG_FINALIZATION`.
"""

from __future__ import annotations

import subprocess
import sys

#: Cyclic garbage for the child's last collection (run it before starting the threads).
LONG_FINALIZATION = """
garbage = [[{}, {}] for _ in range(500_000)]
for pair in garbage:
    pair.append(pair)
del garbage
"""

#: A store link whose Kafka clients know no broker: they queue messages, never connect.
NO_BROKER = """
from typing import Any

class NoBroker:
    admin = None
    def client_config(self, **extra: Any) -> dict[str, Any]:
        return {"log_level": 0, **extra}
    def forget(self, member: object) -> None:
        pass
"""


def ends_cleanly(script: str, *args: str) -> None:
    """Runs ``script`` in a child Python and asserts that it exited normally."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=60
    )
    assert "FATAL" not in done.stderr, done.stderr
    assert done.returncode == 0, done.stderr
