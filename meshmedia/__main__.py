"""`python -m meshmedia` runs the command line."""

from meshmedia.cli import main

main()
