"""Running Trainer in several gloo processes, as torchrun would start them (its RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT variables), for tests/test_distributed.py.

Each rank writes what the test compares into ``results``: its final weights
(``rank{N}.safetensors``), or the one-line message of the LcsError it stopped with
(``rank{N}.error``).
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port nobody listens on now, for the ranks' rendezvous."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_rank(rank: int, world: int, port: int, configs: list[dict[str, Any]], output: str, results: str,
             resume: bool = False, stop_after_epoch: int | None = None) -> None:
    """One rank: train ``configs[rank]`` into ``output`` (stopping after ``stop_after_epoch``)."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    import torch
    from safetensors.torch import save_file

    from lcs_train import distributed
    from lcs_train.errors import LcsError
    from lcs_train.train import EpochRecord, TrainConfig, Trainer

    torch.set_num_threads(1)
    trainer = None

    def stop(record: EpochRecord) -> None:
        if stop_after_epoch is not None and record.epoch >= stop_after_epoch:
            raise KeyboardInterrupt

    try:
        trainer = Trainer(TrainConfig(**configs[rank]), output, resume=resume)
        try:
            trainer.fit(on_epoch=stop)
        except KeyboardInterrupt:
            pass
        state = {k: v.contiguous() for k, v in trainer.model.state_dict().items()}
        save_file(state, str(Path(results) / f"rank{rank}.safetensors"))
    except LcsError as error:
        (Path(results) / f"rank{rank}.error").write_text(str(error))
    finally:
        distributed.finish(trainer.layout if trainer else distributed.from_environment())


def config_dict(config: Any) -> dict[str, Any]:
    """A TrainConfig as keyword arguments a spawned process can rebuild it from."""
    return asdict(config)
