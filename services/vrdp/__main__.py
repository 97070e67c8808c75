"""Entry point of the VRDP process: `python -m services.vrdp --spec FILE` (the VM's launch spec, with its
VRDE settings). One process per running VM; see services.vrdp.server."""

import sys

from services.vrdp.server import main

sys.exit(main())
