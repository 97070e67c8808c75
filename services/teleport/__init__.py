"""Teleporting: a running VM moves over TCP to a VM that waits for it on another host (live migration).

wire.py is the byte protocol, records.py what the stream carries, source.py and target.py the two ends."""
