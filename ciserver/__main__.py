"""`python -m ciserver`: the same as the `ciserver` command."""

from ciserver.cli import main

main()
