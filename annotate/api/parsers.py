"""Request parsers: DRF's, with a JSON body nested too deeply for Python's decoder answered as a 400."""
from rest_framework import parsers
from rest_framework.exceptions import ParseError


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:  # json raises it for [[[[... thousands deep; DRF only catches ValueError
            raise ParseError("JSON parse error - the body is nested too deeply") from None
