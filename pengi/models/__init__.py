"""The model families, one folder each (config, model, processor, converters): `pengi` (generation), `clap`
(contrastive), `slap` (variable-duration audio); and what they share (`pretrained`, `contrastive`)."""
