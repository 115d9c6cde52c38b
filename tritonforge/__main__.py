"""``python -m tritonforge``: the ``tritonforge`` command."""

from tritonforge.cli import main

if __name__ == "__main__":
    main()
