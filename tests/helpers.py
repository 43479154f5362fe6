"""Tiny configs and inputs shared by the tests, and a command's `main` run in this process."""

import contextlib
import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import torch

from transformer_encoder import TransformerEncoderConfig


def tiny_config(**overrides) -> TransformerEncoderConfig:
    """A config small enough to run everywhere in milliseconds: 2 layers, 4 heads of d_k = 8."""
    kwargs = dict(
        vocab_size=99,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    kwargs.update(overrides)
    return TransformerEncoderConfig(**kwargs)


def padded_batch(vocab_size=99, lengths=(9, 5, 1), seed=0):
    """Random ids, right-padded with 0 to the longest length, and the matching attention mask."""
    generator = torch.Generator().manual_seed(seed)
    seq = max(lengths)
    input_ids = torch.randint(1, vocab_size, (len(lengths), seq), generator=generator)
    attention_mask = (torch.arange(seq)[None, :] < torch.tensor(lengths)[:, None]).long()
    return input_ids.masked_fill(attention_mask == 0, 0), attention_mask


def commit_into(folder: Path):
    """A stand-in for `HfApi.create_commit` that writes the committed files into `folder`: the Hub, offline."""

    def create_commit(self, repo_id, operations, **kwargs):
        for op in operations:
            target = folder / op.path_in_repo
            target.parent.mkdir(parents=True, exist_ok=True)
            source = op.path_or_fileobj
            target.write_bytes(Path(source).read_bytes() if isinstance(source, (str, Path)) else source.read())
        return mock.MagicMock()

    return create_commit


# What every command under test runs with, in this process or a fresh one: offline, one thread.
CLI_ENVIRONMENT = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
# The training command under `accelerate launch` with two CPU processes (see tests/test_training.py's `cli`).
TWO_PROCESSES = dict(
    launcher=[sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--main_process_port", "0", "-m"],
    env={"ACCELERATE_USE_CPU": "1", "GLOO_SOCKET_IFNAME": "lo"},
)


def run_in_process(main, args, env=None) -> subprocess.CompletedProcess:
    """`main(argv)` of a command line, run here as `python -m` would run it with `env` added, one thread
    (OMP_NUM_THREADS=1) and offline: its exit code, stdout and stderr (log warnings included), as `subprocess.run`
    returns them. A fresh interpreter spends ~10 s importing torch, transformers and datasets, and the CLI tests are
    most of the suite; tests of the entry points themselves and of several processes still spawn one."""
    from accelerate.state import AcceleratorState

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    log_warnings = logging.StreamHandler(err)
    log_warnings.setLevel(logging.WARNING)
    threads = torch.get_num_threads()
    code = 0
    environment = {**CLI_ENVIRONMENT, **(env or {})}
    with mock.patch.dict(os.environ, environment), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        AcceleratorState._reset_state(True)  # each run builds its own Accelerator, as a new process would
        logging.getLogger().addHandler(log_warnings)
        torch.set_num_threads(1)
        try:
            main(argv)
        except SystemExit as stop:  # as the interpreter treats it: None is 0, a message is printed and is 1
            code = stop.code if isinstance(stop.code, int) else int(stop.code is not None)
            if isinstance(stop.code, str):
                err.write(stop.code + "\n")
        finally:
            torch.set_num_threads(threads)
            logging.getLogger().removeHandler(log_warnings)
            AcceleratorState._reset_state(True)
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def train_in_process(arguments, env=None) -> subprocess.CompletedProcess:
    """`transformer-encoder train ARGUMENTS`, run in this process (see `run_in_process`)."""
    from transformer_encoder.training.run import main

    return run_in_process(main, arguments, env)
