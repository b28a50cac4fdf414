"""`python -m shards`: see shards.cli."""

from shards.cli import main

raise SystemExit(main())
