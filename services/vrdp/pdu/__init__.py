"""RDP share-level PDUs (MS-RDPBCGR 2.2.1.11-2.2.9): Client Info, licensing, capabilities, finalization,
input and output updates, as sans-I/O codecs between bytes and typed objects."""
