"""Errors raised at the package's boundaries (files, tables, user arguments)."""


class InputError(ValueError):
    """Bad user input: a file, table, column or argument that cannot be used.

    The message is one line that says what is wrong, where (file, column) and
    how to fix it. The CLI prints it and exits with code 2, without traceback.
    """
