"""Parts the model families share: encoders and their towers (HTSAT via transformers, CNN14, SLAP's tower),
projections, the ClipCap mapper and the contrastive loss. Each `configuration_*` module holds settings only."""
