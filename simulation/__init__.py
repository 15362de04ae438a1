"""One-machine Flower simulation of a consortium over partitioned ISIC images."""
