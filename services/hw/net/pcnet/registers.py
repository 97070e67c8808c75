"""CSR and BCR numbers, bits and power-on values of the PCnet-PCI II / PCnet-FAST III that the model
implements (AMD datasheets 19436 and 20510), and the chips it can be."""

from typing import NamedTuple


class Chip(NamedTuple):
    part_id_low: int        # CSR88: bits 11-0 are 0x003 (AMD's JEDEC code), 15-12 the part's low nibble
    part_id_high: int       # CSR89: the rest of the part number
    revision: int           # PCI revision ID, as VirtualBox presents the chip
    has_mii: bool           # the FAST III reaches its PHY through BCR32-34; the PCI II has none


# CSR89:CSR88 >> 12 is the part number pcnet32 switches on: 0x2625 "PCnet/FAST III 79C973",
# 0x2621 "PCnet/PCI II 79C970A".
CHIPS = {"Am79C973": Chip(0x5003, 0x0262, 0x40, True),
         "Am79C970A": Chip(0x1003, 0x0262, 0x16, False)}

AMD_VENDOR_ID, PCNET_DEVICE_ID = 0x1022, 0x2000
SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID = 0x1022, 0x2000      # what VirtualBox puts in both chips' PCI header

IO_SIZE = MMIO_SIZE = 32        # 16 bytes of address PROM, then the register ports
APROM_SIZE = 16
CSR_COUNT, BCR_COUNT = 128, 50
RAP_MASK = 0x7F

# Port offsets within the register half (BAR offset - 16), word I/O and double-word I/O
WIO_RDP, WIO_RAP, WIO_RESET, WIO_BDP = 0x0, 0x2, 0x4, 0x6
DWIO_RDP, DWIO_RAP, DWIO_RESET, DWIO_BDP = 0x0, 0x4, 0x8, 0xC

# CSR0: controller status
INIT, STRT, STOP, TDMD, TXON, RXON, IENA, INTR = 0x0001, 0x0002, 0x0004, 0x0008, 0x0010, 0x0020, 0x0040, 0x0080
IDON, TINT, RINT, MERR, MISS, CERR, BABL, ERR = 0x0100, 0x0200, 0x0400, 0x0800, 0x1000, 0x2000, 0x4000, 0x8000
CSR0_WRITE_ONE_TO_CLEAR = BABL | CERR | MISS | MERR | RINT | TINT | IDON
CSR0_ERROR_SOURCES = BABL | CERR | MISS | MERR           # ERR reads as their OR
CSR0_INTERRUPT_SOURCES = BABL | MISS | MERR | RINT | TINT | IDON   # each masked by the same bit of CSR3

# CSR3: interrupt masks and deferral control
CSR3_WRITABLE = 0x5F7C
DXSUFLO = 0x0040

# CSR4: test and features control. Each event bit has its mask one bit below.
JABM, JAB, TXSTRTM, TXSTRT, RCVCCOM, RCVCCO = 0x0001, 0x0002, 0x0004, 0x0008, 0x0010, 0x0020
UINT, UINTCMD, MFCOM, MFCO, ASTRP_RCV, APAD_XMT, DPOLL = 0x0040, 0x0080, 0x0100, 0x0200, 0x0400, 0x0800, 0x1000
CSR4_WRITE_ONE_TO_CLEAR = MFCO | UINT | RCVCCO | TXSTRT | JAB
CSR4_EVENTS_WITH_MASKS = JAB | TXSTRT | RCVCCO | MFCO

# CSR5: extended control and interrupt 1
SPND, MPINT, LTINTEN, TOKINTD = 0x0001, 0x0010, 0x4000, 0x8000
CSR5_WRITE_ONE_TO_CLEAR = 0x0A90     # SINT, SLPINT, EXDINT, MPINT: events only the chip sets

# CSR15: mode (loaded from the init block)
DRX, DTX, LOOP, INTL, DRCVPA, DRCVBC, PROM = 0x0001, 0x0002, 0x0004, 0x0040, 0x2000, 0x4000, 0x8000
CSR15_KEPT_BY_SOFT_RESET = 0x21C4

