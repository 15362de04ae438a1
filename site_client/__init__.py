"""The hospital's Flower ClientApp and its Flower-free work and egress guard."""
