"""pengi's training recipes, a second package beside the library in the same wheel (as open_clip ships
`open_clip_train`): each module is one readable entry point, run as ``python -m pengi_recipes.<name>``, with YAML
configs per family in ``configs/<family>/`` and launch configs for ``accelerate launch`` in ``accelerate/``."""
