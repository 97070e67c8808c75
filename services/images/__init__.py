"""Disk and optical image formats (VDI, raw, ISO): what the device process serves and the manager
creates and inspects."""
