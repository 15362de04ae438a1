"""Training phases of MedSynth.

Phase I (WGAN-GP), the ViT teacher, phase II, and the loop.
"""
