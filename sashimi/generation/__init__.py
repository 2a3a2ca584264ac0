"""Generation: sampling settings, the fast compiled recurrent step, streamed batched sampling, reports."""
from sashimi.generation.fast import FastLM
from sashimi.generation.sampler import Generation, GenerationError, Sampler, generate
from sashimi.generation.sampling import SamplingSettings, sample

__all__ = ["FastLM", "Generation", "GenerationError", "Sampler", "SamplingSettings", "generate", "sample"]
