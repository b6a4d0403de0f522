"""``python -m lit_infer predict --config my.yaml``; :func:`run` is the ``lit-infer`` script too."""

import gc
import os
import sys

# ``python -m`` puts the working directory first on the import path, where a stray ``numpy.py`` or ``mpi4py.py``
# would replace or add a module before anything is checked. lit_infer looks there only for the modules a config
# names (lit_infer/own_code.py), as under the ``lit-infer`` script.
if not sys.flags.safe_path and sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

try:
    from lit_infer.cli import main
except KeyboardInterrupt:  # Ctrl-C before the CLI's own catch is in place: the same one line, not a traceback
    print("lit-infer: error: interrupted before the first batch; nothing written", file=sys.stderr)
    raise SystemExit(130) from None


def run() -> None:
    """The command, as the whole process: ``main()``, then an exit that skips the interpreter's last garbage passes.

    torch, torchvision and Lightning leave about a million objects; the collections the interpreter runs while it
    shuts down walk them all, 1-2 s of CPU per process (each rank, each ``lit-infer`` command) with nothing to free
    that the exit does not. Frozen, they are skipped; threads are still joined, ``atexit`` handlers (the process
    group's end) still run and stdout/stderr are still flushed. Only here: ``main()`` called inside a longer-lived
    process (a test, a notebook) must leave its garbage collectable.
    """
    try:
        main()
    finally:
        gc.freeze()


if __name__ == "__main__":
    run()
