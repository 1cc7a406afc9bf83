"""Few-shot Omniglot classification with MAML (Finn et al., 2017, section 5.2)."""
