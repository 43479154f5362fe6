"""argparse `type=` functions that check a number as it is parsed: a bad value stops the run with one line
(`argument --learning_rate: must be > 0, got -1`) before anything is loaded or written."""

import argparse
import math


def _number(kind, test, requirement):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}")
        if isinstance(value, float) and not math.isfinite(value) or not test(value):
            raise argparse.ArgumentTypeError(f"must be {requirement}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, lambda v: v > 0, "> 0")
non_negative_int = _number(int, lambda v: v >= 0, ">= 0")
positive_float = _number(float, lambda v: v > 0, "> 0")
non_negative_float = _number(float, lambda v: v >= 0, ">= 0")
fraction = _number(float, lambda v: 0 < v <= 1, "above 0 and at most 1")
open_unit_interval = _number(float, lambda v: 0 < v < 1, "between 0 and 1 (exclusive)")
unit_interval = _number(float, lambda v: 0 <= v < 1, "at least 0 and below 1")
closed_unit_interval = _number(float, lambda v: 0 <= v <= 1, "from 0 to 1")
percentage = _number(int, lambda v: 0 <= v < 100, "a percentage from 0 to 99")
any_float = _number(float, lambda v: True, "a finite number")
