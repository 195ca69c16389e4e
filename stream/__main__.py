"""``python -m stream`` is the same as the ``cxstream`` command."""

from stream.cli import main

raise SystemExit(main())
