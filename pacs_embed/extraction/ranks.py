"""torchrun: this process's rank, and the few collective steps extraction needs (torch.distributed).

Usage::

    ranks = Ranks()                 # WORLD_SIZE, RANK, LOCAL_RANK from torchrun (1, 0, 0 without it)
    dev = ranks.device(None); ranks.start(dev)
    plan = ranks.broadcast(plan if ranks.lead else None); ...; ranks.barrier(); ranks.close()
"""
from __future__ import annotations

import datetime as _dt
import os
import sys

import torch


class Ranks:
    """This process's place among torchrun's processes (rank 0 of 1 without torchrun)."""

    def __init__(self):
        env = os.environ
        self.world = int(env.get("WORLD_SIZE", "1"))
        self.rank = int(env.get("RANK", "0"))
        self.local_rank = int(env.get("LOCAL_RANK", "0"))
        self.local_world = int(env.get("LOCAL_WORLD_SIZE", str(self.world)))
        self.started = False

    @property
    def lead(self) -> bool:
        return self.rank == 0

    def device(self, requested: str | None) -> torch.device:
        from ..models import choose_device
        dev = choose_device(requested)
        if self.world > 1 and dev.type == "cuda":
            return torch.device("cuda", self.local_rank)  # one GPU per process, as torchrun numbers them
        return dev

    def start(self, dev: torch.device) -> None:
        import torch.distributed as dist
        if self.world == 1 or dist.is_initialized():
            return
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        # rank 0 may scan a large dataset while the others wait: a generous timeout
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", timeout=_dt.timedelta(hours=6))
        self.started = True

    def broadcast(self, value):
        """Rank 0's ``value``, on every rank."""
        if self.world == 1:
            return value
        import torch.distributed as dist
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def settle(self, seconds: float = 30) -> None:
        """After an error is broadcast: wait until the other ranks have said theirs (at most ``seconds`` on gloo), since
        torchrun ends every rank once this one exits. A rank that never comes is not waited for longer."""
        if self.world == 1:
            return
        import datetime
        import torch.distributed as dist
        try:
            if dist.get_backend() == "gloo":
                dist.monitored_barrier(timeout=datetime.timedelta(seconds=seconds))
            else:
                dist.barrier()
        except Exception:  # noqa: BLE001 - the error being raised is the one to report
            pass

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def close(self) -> None:
        """Tear the group down together (after a barrier, unless this rank is failing). Even so, gloo's threads
        can abort the interpreter's own teardown afterwards; ``pacs-embed`` therefore ends torchrun ranks
        with ``os._exit`` (see ``cli.main``)."""
        if self.started:
            import torch.distributed as dist
            if sys.exc_info()[0] is None:   # after a failure the other ranks may never come: do not wait
                dist.barrier()
            dist.destroy_process_group()
            self.started = False
