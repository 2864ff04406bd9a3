"""The frozen app's entry script (PyInstaller starts here): the `vpdesk` command."""

from vpdesk.__main__ import main

if __name__ == "__main__":
    raise SystemExit(main())
