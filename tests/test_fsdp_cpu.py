"""FSDP2 (per-parameter sharding, torch's `fully_shard`) on CPU: two gloo processes train the masked-LM model to
the weights one process reaches with the same global batch, a sharded checkpoint resumes exactly, and the
exported folder loads with `AutoModel`.

accelerate selects FSDP only for GPU-like devices: under `ACCELERATE_USE_CPU=1`, `accelerate launch --use_fsdp`
runs plain data parallelism (`DistributedType.MULTI_CPU`). So the processes here are started by `torchrun`, and
the model is sharded by accelerate's own FSDP2 preparation (`accelerate.utils.fsdp2_prepare_model`, what
`accelerator.prepare` calls under FSDP2), given the plugin a GPU run would have. Checkpoints use
`torch.distributed.checkpoint` and the export gathers the full state dict, as accelerate does under FSDP2.

Wrapping: a group per `TransformerEncoderLayer`. accelerate's TRANSFORMER_BASED_WRAP without a layer class takes
the model's `_no_split_modules`, which (as in transformers' BERT) include the embeddings; sharding them apart from
the tied LM head then fails in `fully_shard` (accelerate 1.15, torch 2.13), for `BertForMaskedLM` too.

This file is also the worker: `torchrun --nproc_per_node N tests/test_fsdp_cpu.py …`.
"""

import argparse
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

STEPS, GLOBAL_BATCH, LENGTH, MASK_ID, LR = 4, 8, 16, 4, 1e-3


def worker():
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from accelerate.utils import FullyShardedDataParallelPlugin, fsdp2_prepare_model
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict, get_state_dict
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from transformer_encoder.training.run import unsharded

    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir")
    parser.add_argument("--wrap", default="NO_WRAP")
    parser.add_argument("--layers_to_wrap", default=None)
    parser.add_argument("--checkpoint_at", type=int)
    parser.add_argument("--resume_from")
    args = parser.parse_args()

    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = fresh_model()
    plugin = FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy=args.wrap,
        transformer_cls_names_to_wrap=args.layers_to_wrap.split(",") if args.layers_to_wrap else None,
    )
    # The few attributes of the Accelerator that fsdp2_prepare_model reads.
    accelerator = types.SimpleNamespace(
        state=types.SimpleNamespace(fsdp_plugin=plugin), mixed_precision="no", device=torch.device("cpu"),
        is_main_process=rank == 0,
    )
    model = fsdp2_prepare_model(accelerator, model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)

    start = 0
    if args.resume_from:
        state = {"model": None, "optimizer": None, "step": torch.zeros((), dtype=torch.long)}
        state["model"], state["optimizer"] = get_state_dict(model, optimizer)
        dcp.load(state, checkpoint_id=args.resume_from)
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        start = int(state["step"])

    norms = []
    for step in range(start, STEPS):
        norms.append(train_step(model, optimizer, step, rank, world))
        if step + 1 == args.checkpoint_at:
            model_state, optimizer_state = get_state_dict(model, optimizer)
            state = {"model": model_state, "optimizer": optimizer_state, "step": torch.tensor(step + 1)}
            dcp.save(state, checkpoint_id=Path(args.output_dir) / f"step_{step + 1}")

    full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    unsharded(model).save_pretrained(args.output_dir, is_main_process=rank == 0, state_dict=full)  # as run.export
    if rank == 0:
        (Path(args.output_dir) / "gradient_norms.json").write_text(json.dumps(norms))
    dist.destroy_process_group()