IADR_LOW, IADR_HIGH, LADRF, PADR, MODE = 1, 2, 8, 12, 15
CSR_LENGTHS = 6                 # TLEN/RLEN from the init block (read-only)
BADR_LOW, BADR_HIGH, BADX_LOW, BADX_HIGH = 24, 25, 30, 31
RCVRC, XMTRC, RCVRL, XMTRL = 72, 74, 76, 78
SWSTYLE_ALIAS = 58
PART_ID_LOW, PART_ID_HIGH = 88, 89
MISSED_FRAMES, RECEIVE_COLLISIONS = 112, 114
# Writable only while the chip is stopped or suspended (datasheet: "STOP or SPND must be set").
CSRS_WRITABLE_WHEN_STOPPED = frozenset((1, 2, 8, 9, 10, 11, 12, 13, 14, 15, *range(18, 48), 72, 74, 76, 78, 112))
CSRS_READ_ONLY = frozenset((CSR_LENGTHS, 88, 89, 114))

CSR_SOFT_RESET = {0: STOP, 3: 0, 4: MFCOM | RCVCCOM | TXSTRTM | JABM, 5: 0, 6: 0, 8: 0, 9: 0, 10: 0, 11: 0,
                  80: 0x1410, 94: 0, 100: 0x0200, 103: 0x0105, MISSED_FRAMES: 0, RECEIVE_COLLISIONS: 0,
                  122: 0, 124: 0}

# BCRs
MC, LNKST, LED1, LED2, LED3, FDC, BSBC, EECAS, SWS, PLAT = 2, 4, 5, 6, 7, 9, 18, 19, 20, 22
PCI_SUBSYSTEM_VENDOR, PCI_SUBSYSTEM, STVAL, MIICAS, MIIADDR, MIIMDR, PCI_VENDOR = 23, 24, 31, 32, 33, 34, 35
LEDS = (LNKST, LED1, LED2, LED3)
APROMWE = 0x0100                # BCR2: the address PROM takes writes
DWIO = 0x0080                   # BCR18: double-word I/O mode; set only by a 32-bit write to RDP
SSIZE32, CSRPCNET = 0x0100, 0x0200      # BCR20: derived from SWSTYLE
SWSTYLE_MASK = 0x00FF
# BCR4-7 LED status enables and the output they drive
LED_LINK, LED_FULL_DUPLEX, LED_100MBPS, LEDOUT = 0x0040, 0x0100, 0x1000, 0x8000
# BCR32 (MII control and status): the MAC programs the PHY unless DANAS is set
MIILP, XPHYSP, XPHYFD, XPHYANE, XPHYRST, DANAS, MIIPD = 0x0002, 0x0008, 0x0010, 0x0020, 0x0040, 0x0080, 0x4000
BCRS_WRITABLE = frozenset((MC, LNKST, LED1, LED2, LED3, FDC, BSBC, EECAS, PLAT, 25, 26, 27, 28, 29, STVAL,
                           MIICAS, MIIADDR))

BCR_POWER_ON = {0: 0x0005, 1: 0x0005, MC: 0x0002, LNKST: 0x00C0, LED1: 0x0084, LED2: 0x0088, LED3: 0x0090,
                FDC: 0x0000, BSBC: 0x9001, EECAS: 0x0002, SWS: CSRPCNET, PLAT: 0xFF06, STVAL: 0xFFFF,
                MIICAS: XPHYANE, MIIADDR: 0x0000, PCI_SUBSYSTEM_VENDOR: SUBSYSTEM_VENDOR_ID,
                PCI_SUBSYSTEM: SUBSYSTEM_ID, PCI_VENDOR: AMD_VENDOR_ID}

# Receive and transmit descriptor status (the upper half of the 32-bit RMD1/TMD1; the high byte is
# also SWSTYLE 0's status byte)
OWN, DESC_ERR, STP, ENP = 0x8000, 0x4000, 0x0200, 0x0100
RX_FRAM, RX_OFLO, RX_CRC, RX_BUFF, RX_PAM, RX_LAFM, RX_BAM = 0x2000, 0x1000, 0x0800, 0x0400, 0x0040, 0x0020, 0x0010
TX_LTINT = 0x1000
# TMD2 (32-bit) error bits
TX_BUFF, TX_UFLO, TX_LCAR = 0x80000000, 0x40000000, 0x08000000
