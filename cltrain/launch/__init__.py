"""Sweeps and launchers: expand a grid of overrides into run folders and run them here or on SLURM."""