def train_step(model, optimizer, step: int, rank: int, world: int):
    """Process `rank`'s share of the step's global batch. The loss is summed over the masked tokens and divided by
    their number in the global batch; FSDP averages the gradients over the processes, hence the `/ world`."""
    input_ids, labels = masked_batch(step)
    mine = slice(rank * GLOBAL_BATCH // world, (rank + 1) * GLOBAL_BATCH // world)
    items = (labels != -100).sum().float() / world
    model(input_ids=input_ids[mine], labels=labels[mine], num_items_in_batch=items).loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # a DTensor under FSDP: the global norm
    optimizer.step()
    optimizer.zero_grad()
    return (norm.full_tensor() if hasattr(norm, "full_tensor") else norm).item()


def fresh_model():
    from helpers import tiny_config

    from transformer_encoder import TransformerEncoderForMaskedLM

    torch.manual_seed(0)
    return TransformerEncoderForMaskedLM(tiny_config())


def masked_batch(step: int):
    """The global batch of a step: random ids, 15 % of the positions masked."""
    generator = torch.Generator().manual_seed(step)
    input_ids = torch.randint(5, 99, (GLOBAL_BATCH, LENGTH), generator=generator)
    masked = torch.rand(GLOBAL_BATCH, LENGTH, generator=generator) < 0.15
    return input_ids.masked_fill(masked, MASK_ID), input_ids.masked_fill(~masked, -100)


# ---------------------------------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------------------------------


def torchrun(processes: int, *args):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes),
               __file__, *map(str, args)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(command, capture_output=True, text=True, env=environment)
    assert result.returncode == 0, result.stderr[-4000:]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_fsdp2_on_two_cpu_processes_matches_one_process_and_resumes(tmp_path):
    """A group per encoder layer (`--fsdp_auto_wrap_policy TRANSFORMER_BASED_WRAP
    --fsdp_transformer_layer_cls_to_wrap TransformerEncoderLayer`), and the tied embeddings and LM head in one."""
    from transformers import AutoModel, AutoModelForMaskedLM

    import transformer_encoder

    wrap = ["--wrap", "TRANSFORMER_BASED_WRAP", "--layers_to_wrap", "TransformerEncoderLayer"]
    torchrun(2, tmp_path / "two", *wrap, "--checkpoint_at", 2)
    torchrun(2, tmp_path / "resumed", *wrap, "--resume_from", tmp_path / "two" / "step_2")
    two, resumed = weights(tmp_path / "two"), weights(tmp_path / "resumed")

    reference = fresh_model()  # one process, no FSDP, the whole global batch
    start = {k: v.clone() for k, v in reference.state_dict().items()}
    optimizer = torch.optim.AdamW(reference.parameters(), lr=LR)
    norms = [train_step(reference, optimizer, step, rank=0, world=1) for step in range(STEPS)]
    expected = reference.state_dict()
    # the gradient of the global batch's mean loss, whole (its norm) and clipped (the weights)
    assert json.loads((tmp_path / "two" / "gradient_norms.json").read_text()) == pytest.approx(norms, rel=1e-5)
    assert max((two[k] - expected[k]).abs().max().item() for k in two) < 1e-5
    assert min((two[k] - start[k]).abs().max().item() for k in two if two[k].ndim > 1) > 1e-4  # every matrix trained
    assert two.keys() == resumed.keys() and all(torch.equal(resumed[k], two[k]) for k in two)

    files = {p.name for p in (tmp_path / "two").iterdir() if p.is_file()}
    assert files == {"config.json", "model.safetensors", "configuration_transformer_encoder.py",
                     "modeling_transformer_encoder.py", "gradient_norms.json"}
    model = AutoModelForMaskedLM.from_pretrained(tmp_path / "two")
    assert isinstance(model, transformer_encoder.TransformerEncoderForMaskedLM)
    assert model.get_input_embeddings().weight is model.get_output_embeddings().weight  # still tied
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=1e-5)
    assert isinstance(AutoModel.from_pretrained(tmp_path / "two"), transformer_encoder.TransformerEncoderModel)


# ---------------------------------------------------------------------------------------------------------------------
# What accelerate would quietly run as something else is refused
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def launched_as(monkeypatch):
    from accelerate.state import AcceleratorState

    def launch(environment: dict):
        for name in ("ACCELERATE_USE_CPU", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED", "WORLD_SIZE", "LOCAL_RANK"):
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)

    AcceleratorState._reset_state(True)
    yield launch
    AcceleratorState._reset_state(True)


@pytest.mark.parametrize(
    "environment, message",
    [
        ({"ACCELERATE_USE_CPU": "1", "ACCELERATE_USE_FSDP": "true"}, "FSDP was asked for, but accelerate set up NO"),
        ({"WORLD_SIZE": "2"}, "2 processes were launched, but accelerate found no devices"),
    ],
    ids=["fsdp-on-cpu", "processes-without-devices"],
)
def test_a_launch_accelerate_would_change_is_refused_before_anything_is_written(
    tmp_path, capsys, launched_as, environment, message
):
    from transformer_encoder.training import run

    launched_as(environment)
    with pytest.raises(SystemExit) as exit_info:
        run.main(["mlm", "--output_dir", str(tmp_path / "out"), "--max_train_steps", "1"])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_deepspeed_on_cpu_is_refused(launched_as):
    """accelerate refuses to start at all where DeepSpeed is not installed (here), and runs plain data parallelism
    where it is; either way it is not DeepSpeed."""
    from accelerate import Accelerator

    from transformer_encoder.training.arguments import UsageError
    from transformer_encoder.training.launch import check_launch

    launched_as({"ACCELERATE_USE_CPU": "1"})
    accelerator = Accelerator()
    launched_as({"ACCELERATE_USE_CPU": "1", "ACCELERATE_USE_DEEPSPEED": "true"})
    with pytest.raises(UsageError, match="DeepSpeed was asked for"):
        check_launch(accelerator)


if __name__ == "__main__":
    worker()
