"""Training phases of MedSynth: phase I (WGAN-GP), the ViT teacher, phase II, and the loop."""
