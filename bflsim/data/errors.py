"""The one exception the data layer raises for bad input."""


class DataError(ValueError):
    """A data file, column, label or split is missing or wrong.

    The message names the file, column or value and says what was expected.
    """
