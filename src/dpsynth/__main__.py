"""``python -m dpsynth``: the same as the ``dpsynth`` command."""

from dpsynth.cli import main

if __name__ == "__main__":
    main()
