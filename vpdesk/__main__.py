"""`vpdesk` / `python -m vpdesk`: the dispatch console (see vpdesk.app)."""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from vpdesk.app import main as run  # Qt loads only when the console really starts

    return run(argv)


if __name__ == "__main__":
    raise SystemExit(main())
