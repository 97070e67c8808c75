"""The kernel's write log of a shared mapping (userfaultfd asynchronous write-protect + PAGEMAP_SCAN):
exactly the pages this process wrote since the last look, and nothing another mapping wrote."""

import numpy as np

from services.ipc.shm import SharedRegion
from services.vcpu.write_tracker import PAGE, WriteTracker


def test_written_pages_are_reported_once():
    region = SharedRegion.create("headbox-wtunit-ram", 16 << 20)
    try:
        data = np.frombuffer(region.buf, dtype=np.uint8)
        data[::PAGE] = 1                                   # populated before tracking: not written
        tracker = WriteTracker(region.address, region.size)
        try:
            assert len(tracker.take_written()) == 0
            data[5 * PAGE + 3] = 9
            data[1000 * PAGE] = 2
            data[1001 * PAGE + 100] = 3
            data[-1] = 4
            assert tracker.take_written().tolist() == [5, 1000, 1001, region.size // PAGE - 1]
            assert len(tracker.take_written()) == 0        # reported once, protected again
            data[::2 * PAGE] = 7
            assert tracker.take_written().tolist() == list(range(0, region.size // PAGE, 2))
            other = SharedRegion.open("headbox-wtunit-ram")  # another process's view, as DMA is
            try:
                np.frombuffer(other.buf, dtype=np.uint8)[77 * PAGE] = 5
                assert len(tracker.take_written()) == 0
            finally:
                other.close()
        finally:
            tracker.close()
    finally:
        region.close()
        region.unlink()
