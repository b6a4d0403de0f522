"""``python -m lit_infer predict --config my.yaml``."""

from lit_infer.cli import main

main()
