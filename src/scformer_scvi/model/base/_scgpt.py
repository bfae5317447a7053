"""Import of scGPT checkpoints."""


class ScGPTMixin:
    """``from_scgpt_checkpoint``."""
