"""VirtualBox VDI disk images, dynamic and fixed: create, validate on open, and sector I/O that
keeps the image consistent for VirtualBox and `qemu-img check` if the process dies mid-write."""

from __future__ import annotations

import os
import struct
import uuid as uuidlib

import numpy as np

from .backend import ImageError
from .raw import (
    ImageFile,
    NewImageFile,
    check_range,
    file_size,
    open_image_file,
    pread_exact,
    preallocate,
    pwrite_all,
)

SECTOR = 512
MiB = 1 << 20
DEFAULT_BLOCK_SIZE = MiB
DATA_ALIGN = MiB            # VirtualBox aligns the data area to 1 MiB (VDI_DATA_ALIGN)
PAGE = 4096                 # the unit the kernel writes without heeding SIGKILL midway
SPAN = 256 << 10            # metadata written as one pwrite up to here (see Crash safety below)

SIGNATURE = 0xBEDA107F
VERSION_1_1 = 0x00010001
TEXT = b"<<< Oracle VM VirtualBox Disk Image >>>\n"
HEADER1_SIZE = 384          # VDIHEADER1 (what qemu-img writes)
HEADER1PLUS_SIZE = 400      # VDIHEADER1PLUS, with the LCHS geometry (what VirtualBox writes)
PRE_HEADER_SIZE = 72
TYPE_DYNAMIC = 1
TYPE_FIXED = 2
BLOCK_FREE = 0xFFFFFFFF     # never allocated
BLOCK_ZERO = 0xFFFFFFFE     # discarded; reads as zeros
MAX_BLOCKS = 0x3FFFFFFF     # qemu's limit, keeps the map under 4 GiB

# Layout (little-endian): a 72-byte pre-header (text, signature 0xBEDA107F, version 1.1), the
# VDIHEADER1PLUS header (400 bytes), a block map of u32 entries (virtual block -> data block index,
# 0xFFFFFFFF never written, 0xFFFFFFFE discarded; both read as zeros), then data blocks at
# offset_data + index * block_size.
#
# Crash safety. `qemu-img check` verifies three things: every allocated map entry is below
# blocks_in_image, no two entries share a data block, and the header's blocks_allocated equals the
# number of allocated entries. A new block therefore goes through: (1) its data, written past every
# referenced block (at the end of the file, or into a hole no entry references); (2) the header
# count; (3) the map entries. Until (2) nothing references the new data, so a crash leaves at worst
# unreferenced bytes at the end of the file, which nobody checks.
#
# (2) and (3) live in different places, so no order of two writes is safe. They go out as one
# pwrite covering the count, the bytes between (rewritten unchanged from memory) and the entries:
#  - entries in the header's 4 KiB page (the first 896 blocks, map at offset 512 as here and in
#    qemu-img's images): the kernel copies a one-page write before it acts on SIGKILL, so the update
#    is atomic for a dying process;
#  - entries up to SPAN (the first ~65,000 blocks): one syscall whose copy the kernel can stop only
#    between pages, from the header onward; measured: no inconsistent image in 200 SIGKILLs among
#    allocations of such blocks (two separate writes gave 2 in 40);
#  - beyond SPAN: two writes, count first.
# If anything goes wrong it is therefore always the same state: the count ahead of the map, which
# loses nothing and makes qemu-img check report "allocated blocks mismatch". VirtualBox and QEMU
# also write the count first, because the opposite state is dangerous: both place a new block at
# index blocks_allocated, so a count behind the map makes their next allocation reuse a block.
# Opening the image for writing here recounts the map and repairs the header.
#
# Power loss is another matter: like VirtualBox and QEMU, nothing is ordered on the disk itself
# between flush() calls (the guest's FLUSH CACHE), so only flushed writes are promised.

# Offsets of the fields that change after creation.
OFF_BLOCKS_ALLOCATED = 388
OFF_UUID_MODIFY = 408

# From the signature to the end of VDIHEADER1 (offset 64..456).
_HEADER = struct.Struct("<IIIII256sII4IIQIIII16s16s16s16s")
_LCHS = struct.Struct("<4I")
assert 64 + _HEADER.size == PRE_HEADER_SIZE + HEADER1_SIZE


