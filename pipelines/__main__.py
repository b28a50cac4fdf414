"""`python -m pipelines <dataset> --input URL --output URL [options] [-- beam options]`."""

from __future__ import annotations

import sys

from pipelines import available, load


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        names = available()
        print("usage: python -m pipelines <dataset> --input URL --output URL [options] [-- beam options]\n")
        print("datasets:", ", ".join(names) if names else "none registered yet")
        print("\n`python -m pipelines <dataset> --help` lists a dataset's options.")
        return 0
    try:
        module = load(argv[0])
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
