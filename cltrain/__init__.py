"""cltrain: continual multi-task training on PyTorch Lightning."""
