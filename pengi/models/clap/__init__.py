"""The CLAP family: configuration, model, processor, presets and converters."""
