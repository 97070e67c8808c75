"""The NAT network attachment: libslirp per adapter, and a DNS responder backed by the host's resolver."""
