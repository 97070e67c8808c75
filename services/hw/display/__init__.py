"""Display hardware: standard VGA with Bochs VBE, its PCI function, and the rendering of its memory."""
