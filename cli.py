"""`python cli.py ...` from a checkout: the same command as the installed `deenroll`."""

from deenroll.cli import main

if __name__ == "__main__":
    main()
