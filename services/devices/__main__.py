"""Entry point of the device process: `python -m services.devices --spec FILE`."""

import sys

from services.devices.service import main

sys.exit(main())
