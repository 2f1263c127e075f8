"""URL converters: `<id:pk>` matches only numbers a database id can be (1 .. 2**63-1).

Django's `<int:...>` matches any digits, and a 31-digit id overflowed SQLite's
INTEGER in the query (a 500); a URL with such a number now simply matches no
route (404), like any other id that names nothing.
"""
from annotate.access import valid_id


class DatabaseId:
    regex = "[0-9]{1,19}"

    def to_python(self, value: str) -> int:
        number = valid_id(value)
        if number is None:
            raise ValueError(f"{value!r} is not a database id")
        return number

    def to_url(self, value) -> str:
        return str(value)
