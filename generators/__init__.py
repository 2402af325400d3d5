"""Generators: every implementation is imported here explicitly so that it registers; an import error is loud.

    from generators import create_generator, load_generator
    gen = create_generator("flow")          # or "ddpm", "vae", "gan"
"""
from . import ddpm, flow, gan, vae  # noqa: F401  (registration side effect)
from .base import GENERATORS, DPConfig, Generator, create_generator, register_generator
from .checkpoint import load_generator

__all__ = ["GENERATORS", "DPConfig", "Generator", "create_generator", "register_generator", "load_generator"]
