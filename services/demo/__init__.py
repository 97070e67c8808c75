"""The built-in demo guest: a small Linux ISO built from Debian's packages (`linux_iso.py`), which
`python -m services.headless --demo` boots and the test suite uses as its guest."""
