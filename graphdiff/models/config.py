"""Configuration of a Diffuser model, nanoGPT style: one dataclass, commented defaults."""

from __future__ import annotations

import dataclasses
from typing import Any, Dict

from graphdiff.checks import is_integer, is_real
from graphdiff.nn.functional import check_diffusion_args
from graphdiff.patterns import Pattern, parse_pattern

POOLINGS = ("cls", "mean")
POSITIONALS = ("learned", "sinusoidal", "none")


@dataclasses.dataclass
class DiffuserConfig:
    vocab_size: int = 32  # token ids, padding (0) included
    hidden: int = 64  # model width D
    layers: int = 2  # encoder layers
    heads: int = 4  # attention heads; hidden must be divisible by heads
    ffn: int = 128  # width of the feed-forward block
    hops: int = 5  # diffusion hops K (1 with alpha=0 is plain sparse attention)
    alpha: float = 0.1  # PPR teleport probability
    kernel: str = "ppr"  # "ppr" or "heat"
    t: float = 1.0  # heat kernel time
    dropout: float = 0.1  # on embeddings, attention output and feed-forward output
    attention_dropout: float = 0.1  # on the one-hop attention A
    hop_dropout: float = 0.0  # on each hop's features inside the diffusion
    max_len: int = 512  # longest sequence (positions), CLS included
    pattern: str = (
        "diffuser(window=16, num_global=1, num_random=4)"  # graphdiff.patterns expression
    )
    pooling: str = "cls"  # "cls" (first token) or "mean" over each sequence
    num_classes: int = 2  # for sequence classification
    positional: str = "learned"  # "learned", "sinusoidal" or "none"
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 0  # padding token: its embedding row gets no gradient (RoBERTa: 1)
    # Recompute each layer in the backward pass instead of keeping its activations: the
    # activation memory of one layer instead of all, for about one more forward pass of time.
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        # NumPy scalars (from a sweep) become Python numbers: config.json takes no np.int64 or
        # np.float32. Other values are left for the checks below to name.
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and is_integer(value):
                setattr(self, field.name, int(value))
            elif field.type == "float" and is_real(value):
                setattr(self, field.name, float(value))
        for name in ("vocab_size", "hidden", "layers", "heads", "ffn", "max_len", "num_classes"):
            value = getattr(self, name)
            if not is_integer(value) or value < 1:
                raise ValueError(f"DiffuserConfig.{name} must be a positive integer, got {value!r}")
        if not is_integer(self.pad_token_id) or not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(
                f"DiffuserConfig.pad_token_id must be a token id in [0, vocab_size) = "
                f"[0, {self.vocab_size}), got {self.pad_token_id!r}"
            )
        if self.hidden % self.heads:
            raise ValueError(
                f"DiffuserConfig.hidden={self.hidden} must be divisible by heads={self.heads}"
            )
        if self.pooling not in POOLINGS:
            raise ValueError(
                f"DiffuserConfig.pooling must be one of {POOLINGS}, got {self.pooling!r}"
            )
        if self.positional not in POSITIONALS:
            raise ValueError(
                f"DiffuserConfig.positional must be one of {POSITIONALS}, got {self.positional!r}"
            )
        for name in ("dropout", "attention_dropout", "hop_dropout"):
            value = getattr(self, name)
            if not is_real(value) or not 0.0 <= value < 1.0:
                raise ValueError(f"DiffuserConfig.{name} must lie in [0, 1), got {value!r}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise TypeError(
                f"DiffuserConfig.gradient_checkpointing must be a bool, "
                f"got {self.gradient_checkpointing!r}"
            )
        if not is_real(self.layer_norm_eps) or not self.layer_norm_eps > 0:
            raise ValueError(
                f"DiffuserConfig.layer_norm_eps must be a number > 0, got {self.layer_norm_eps!r}"
            )
        # The layer's own checks, here so that a bad value fails before any data is built.
        check_diffusion_args(self.hops, self.alpha, self.kernel, self.t, self.hop_dropout)
        self.build_pattern()  # fail early on a bad expression

    def build_pattern(self) -> Pattern:
        return parse_pattern(self.pattern)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "DiffuserConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown DiffuserConfig fields {unknown}; valid: {sorted(known)}")
        return cls(**values)

    # -- presets ------------------------------------------------------------------------------
    @classmethod
    def tiny(cls, **overrides: Any) -> "DiffuserConfig":
        """A few thousand parameters per layer: tests and the CPU demo."""
        return cls(**{**dict(hidden=32, layers=2, heads=2, ffn=64, max_len=512), **overrides})

    @classmethod
    def small(cls, **overrides: Any) -> "DiffuserConfig":
        """CPU-sized experiments on sequences of a few thousand tokens."""
        values = dict(
            hidden=128,
            layers=4,
            heads=4,
            ffn=256,
            max_len=4096,
            pattern="diffuser(window=64, num_global=8, num_random=8)",
        )
        return cls(**{**values, **overrides})

    @classmethod
    def paper_base(cls, **overrides: Any) -> "DiffuserConfig":
        """The official Diffuser configuration (RoBERTa-base sized, post-LayerNorm, GELU)."""
        values = dict(
            vocab_size=50265,
            hidden=768,
            layers=12,
            heads=12,
            ffn=3072,
            hops=5,
            alpha=0.1,
            dropout=0.1,
            attention_dropout=0.1,
            max_len=4096,
            pattern="diffuser(window=64, num_global=64, num_random=64)",
        )
        return cls(**{**values, **overrides})


MODEL_PRESETS = {
    "tiny": DiffuserConfig.tiny,
    "small": DiffuserConfig.small,
    "paper_base": DiffuserConfig.paper_base,
}


def preset_config(name: str, **overrides: Any) -> DiffuserConfig:
    """A preset by name; an unknown name lists the valid ones."""
    if name not in MODEL_PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(MODEL_PRESETS)}")
    return MODEL_PRESETS[name](**overrides)
