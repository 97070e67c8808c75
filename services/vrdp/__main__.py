"""Entry point of the VRDP process: `python -m services.vrdp --vm-id ID --config vrde.json` (or `--port LIST
--address A --state-dir D` without a manager). One process per running VM; see services.vrdp.server."""

import sys

from services.vrdp.server import main

sys.exit(main())
