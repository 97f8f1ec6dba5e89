"""Generated sounds with known contents, for training and testing offline: one-sound clips (`tones`) and
multi-event scenes with captions and questions (`scenes`)."""

from pengi.synthetic.tones import QUESTIONS, SOURCES, TONAL, Example, example, render

__all__ = ["QUESTIONS", "SOURCES", "TONAL", "Example", "example", "render"]
