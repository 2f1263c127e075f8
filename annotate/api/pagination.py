"""One pagination for every list of the API: page numbers with a bounded page size."""
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination


class PageNumbers(PageNumberPagination):
    """`?page=N&page_size=M`: at most 500 rows a page, so no request reads a whole big table.

    Page numbers (not cursors) because the item list can be re-ordered by
    priority between two requests anyway (a retrain re-scores the pool); a
    client that needs a stable walk orders by `id`. A page size above 500
    gives 500 (documented); one that is not a whole number of at least 1 is
    refused (DRF would fall back to 50 without a word).
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def get_page_size(self, request) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if size < 1:
            raise ValidationError({self.page_size_query_param: [
                f"expected a whole number from 1 to {self.max_page_size}, got {raw[:40]!r}"]})
        return min(size, self.max_page_size)

    def get_schema_operation_parameters(self, view):
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"]["minimum"] = 1
                parameter["description"] = f"Rows a page, 1 to {self.max_page_size} (more gives {self.max_page_size})."
            if parameter["name"] == self.page_query_param:
                parameter["schema"]["minimum"] = 1
        return parameters
