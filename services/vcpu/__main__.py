"""Entry point of the vCPU process: `python -m services.vcpu --spec FILE`."""

import sys

from services.vcpu.service import main

sys.exit(main())
