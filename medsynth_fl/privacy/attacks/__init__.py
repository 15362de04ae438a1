"""Membership attacks: pure score functions (larger = member) and their models.

``logan`` (white- and black-box discriminator attacks), ``recovery`` (latent
recovery, seed 004) and ``distance`` (pairwise and distribution attacks,
seed 003).
"""

from . import distance, logan, recovery

__all__ = ["distance", "logan", "recovery"]
