"""``python -m ptyopt`` runs the command-line interface (the same as the ``ptyopt`` command)."""

from ptyopt.cli import main

main()
