"""Named errors of the human side, each with a message a user can act on."""


class WorkbenchError(Exception):
    """Base of errors shown to users as they are."""


class NotAMember(WorkbenchError):
    pass


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
