"""Entry point of the device process: `python -m services.devices`."""

import sys

from services.devices.service import main

sys.exit(main())
