"""Errors raised at the package's boundaries (files, tables, user arguments)."""


class InputError(ValueError):
    """Bad user input: a file, table, column or argument that cannot be used.

    The message is one line that says what is wrong, where (file, column) and
    how to fix it. The CLI prints it and exits with code 2, without traceback.
    """


def short_repr(value) -> str:
    """A short ``repr`` of a value read from a user's file, for messages.

    Long strings, lists and mappings are cut (``[1, 2, 3, 4, ...]``), so a
    message never prints the whole of a huge value.
    """
    import reprlib

    shorter = reprlib.Repr()
    shorter.maxstring = shorter.maxother = 60
    shorter.maxlist = shorter.maxtuple = shorter.maxdict = shorter.maxset = 4
    shorter.maxlevel = 2
    shorter.maxlong = 40
    return shorter.repr(value)
