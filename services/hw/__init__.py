"""The PC hardware library: sans-I/O device models (registers in, effects out through callbacks)
that any process may host. Which process hosts which model: services/ipc/placement.py."""
