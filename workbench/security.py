"""A Content-Security-Policy header on every response (Django 5.2 has no built-in CSP).

The policy is `settings.CONTENT_SECURITY_POLICY` (directive name to sources).
A view that cannot live with it is named, by URL name, in
`settings.CONTENT_SECURITY_POLICY_EXCEPTIONS` with the directives it replaces,
so an exception stays as narrow as one page.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from django.conf import settings
from django.http import HttpRequest, HttpResponse

HEADER = "Content-Security-Policy"

Policy = Mapping[str, Sequence[str]]


def policy_header(policy: Policy) -> str:
    """The header value of a policy: ``"default-src 'self'; img-src 'self' data:"``.

    A directive with no sources (``"upgrade-insecure-requests": []``) is written bare.
    """
    return "; ".join(" ".join([name, *sources]) for name, sources in policy.items())


class ContentSecurityPolicyMiddleware:
    """Sets the policy header unless the view set its own; per-URL-name exceptions replace single directives."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        base: Policy = settings.CONTENT_SECURITY_POLICY
        self.default = policy_header(base)
        self.by_url_name = {
            name: policy_header({**base, **replaced})
            for name, replaced in settings.CONTENT_SECURITY_POLICY_EXCEPTIONS.items()
        }

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if HEADER not in response:
            match = getattr(request, "resolver_match", None)
            name = match.view_name if match is not None else None
            response[HEADER] = self.by_url_name.get(name, self.default)
        return response
