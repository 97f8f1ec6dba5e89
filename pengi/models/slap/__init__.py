"""The SLAP family: configuration, model, processor, presets and converters."""
