"""``python -m tlgan ...``: the same command line as the installed ``tlgan``."""

from tlgan.cli import main

if __name__ == "__main__":
    main()
