"""``python -m wan_desktop.rank_worker JOB``: one worker process of a parallel run (rank ≥ 1),
started by wan_desktop/parallel/launch.py with torchrun's environment variables. It prepares the
job rank 0 wrote (request, options) and runs it through the run owner, which joins the process
group; it writes nothing (rank 0 writes the output). A composition root like cli.py: it picks the engines.

Errors go to this process's stderr (a log file rank 0 quotes when this rank dies) and to the other
ranks through the rendezvous store; rank 0 alone reports to the user.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from . import run
    from .cancel import CancelToken
    from .engines.factory import EngineFactory
    from .errors import Cancelled, WanError
    from .options import RunOptions
    from .request import GenerationRequest

    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    cancel = CancelToken()
    signal.signal(signal.SIGTERM, lambda *_: cancel.cancel("terminated (SIGTERM)"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches rank 0, which tells us
    factory = EngineFactory()
    try:
        prepared = run.prepare(
            GenerationRequest.from_dict(job["request"]),
            RunOptions.from_dict(job["options"]),
            out=Path(job["out"]),  # rank 0's, checked there: this rank writes nothing
            factory=factory,
        )
        run.execute(prepared, components=run.ComponentCache(factory), cancel=cancel)
    except Cancelled as e:
        print(f"cancelled: {e.message}", file=sys.stderr)
        return 130
    except WanError as e:
        print(f"error: {e.one_line()}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
