"""`pacs-embed ...` with a fault injected, so that a test can kill it at a chosen phase.

    PACS_FAULT=slow-batches   pause 0.25 s after each embedded batch
    PACS_FAULT=final-write    write half of the final cache file, then hang (kill it there)
    PACS_FAULT=kill-rank-1    under torchrun: rank 1 kills itself (SIGKILL) right after its first journal shard
    PACS_FAULT=worker-raises  a DataLoader worker raises while collating its second batch (outside any image)
    PACS_FAULT=worker-killed  a DataLoader worker SIGKILLs itself while collating its second batch
"""
import importlib
import os
import sys
import time

from pacs_embed.cli import main

fault = os.environ.get("PACS_FAULT", "")
if fault == "slow-batches":
    ex = importlib.import_module("pacs_embed.models")
    _encode = ex.embed_images
    ex.embed_images = lambda model, pixels: (time.sleep(0.25), _encode(model, pixels))[1]
elif fault == "final-write":
    cache = importlib.import_module("pacs_embed.hdf5")

    def half_then_hang(path, data, durable=False):
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            f.write(data[: len(data) // 2])
        print("WRITING", flush=True)
        time.sleep(60)
    cache.atomic_write = half_then_hang
elif fault == "kill-rank-1" and os.environ.get("RANK") == "1":
    import signal
    jr = importlib.import_module("pacs_embed.extraction.journal")
    _save = jr.Journal.save

    def save_then_die(self, *args, **kwargs):
        _save(self, *args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    jr.Journal.save = save_then_die
elif fault in ("worker-raises", "worker-killed"):
    import signal
    ex = importlib.import_module("pacs_embed.extraction.reader")
    _collate, calls = ex.collate, []

    def failing_collate(items):
        calls.append(1)
        if len(calls) == 2:   # in the worker process (the DataLoader collates there)
            if fault == "worker-killed":
                os.kill(os.getpid(), signal.SIGKILL)
            raise MemoryError("injected: collating failed")
        return _collate(items)
    ex.collate = failing_collate
sys.exit(main(sys.argv[1:]))
