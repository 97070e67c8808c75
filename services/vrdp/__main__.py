"""Entry point of the VRDP process: `python -m services.vrdp --vm-id ID --port 3389`.
One process per running VM; see services.vrdp.server."""

import sys

from services.vrdp.server import main

sys.exit(main())
