"""python -m steerlab."""

from steerlab.cli.app import main

main()
