"""Errors that users see: each one names the input and says what is wrong with it."""


class PengiInputError(ValueError):
    """Bad user input (an audio file, an array or a prompt), with the input named in the message."""

    def __init__(self, source: str, problem: str):
        self.source = source
        self.problem = problem
        super().__init__(f"{source}: {problem}")

    def __reduce__(self):  # pickled by name and problem: errors come back from decoding processes
        return type(self), (self.source, self.problem)
