#!/usr/bin/env python3
"""Long-running coverage-guided fuzzing of the sans-IO cores (hours, not CI): atheris (libFuzzer).

    pip install atheris                       # or: pip install -e '.[fuzz]'
    python3 scripts/fuzz.py list              # the targets
    python3 scripts/fuzz.py sip-proxy -max_total_time=3600 corpus/sip-proxy
    python3 scripts/fuzz.py xmpp-s2s -runs=1000000 -max_len=4096

Arguments after the target go to libFuzzer (``-max_total_time``, ``-runs``, ``-jobs``, a corpus
directory ...). A crash is an exception other than the project's own protocol error (the
targets are in ``tests/fuzz_targets.py``, shared with the bounded Hypothesis tests CI runs);
libFuzzer writes the input as ``crash-<sha1>``; replay it with
``python3 scripts/fuzz.py TARGET crash-<sha1>``. Everything runs in memory: no sockets.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main(argv: list[str]) -> int:
    from tests.fuzz_targets import TARGETS

    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.stderr.write(f"usage: {argv[0]} TARGET [libFuzzer options]; targets: ")
        sys.stderr.write(", ".join(sorted(TARGETS)) + "\n")
        return 0 if len(argv) > 1 and argv[1] == "list" else 2
    try:
        import atheris  # type: ignore[import-not-found]
    except ImportError:
        sys.stderr.write("scripts/fuzz.py needs atheris: pip install atheris\n")
        return 2
    target = TARGETS[argv[1]]
    atheris.instrument_all()  # coverage feedback from every module loaded (the cores)
    atheris.Setup([argv[0], *argv[2:]], target)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
