"""Request parsers: DRF's, with bodies Django refuses (too deep, too many fields) answered as a JSON 400.

Django raises SuspiciousOperation subclasses for a form with more than
DATA_UPLOAD_MAX_NUMBER_FIELDS fields; uncaught, they become Django's HTML 400
page, which no API client expects.
"""
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from rest_framework import parsers
from rest_framework.exceptions import ParseError

_REFUSED = (TooManyFieldsSent, TooManyFilesSent, RequestDataTooBig)


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:  # json raises it for [[[[... thousands deep; DRF only catches ValueError
            raise ParseError("JSON parse error - the body is nested too deeply") from None


class _RefusalsAsParseError:
    """Django's refusals of a form body (too many fields or files, too big) as DRF's 400."""

    kind = ""

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            return super().parse(stream, media_type, parser_context)  # type: ignore[misc]
        except _REFUSED as exc:
            raise ParseError(f"{self.kind} parse error - {exc}") from None


class FormParser(_RefusalsAsParseError, parsers.FormParser):
    kind = "form"


class MultiPartParser(_RefusalsAsParseError, parsers.MultiPartParser):
    kind = "multipart"
