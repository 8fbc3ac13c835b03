"""DeepSpeed and another library (vLLM) in one process: the world group each engine is built on is live."""
import os
import subprocess
import sys
from pathlib import Path


GROUPS_REMADE = """
import socket
import torch
import torch.distributed as dist
from deepspeed.utils import groups
from rl_system.learner import init_deepspeed

def world(port):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

world(free_port())
init_deepspeed(torch.device("cpu"))
old = groups._get_data_parallel_group()  # DeepSpeed's clone of the world, as an engine makes it
dist.destroy_process_group()  # torn down by someone else, as vLLM's engine does
world(free_port())
init_deepspeed(torch.device("cpu"))
assert dist.get_global_rank(groups._get_data_parallel_group(), 0) == 0  # a live group again
print("fresh", groups._get_data_parallel_group() is not old)
"""


def test_a_world_group_remade_by_another_library_gives_the_next_engine_a_live_clone():
    """vLLM's engine, run in the learner's process, tears the world group down and makes its own: the next
    DeepSpeed engine must not get DeepSpeed's cached clone of the old world (not registered any more)."""
    done = subprocess.run([sys.executable, "-c", GROUPS_REMADE], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).parent.parent, env={**os.environ, "DS_ACCELERATOR": "cpu"})
    assert done.stdout.strip().endswith("fresh True"), done.stdout[-2000:] + done.stderr[-3000:]
