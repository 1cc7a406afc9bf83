"""Sinusoid regression: MAML vs a pretrained baseline (Finn et al., 2017, 5.1)."""
