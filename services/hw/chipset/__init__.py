"""PC chipset and platform devices: debug console, RTC/CMOS, fw_cfg, PCI host bridge, reset lines.

Register-only models small enough to live beside the vCPU (see services/vcpu/platform.py)."""
