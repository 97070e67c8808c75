"""Bitmap codecs for legacy RDP bitmap updates: wire pixel formats, interleaved RLE (8-24 bpp) and
RDP 6.0 planar (32 bpp), each with a small decoder used by the tests."""
