"""Network cards: sans-I/O models that take frames from guest memory and hand them to a backend."""
