"""`python -m headstart`: the command line, as torchrun launches it (`torchrun ... -m headstart fit ...`)."""

from .cli import main

if __name__ == "__main__":
    main()
