"""``python -m adn``: the same as the ``adn`` command."""

import sys

from adn.cli import main

if __name__ == "__main__":
    sys.exit(main())
