"""State-space sequence layers: S4 (DPLR) and S4D (diagonal), with their kernels and recurrences."""
from sashimi.ssm.kernel import DiagKernel, DPLRKernel
from sashimi.ssm.optim import param_groups
from sashimi.ssm.s4 import S4

__all__ = ["S4", "DiagKernel", "DPLRKernel", "param_groups"]
