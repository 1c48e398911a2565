"""``python -m flywheel`` is the ``flywheel`` command."""

from flywheel.cli.main import main

main()
