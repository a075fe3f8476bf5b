"""``python -m inspectnet``: the same command as ``inspectnet``."""

from .cli import main

if __name__ == "__main__":
    main()
