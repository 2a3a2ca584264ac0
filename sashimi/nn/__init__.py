"""Building blocks of the SaShiMi backbone: residual S4 / feed-forward blocks and causal pooling."""
from sashimi.nn.blocks import FFBlock, ResidualS4Block
from sashimi.nn.pool import DownPool, UpPool

__all__ = ["ResidualS4Block", "FFBlock", "DownPool", "UpPool"]
