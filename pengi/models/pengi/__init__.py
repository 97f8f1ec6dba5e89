"""The Pengi family: configuration, model, processor, presets and converters."""
