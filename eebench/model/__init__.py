"""A multi-exit wrapper around any `transformers` encoder, and how to build, save and load it."""

from eebench.model.multiexit import ExitHead, ExitOutputs, MultiExitModel

__all__ = ["ExitHead", "ExitOutputs", "MultiExitModel"]
