"""Generation: sampling settings, the fast compiled recurrent step, streamed batched sampling, reports."""
from sashimi.generation.backends import BACKENDS, make_step
from sashimi.generation.fast import FastLM
from sashimi.generation.sampler import Generation, GenerationError, Sampler, generate
from sashimi.generation.sampling import SamplingSettings, sample

__all__ = ["BACKENDS", "FastLM", "Generation", "GenerationError", "Sampler", "SamplingSettings", "generate", "make_step", "sample"]
