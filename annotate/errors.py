"""Named errors of the human side, each with a message a user can act on."""
from django.core.exceptions import PermissionDenied
from django.http import Http404


class WorkbenchError(Exception):
    """Base of errors shown to users as they are."""


class ProjectNotFound(WorkbenchError, Http404):
    """No such project, or one the user may not see: the two are never told apart.

    An Http404, so Django's views and DRF answer it with 404 without a handler.
    """

    MESSAGE = "No such project."

    def __init__(self, message: str = MESSAGE) -> None:
        super().__init__(message)


class NotAMember(ProjectNotFound):
    """The user is no member of the project (as far as they may know, it does not exist)."""


class NotAllowed(WorkbenchError, PermissionDenied):
    """A member asked for something their role does not allow (403)."""


class QueueClosed(WorkbenchError):
    """Nothing can be served: the reason says why (budget, quota, queue empty)."""

    def __init__(self, reason: str, code: str) -> None:
        super().__init__(reason)
        self.code = code


class LeaseError(WorkbenchError):
    """An annotation or skip names an item the annotator does not hold."""


class UnknownLabel(WorkbenchError):
    pass


class NothingToUndo(WorkbenchError):
    pass
