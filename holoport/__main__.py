import signal
import sys

_sigint = False  # a Ctrl-C has arrived


def _on_sigint(signum, frame) -> None:
    """Python's own Ctrl-C behaviour, remembered: a KeyboardInterrupt landing inside a C
    extension's import (numpy's, say) comes out as an ImportError, which must still read as
    'interrupted' rather than as a broken install."""
    global _sigint
    _sigint = True
    raise KeyboardInterrupt


signal.signal(signal.SIGINT, _on_sigint)
try:
    try:
        from holoport.cli import main

        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the command loads, or between its handlers
        code = 130
    except Exception:
        if not _sigint:
            raise
        print("holoport: interrupted", file=sys.stderr)
        code = 130
    # a Ctrl-C from here on (the rest of the process group's, while Python shuts down) must not
    # turn a clean exit into death by SIGINT
    signal.signal(signal.SIGINT, signal.SIG_IGN)
except KeyboardInterrupt:  # one that arrived just as the command returned, before the line above
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    code = 130
# CPython's `python -m` ends the process by SIGINT, whatever the exit code, when a
# KeyboardInterrupt escaped any exec() of a string on its way up (scipy's array-API shim
# execs its imports while numba loads): the interpreter's "unhandled KeyboardInterrupt" flag
# stays set though we caught it. Every exec() clears that flag first.
exec("pass", {})
raise SystemExit(code)
