"""The card's 64-word Microwire EEPROM: the MAC address, IDs and a checksum, read by the driver
bit by bit through EECD (82540-82545) or a word at a time through EERD."""

from __future__ import annotations

WORDS = 64
CHECKSUM_WORD, CHECKSUM_TOTAL = 0x3F, 0xBABA      # words 0-0x3F sum to 0xBABA
READ_OPCODE, OPCODE_BITS, ADDRESS_BITS = 0b110, 3, 6

# EECD bits
SK, CS, DI, DO = 0x01, 0x02, 0x04, 0x08
FWE_MASK, REQ, GNT, PRES = 0x30, 0x40, 0x80, 0x100
# EERD bits
EERD_START, EERD_DONE, EERD_ADDR_SHIFT, EERD_DATA_SHIFT = 0x01, 0x10, 8, 16


def eeprom_image(mac: bytes, device_id: int, subsystem_vendor: int, subsystem_id: int) -> list[int]:
    """The words a driver reads: MAC (0-2), ID LED defaults (4), init control 1 and 2 (0x0A, 0x0F),
    subsystem and device IDs (0x0B-0x0E), and the checksum."""
    words = [0] * WORDS
    words[0:3] = [mac[0] | mac[1] << 8, mac[2] | mac[3] << 8, mac[4] | mac[5] << 8]
    words[0x04] = 0xFFFF                 # ID LED settings: use the defaults
    words[0x0A] = 0x6403                 # init control 1: load subsystem IDs, 82540 signature bits
    words[0x0B], words[0x0C] = subsystem_id, subsystem_vendor
    words[0x0D], words[0x0E] = device_id, 0x8086
    words[0x0F] = 0x3040                 # init control 2: no flow control pause bits, APM off
    words[CHECKSUM_WORD] = (CHECKSUM_TOTAL - sum(words[:CHECKSUM_WORD])) & 0xFFFF
    return words


class MicrowireEeprom:
    """A 93C46-style serial EEPROM behind EECD. On each rising SK edge with CS high the card
    shifts DI in (opcode, then address) and, once a READ is decoded, the next data bit out on DO."""

    def __init__(self, words: list[int]):
        self.words = list(words)
        self.reset()

    def reset(self) -> None:
        self.eecd = 0
        self.shifted = 0            # bits clocked in since CS went high
        self.value = 0
        self.out_bit = None         # data bit position while reading (-1: before bit 15 of word 0)

    def read_eecd(self) -> int:
        value = (self.eecd & (SK | CS | DI | FWE_MASK | REQ)) | PRES
        if self.eecd & REQ:
            value |= GNT                          # the EEPROM is always ours to use
        if self.out_bit is not None and self.out_bit >= 0:
            word = self.words[(self.out_bit >> 4) % WORDS]
            if word >> (15 - (self.out_bit & 15)) & 1:
                value |= DO
        return value

    def write_eecd(self, value: int) -> None:
        before, self.eecd = self.eecd, value
        if not value & CS:
            self.shifted, self.value, self.out_bit = 0, 0, None
            return
        if not (value & SK and not before & SK):
            return                                # only rising clock edges move data
        if self.out_bit is not None:
            self.out_bit += 1
            return
        self.value = (self.value << 1) | bool(value & DI)
        self.shifted += 1
        if self.shifted == OPCODE_BITS + ADDRESS_BITS:
            opcode, address = self.value >> ADDRESS_BITS, self.value & ((1 << ADDRESS_BITS) - 1)
            if opcode == READ_OPCODE:
                self.out_bit = address * 16 - 1   # the next rising edge presents bit 15 of the word
            # writes and erases are refused: the driver never needs them and the image stays valid

    def read_eerd(self, value: int) -> int:
        """EERD: a write with START reads one word; the register then shows DONE and the data."""
        if not value & EERD_START:
            return value & ~EERD_DONE
        address = (value >> EERD_ADDR_SHIFT) & 0xFF
        word = self.words[address] if address < WORDS else 0xFFFF
        return (value & 0xFF00) | EERD_DONE | word << EERD_DATA_SHIFT

    def snapshot(self) -> dict:
        return {"eecd": self.eecd, "shifted": self.shifted, "value": self.value, "out_bit": self.out_bit}

    def restore(self, state: dict) -> None:
        self.eecd, self.shifted = int(state["eecd"]), int(state["shifted"])
        self.value = int(state["value"])
        self.out_bit = None if state["out_bit"] is None else int(state["out_bit"])
