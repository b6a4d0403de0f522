"""How much of the main process a batch of undecoded files costs on its way from a worker (``decode: gpu``).

A worker hands each batch to the main process through a queue. A list of ``bytes`` is pickled through a pipe and
read back by the main process; one uint8 tensor in shared memory (``EncodedFiles``) travels as a file descriptor.
Prints, for each, the wall time and the main process's CPU time per batch::

    python -m benchmarks.transfer_probe --files 256 --size 58000 --batches 60
"""

from __future__ import annotations

import argparse
import os
import time

import torch.multiprocessing as mp

from lit_infer.records import EncodedFiles


def _produce(queue: mp.Queue, kind: str, files: int, size: int, batches: int, done: mp.Event) -> None:
    payload = [os.urandom(size) for _ in range(files)]
    for _ in range(batches):
        queue.put(payload if kind == "bytes" else EncodedFiles.pack(payload, shared=True))
    queue.put(None)
    done.wait()  # the receiver opens the shared memory by asking this process for the descriptor


def measure(kind: str, files: int, size: int, batches: int) -> tuple[float, float]:
    queue: mp.Queue = mp.Queue(maxsize=4)
    done = mp.Event()
    producer = mp.Process(target=_produce, args=(queue, kind, files, size, batches, done))
    producer.start()
    queue.get()  # the first batch: start-up is not measured
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    while queue.get() is not None:
        n += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    done.set()
    producer.join()
    return wall / n * 1000, cpu / n * 1000


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--files", type=int, default=256, help="files per batch")
    p.add_argument("--size", type=int, default=58_000, help="bytes per file (a 500x375 JPEG at quality 90: ~58 KB)")
    p.add_argument("--batches", type=int, default=60)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args(argv)
    print("| transfer | wall ms/batch | main-process CPU ms/batch |\n|---|---|---|")
    for _ in range(a.repeats):
        for kind in ("bytes", "shared"):
            wall, cpu = measure(kind, a.files, a.size, a.batches)
            print(
                f"| {'list of bytes (pipe)' if kind == 'bytes' else 'EncodedFiles (shared memory)'} | {wall:.1f} | {cpu:.1f} |"
            )


if __name__ == "__main__":
    main()
