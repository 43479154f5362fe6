"""What the launch asked for against what accelerate set up. accelerate falls back quietly: under
`ACCELERATE_USE_CPU=1` it runs FSDP and DeepSpeed launches as plain data parallelism, and without it, on a machine
with no GPU, each launched process trains alone (into the same folder). Such a run is refused before anything is
written."""

import os

from accelerate.utils import DistributedType, parse_flag_from_env

from .errors import UsageError

ENGINES = {
    "ACCELERATE_USE_FSDP": ("FSDP", DistributedType.FSDP),
    "ACCELERATE_USE_DEEPSPEED": ("DeepSpeed", DistributedType.DEEPSPEED),
}


def check_launch(accelerator):
    for variable, (name, distributed_type) in ENGINES.items():
        if parse_flag_from_env(variable) and accelerator.distributed_type != distributed_type:
            raise UsageError(
                f"{name} was asked for, but accelerate set up {accelerator.distributed_type.value} on "
                f"{accelerator.device.type}: it runs {name} on GPUs and other accelerators only. Launch on those, or "
                f"drop the {name} options (on CPU: ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu) for data "
                "parallelism."
            )
    launched = int(os.environ.get("WORLD_SIZE", 1))
    if launched > accelerator.num_processes:
        raise UsageError(
            f"{launched} processes were launched, but accelerate found no devices to join them and each would train "
            "alone: on CPU, set ACCELERATE_USE_CPU=1 (and pass --multi_gpu to accelerate launch)."
        )
