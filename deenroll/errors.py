"""The one exception type the CLI turns into a single line on stderr."""


class UserError(Exception):
    """A problem the user can act on: printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
