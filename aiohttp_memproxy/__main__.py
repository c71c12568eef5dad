from __future__ import annotations

from aiohttp_memproxy.cli import main

raise SystemExit(main())
