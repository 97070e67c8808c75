"""Fuzzed variants of valid RDP PDUs for the parsers' and the acceptor's bad-input tests."""

import random


def mutations(seeds, count, seed=1, noise=48):
    """Truncations, byte flips, insertions and deletions of valid PDUs, and random bytes of up to
    noise bytes, reproducibly."""
    rng = random.Random(seed)
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        kind = rng.randrange(5)
        if kind == 0:
            data = data[:rng.randrange(len(data) + 1)]
        elif kind == 1 and data:
            for _ in range(rng.randint(1, 4)):
                data[rng.randrange(len(data))] = rng.randrange(256)
        elif kind == 2:
            position = rng.randrange(len(data) + 1)
            data[position:position] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif kind == 3 and data:
            position = rng.randrange(len(data))
            del data[position:position + rng.randint(1, 8)]
        else:
            data = bytearray(rng.randbytes(rng.randrange(noise)))
        yield bytes(data)
