"""``python -m lit_infer predict --config my.yaml``."""

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

main()
