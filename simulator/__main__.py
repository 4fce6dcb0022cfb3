"""``python -m simulator`` is ``edgesim``."""

from simulator.cli import main

if __name__ == "__main__":
    main()
