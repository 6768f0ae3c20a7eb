"""graphdiff: multi-hop attention diffusion (Diffuser) on sparse patterns, on PyTorch Geometric."""
