"""``python -m workbench`` = ``rsd-workbench``."""

from workbench.app import main

if __name__ == "__main__":
    raise SystemExit(main())
