"""`python -m edgecli` runs the CLI, same as the `edgecli` console script."""

from edgecli.cli import main

if __name__ == "__main__":
    main()
