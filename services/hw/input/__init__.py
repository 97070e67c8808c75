"""Input hardware: the 8042 keyboard controller with a PS/2 keyboard and mouse."""
