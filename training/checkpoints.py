"""Checkpoints that are whole or absent, never half-written, and the output folder guard.

A checkpoint is written under a temporary name and renamed into `checkpoints/step_N` only once every process has
finished writing it and `trainer_state.json` (the step and data position) is in place: an interrupted write
leaves only a `.tmp-` folder, which is never taken for a checkpoint and is removed by the next save.
"""

import json
import os
import re
import shlex
import shutil
import signal
from pathlib import Path

import torch

from .errors import UsageError

STATE_FILE = "trainer_state.json"
CHECKPOINT = re.compile(r"^step_(\d+)$")


def checkpoints_dir(output_dir) -> Path:
    return Path(output_dir) / "checkpoints"


def whole_checkpoints(output_dir) -> list[Path]:
    """The complete checkpoints in output_dir, oldest first."""
    folder = checkpoints_dir(output_dir)
    found = [p for p in folder.iterdir() if CHECKPOINT.match(p.name) and (p / STATE_FILE).is_file()] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(CHECKPOINT.match(p.name).group(1)))


def resolve_resume(args) -> Path | None:
    """The checkpoint to resume from, or a UsageError when --resume_from_checkpoint points at nothing whole."""
    if not args.resume_from_checkpoint:
        return None
    if args.resume_from_checkpoint == "latest":
        found = whole_checkpoints(args.output_dir)
        if not found:
            raise UsageError(
                f"--resume_from_checkpoint latest: {checkpoints_dir(args.output_dir)} holds no whole checkpoint "
                "to resume from. Start without the option, or name a checkpoint folder."
            )
        return found[-1]
    path = Path(args.resume_from_checkpoint)
    if not (path / STATE_FILE).is_file():
        raise UsageError(
            f"--resume_from_checkpoint {path}: not a whole checkpoint (no {STATE_FILE} in it). Use a "
            f"checkpoints/step_N folder of an earlier run, or 'latest'."
        )
    return path


def check_output_dir(args):
    """Refuse an output_dir that holds anything (another run) unless resuming or told to overwrite."""
    output_dir = Path(args.output_dir)
    if args.resume_from_checkpoint or args.overwrite_output_dir:
        return
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise UsageError(
            f"The output folder {output_dir} already holds files (another run?). Choose a new --output_dir, "
            "continue that run with --resume_from_checkpoint latest, or pass --overwrite_output_dir."
        )


def save_checkpoint(accelerator, output_dir, step: int, state: dict, total_limit: int):
    """accelerator.save_state (model, optimizer, scheduler, RNG of every process) into checkpoints/step_N."""
    folder = checkpoints_dir(output_dir)
    final = folder / f"step_{step}"
    temporary = folder / f".tmp-step_{step}"
    if accelerator.is_main_process:
        for stale in folder.glob(".tmp-*"):
            shutil.rmtree(stale)
        temporary.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / STATE_FILE).write_text(json.dumps(state, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.replace(temporary, final)  # atomic: the checkpoint appears whole or not at all
        if total_limit > 0:
            for old in whole_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def load_state(checkpoint: Path) -> dict:
    return json.loads((checkpoint / STATE_FILE).read_text())


class Interruption:
    """Ctrl-C (SIGINT) while training: the step under way finishes, then the run saves a checkpoint, prints the
    command that resumes it, and exits with 130. A second Ctrl-C stops at once."""

    def __enter__(self):
        self.requested = False
        self.previous = signal.signal(signal.SIGINT, self._request)
        return self

    def _request(self, signum, frame):
        self.requested = True
        signal.signal(signal.SIGINT, self.previous)

    def __exit__(self, *exc):
        signal.signal(signal.SIGINT, self.previous)

    def stop(self, accelerator) -> bool:
        """Whether any process was interrupted: all stop at the same step, so that they save together."""
        if accelerator.num_processes == 1:
            return self.requested
        flag = torch.tensor(float(self.requested), device=accelerator.device)
        return accelerator.reduce(flag, "sum").item() > 0


def resume_command(argv: list[str], num_processes: int) -> str:
    """The command line that continues an interrupted run from its newest checkpoint."""
    words, skip = [], False
    for word in argv:
        if skip:
            skip = False
        elif word in ("--resume_from_checkpoint", "--hub_token"):
            skip = True
        elif not word.startswith(("--resume_from_checkpoint=", "--hub_token=", "--overwrite_output_dir")):
            words.append(word)
    # accelerate launch runs a module, not a console script: several processes resume through the `-m` form.
    launcher = (
        "transformer-encoder train"
        if num_processes == 1
        else f"accelerate launch --num_processes {num_processes} -m transformer_encoder.training"
    )
    return f"{launcher} {shlex.join(words)} --resume_from_checkpoint latest"
