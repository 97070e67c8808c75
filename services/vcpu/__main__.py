"""Entry point of the vCPU process: `python -m services.vcpu`."""

import sys

from services.vcpu.service import main

sys.exit(main())