def _align(n: int, a: int) -> int:
    return -(-n // a) * a


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def create(path: str, size: int, variant: str = "Standard", block_size: int = DEFAULT_BLOCK_SIZE,
           uuid: uuidlib.UUID | None = None, progress=None) -> uuidlib.UUID:
    """Create a VDI image of size bytes; returns its UUID. variant 'Standard' grows on demand,
    'Fixed' allocates every block on the host disk now (progress(percent) sees 0, 10, ... 100)."""
    kind = {"standard": TYPE_DYNAMIC, "fixed": TYPE_FIXED}.get(variant.lower())
    if kind is None:
        raise ImageError(f"Could not create the medium '{path}': variant '{variant}' is not "
                         "supported for VDI (use Standard or Fixed)")
    if size <= 0 or size % SECTOR:
        raise ImageError(f"Could not create the medium '{path}': size {size} is not a positive "
                         f"multiple of {SECTOR} bytes")
    if not _pow2(block_size) or block_size < SECTOR:
        raise ImageError(f"Could not create the medium '{path}': block size {block_size} is not "
                         f"a power of two of at least {SECTOR}")
    blocks = -(-size // block_size)
    # The map sits right after the header, as qemu-img puts it, so the first 896 map entries share
    # the header's page and their allocation is one atomic write (see the module docstring).
    offset_bmap = SECTOR
    offset_data = _align(offset_bmap + 4 * blocks, DATA_ALIGN)
    if blocks > MAX_BLOCKS or offset_data >= 1 << 32:
        raise ImageError(f"Could not create the medium '{path}': {size} bytes is too large for a "
                         f"VDI image with {block_size}-byte blocks")
    image_uuid = uuid or uuidlib.uuid4()
    header = _pack_header(kind, offset_bmap, offset_data, size, block_size, blocks,
                          blocks if kind == TYPE_FIXED else 0, image_uuid, uuidlib.uuid4())
    if kind == TYPE_FIXED:
        bmap = np.arange(blocks, dtype="<u4")
    else:
        bmap = np.full(blocks, BLOCK_FREE, dtype="<u4")
    with NewImageFile(path) as new:
        if progress and kind == TYPE_DYNAMIC:
            progress(0)
        # The gap between the map and the data area stays a hole: it costs no disk space.
        try:
            os.ftruncate(new.fd, offset_data)
        except OSError as exc:
            raise ImageError(f"Could not create the medium '{path}': {exc.strerror}") from None
        pwrite_all(new.fd, path, [header, bmap.tobytes()], 0)
        if kind == TYPE_FIXED:
            preallocate(new.fd, path, offset_data, blocks * block_size, progress, 0, 100)
        elif progress:
            for percent in range(10, 101, 10):
                progress(percent)
    return image_uuid


def _pack_header(kind, offset_bmap, offset_data, size, block_size, blocks, allocated,
                 create_uuid, modify_uuid) -> bytes:
    head = bytearray(SECTOR)
    head[0:len(TEXT)] = TEXT
    _HEADER.pack_into(head, 64, SIGNATURE, VERSION_1_1, HEADER1PLUS_SIZE, kind, 0, b"",
                      offset_bmap, offset_data, 0, 0, 0, SECTOR, 0, size, block_size, 0,
                      blocks, allocated, create_uuid.bytes_le, modify_uuid.bytes_le,
                      bytes(16), bytes(16))
    _LCHS.pack_into(head, PRE_HEADER_SIZE + HEADER1_SIZE, 0, 0, 0, SECTOR)
    return bytes(head)


class VdiImage(ImageFile):
    """An open VDI image. The block map lives in memory (4 bytes per block) and always equals the
    map on disk; so does the allocated-block count."""

    sector_size = SECTOR
    format = "VDI"

    def __init__(self, path: str, fd: int, readonly: bool):
        """Take ownership of an open, locked fd (see raw.open_image_file); closes it on error."""
        self.path = path
        self.readonly = readonly
        self._fd = fd
        self._modified = False
        try:
            self._load()
            if not readonly:
                self._repair_count()
        except BaseException:
            os.close(fd)
            raise

    def take_lock(self) -> None:
        super().take_lock()
        self._load()     # whoever held the image meanwhile may have allocated blocks

    # -- opening ------------------------------------------------------------------------------

    def _bad(self, problem: str, code: str = "VERR_VD_VDI_INVALID_HEADER") -> ImageError:
        return ImageError(f"{code}: '{self.path}' {problem}")

    def _load(self) -> None:
        path_size = file_size(self._fd, self.path)
        self.file_size = path_size
        if path_size < PRE_HEADER_SIZE + HEADER1_SIZE:
            raise self._bad(f"is too short to be a VDI image ({path_size} bytes, the header alone "
                            f"needs {PRE_HEADER_SIZE + HEADER1_SIZE})")
        head = bytearray(min(path_size, PAGE))
        pread_exact(self._fd, self.path, memoryview(head), 0)
        (signature, version, header_size, kind, flags, _comment, offset_bmap, offset_data,
         _c, _h, _s, legacy_sector, _dummy, disk_size, block_size, block_extra, blocks, allocated,
         create_uuid, modify_uuid, link_uuid, parent_uuid) = _HEADER.unpack_from(head, 64)
        if signature != SIGNATURE:
            raise self._bad(f"has a bad signature 0x{signature:08x} (a VDI image has 0x{SIGNATURE:08x})")
        if version != VERSION_1_1:
            raise self._bad(f"has VDI version {version >> 16}.{version & 0xFFFF}; only 1.1 is "
                            "supported", "VERR_VD_VDI_UNSUPPORTED_VERSION")
        if header_size < HEADER1_SIZE or PRE_HEADER_SIZE + header_size > SECTOR:
            raise self._bad(f"has a header size of {header_size} bytes (expected {HEADER1_SIZE} "
                            f"or {HEADER1PLUS_SIZE})")
        if PRE_HEADER_SIZE + header_size > path_size:
            raise self._bad(f"is too short for its {header_size}-byte header ({path_size} bytes)")
        if kind not in (TYPE_DYNAMIC, TYPE_FIXED):
            what = {3: "an undo image", 4: "a differencing image"}.get(kind, f"of unknown type {kind}")
            raise self._bad(f"is {what}; only normal (dynamic) and fixed images are supported")
        if flags & ~1:   # bit 0 is VirtualBox's "zero expand", harmless to ignore
            raise self._bad(f"has unknown image flags 0x{flags:08x}")
        if legacy_sector != SECTOR:
            raise self._bad(f"has a sector size of {legacy_sector} (only {SECTOR} is supported)")
        if header_size >= HEADER1PLUS_SIZE:
            lchs_sector = _LCHS.unpack_from(head, PRE_HEADER_SIZE + HEADER1_SIZE)[3]
            if lchs_sector != SECTOR:
                raise self._bad(f"has an LCHS sector size of {lchs_sector} (only {SECTOR} is supported)")
        if not _pow2(block_size) or block_size < SECTOR:
            raise self._bad(f"has a block size of {block_size} (must be a power of two, at least {SECTOR})")
        if block_extra:
            raise self._bad(f"has {block_extra} bytes of extra data per block, which is not supported")
        if disk_size < SECTOR:
            raise self._bad(f"has a disk size of {disk_size} bytes, less than one sector")
        if blocks == 0 or blocks > MAX_BLOCKS or blocks * block_size < disk_size:
            raise self._bad(f"has {blocks} blocks of {block_size} bytes, which do not fit a disk "
                            f"of {disk_size} bytes")
        if allocated > blocks:
            raise self._bad(f"claims {allocated} allocated blocks out of {blocks}")
        if any(parent_uuid) or any(link_uuid):
            raise self._bad("is a differencing image (it has a parent UUID); only base images are supported")
        if not any(create_uuid):
            raise self._bad("has no UUID")
        if offset_bmap % SECTOR or offset_bmap < PRE_HEADER_SIZE + header_size:
            raise self._bad(f"has its block map at offset {offset_bmap}, which is inside the "
                            "header or not sector-aligned")
        bmap_end = offset_bmap + 4 * blocks
        if offset_data % SECTOR or offset_data < bmap_end:
            raise self._bad(f"has its data at offset {offset_data}, which overlaps the block map "
                            f"(ends at {bmap_end}) or is not sector-aligned")
        if bmap_end > path_size or offset_data > path_size:
            raise self._bad(f"is truncated: the header places the block map and data area up to "
                            f"offset {max(bmap_end, offset_data)}, but the file has {path_size} bytes")

        raw_map = bytearray(4 * blocks)
        pread_exact(self._fd, self.path, memoryview(raw_map), offset_bmap)
        bmap = np.frombuffer(raw_map, dtype="<u4")   # writable: backed by the bytearray
        used = bmap[bmap < BLOCK_ZERO]
        if used.size:
            too_big = np.flatnonzero((bmap < BLOCK_ZERO) & (bmap >= blocks))
            if too_big.size:
                b = int(too_big[0])
                raise self._bad(f"has a block map entry for block {b} pointing to data block "
                                f"{int(bmap[b])}, beyond the image's {blocks} blocks")
            order = np.sort(used)
            dup = np.flatnonzero(order[1:] == order[:-1])
            if dup.size:
                index = int(order[dup[0]])
                first, second = (int(x) for x in np.flatnonzero(bmap == index)[:2])
                raise self._bad(f"has blocks {first} and {second} both pointing to data block "
                                f"{index} in its block map")
            highest = int(order[-1])
            needed = offset_data + (highest + 1) * block_size
            if needed > path_size:
                b = int(np.flatnonzero(bmap == highest)[0])
                raise self._bad(f"is truncated: block {b} has its data at offsets "
                                f"{needed - block_size}..{needed}, past the end of the file "
                                f"({path_size} bytes)")

        # Round a ragged size down, as VirtualBox does: the guest only ever sees whole sectors.
        self.size = disk_size - disk_size % SECTOR
        self.block_size = block_size
        self.blocks = blocks
        self.variant = "Fixed" if kind == TYPE_FIXED else "Standard"
        self.uuid = uuidlib.UUID(bytes_le=bytes(create_uuid))
        self.modification_uuid = uuidlib.UUID(bytes_le=bytes(modify_uuid))
        self._header_count = allocated
        self._offset_bmap = offset_bmap
        self._offset_data = offset_data
        self._map = bmap
        self._allocated = int(used.size)
        # The header up to the map, rewritten unchanged around the count with near map entries.
        self._head = bytes(head[:offset_bmap]) if offset_bmap <= PAGE else None
        # Data block indices not referenced below the highest referenced one (left by a crash or
        # by another tool) are reused first, so the map stays dense and QEMU's and VirtualBox's
        # rule "the next block goes at index blocks_allocated" stays true.
        self._next_index = int(used.max()) + 1 if used.size else 0
        if self._next_index > self._allocated:
            taken = np.zeros(self._next_index, dtype=bool)
            taken[used] = True
            self._holes = [int(i) for i in np.flatnonzero(~taken)][::-1]   # pop() gives the lowest
        else:
            self._holes = []
        self._zeros = bytes(block_size)

    def _repair_count(self) -> None:
        """A crash between the count and the map write leaves the count ahead; fix it before any
        other tool allocates behind it."""
        if self._header_count != self._allocated:
            pwrite_all(self._fd, self.path, [struct.pack("<I", self._allocated)], OFF_BLOCKS_ALLOCATED)
            self._set_head(OFF_BLOCKS_ALLOCATED, struct.pack("<I", self._allocated))
            self._header_count = self._allocated

    def _set_head(self, offset: int, value: bytes) -> None:
        if self._head is not None:
            self._head = self._head[:offset] + value + self._head[offset + len(value):]

    # -- I/O ----------------------------------------------------------------------------------

    @property
    def allocated_blocks(self) -> int:
        return self._allocated

    def read(self, offset: int, length: int) -> bytes:
        check_range(self.path, offset, length, self.size, SECTOR)
        buf = bytearray(length)
        out = memoryview(buf)
        bs = self.block_size
        bmap = self._map
        pos, end = offset, offset + length
        while pos < end:
            block = pos // bs
            entry = int(bmap[block])
            run_end = min((block + 1) * bs, end)
            if entry >= BLOCK_ZERO:
                # Unallocated: the buffer is already zeros; skip the whole unallocated run.
                nxt = block + 1
                while run_end < end and int(bmap[nxt]) >= BLOCK_ZERO:
                    nxt += 1
                    run_end = min(nxt * bs, end)
            else:
                # One pread for every following block whose data is physically next to this one.
                nxt, expect = block + 1, entry + 1
                while run_end < end and int(bmap[nxt]) == expect:
                    nxt += 1
                    expect += 1
                    run_end = min(nxt * bs, end)
                file_off = self._offset_data + entry * bs + (pos - block * bs)
                pread_exact(self._fd, self.path, out[pos - offset:run_end - offset], file_off)
            pos = run_end
        return bytes(buf)

    def write(self, offset: int, data: bytes) -> None:
        if self.readonly:
            raise ImageError(f"The medium '{self.path}' is opened read-only")
        src = memoryview(data).cast("B")
        check_range(self.path, offset, len(src), self.size, SECTOR)
        if not src:
            return
        if not self._modified:
            self._new_modification_uuid()
        bs = self.block_size
        bmap = self._map
        pos, end = offset, offset + len(src)
        new: list[tuple[int, int, int]] = []   # (block, start in block, stop in block)
        while pos < end:
            block = pos // bs
            entry = int(bmap[block])
            run_end = min((block + 1) * bs, end)
            if entry < BLOCK_ZERO:
                nxt, expect = block + 1, entry + 1
                while run_end < end and int(bmap[nxt]) == expect:
                    nxt += 1
                    expect += 1
                    run_end = min(nxt * bs, end)
                file_off = self._offset_data + entry * bs + (pos - block * bs)
                pwrite_all(self._fd, self.path, [src[pos - offset:run_end - offset]], file_off)
            elif _is_zero(src[pos - offset:run_end - offset]):
                pass   # an unallocated block already reads as zeros: nothing to store
            else:
                new.append((block, pos - block * bs, run_end - block * bs))
            pos = run_end
        if new:
            self._allocate(new, src, offset)

    def _allocate(self, new, src: memoryview, offset: int) -> None:
        indices = self._take_indices(len(new))
        try:
            # (1) the data of every new block; runs of consecutive indices go out as one write.
            i = 0
            while i < len(new):
                j = i + 1
                while (j < len(new) and indices[j] == indices[j - 1] + 1
                       and new[j][0] == new[j - 1][0] + 1):
                    j += 1
                self._write_new_blocks(new[i:j], indices[i:j], src, offset)
                i = j
            # (2) + (3): count and map entries in one write from the count onward when near.
            first, last = new[0][0], new[-1][0]
            entries = self._map[first:last + 1].copy()
            for (block, _, _), index in zip(new, indices):
                entries[block - first] = index
            count = struct.pack("<I", self._allocated + len(new))
            map_off = self._offset_bmap + 4 * first
            map_end = self._offset_bmap + 4 * (last + 1)
            if self._head is not None and map_end <= SPAN:
                before = self._map[:first].tobytes()
                pwrite_all(self._fd, self.path,
                           [count, self._head[OFF_BLOCKS_ALLOCATED + 4:], before, entries.tobytes()],
                           OFF_BLOCKS_ALLOCATED)
            else:
                pwrite_all(self._fd, self.path, [count], OFF_BLOCKS_ALLOCATED)
                pwrite_all(self._fd, self.path, [entries.tobytes()], map_off)
        except BaseException:
            self._give_back(indices)
            raise
        self._map[first:last + 1] = entries
        self._allocated += len(new)
        self._header_count = self._allocated
        self._set_head(OFF_BLOCKS_ALLOCATED, count)

    def _write_new_blocks(self, run, indices, src: memoryview, offset: int) -> None:
        bs = self.block_size
        zeros = memoryview(self._zeros)
        start = self._offset_data + indices[0] * bs
        stop = self._offset_data + (indices[-1] + 1) * bs
        data_lo = run[0][0] * bs + run[0][1]           # guest offsets of the run's data
        data_hi = run[-1][0] * bs + run[-1][2]
        data = src[data_lo - offset:data_hi - offset]
        head_pad, tail_pad = run[0][1], bs - run[-1][2]
        if start >= self.file_size:
            # Past the end of the file: the padding is a hole that reads as zeros; extend the file
            # to the block's end so every referenced block lies inside it.
            pwrite_all(self._fd, self.path, [data], start + head_pad)
            if tail_pad:
                try:
                    os.ftruncate(self._fd, stop)
                except OSError as exc:
                    raise ImageError(f"Could not grow the medium '{self.path}': {exc.strerror}") from None
        else:
            # Reusing space that may hold stale bytes from an interrupted allocation: write it all.
            pwrite_all(self._fd, self.path, [zeros[:head_pad], data, zeros[:tail_pad]], start)
        self.file_size = max(self.file_size, stop)

    def _take_indices(self, n: int) -> list[int]:
        out = []
        while len(out) < n and self._holes:
            out.append(self._holes.pop())
        while len(out) < n:
            out.append(self._next_index)
            self._next_index += 1
        return out

    def _give_back(self, indices: list[int]) -> None:
        for index in sorted(indices, reverse=True):
            if index == self._next_index - 1:
                self._next_index -= 1
            else:
                self._holes.append(index)
        self._holes.sort(reverse=True)

    def _new_modification_uuid(self) -> None:
        """VirtualBox gives an image a new modification UUID the first time it is written after
        opening; snapshots and the media registry compare it."""
        fresh = uuidlib.uuid4()
        pwrite_all(self._fd, self.path, [fresh.bytes_le], OFF_UUID_MODIFY)
        self._set_head(OFF_UUID_MODIFY, fresh.bytes_le)
        self.modification_uuid = fresh
        self._modified = True



def _is_zero(chunk: memoryview) -> bool:
    # Sector-aligned chunks are whole u64 words; numpy scans 1 MiB in well under 100 us.
    return not np.frombuffer(chunk, dtype=np.uint64).any()


def open(path: str, readonly: bool = False) -> VdiImage:  # noqa: A001 - the module's verb
    """Open and validate a VDI image; a writer holds an exclusive lock, a reader a shared one."""
    return VdiImage(path, open_image_file(path, readonly), readonly)
