"""One pagination for every list of the API: page numbers with a bounded page size."""
from rest_framework.pagination import PageNumberPagination


class PageNumbers(PageNumberPagination):
    """`?page=N&page_size=M`: at most 500 rows a page, so no request reads a whole big table.

    Page numbers (not cursors) because the item list can be re-ordered by
    priority between two requests anyway (a retrain re-scores the pool); a
    client that needs a stable walk orders by `id`.
    """

    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500
