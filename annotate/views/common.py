"""What every project page does first: sign-in, the HTTP methods it answers, and the access rule.

`project_view(action)` wraps a view taking `(request, project, ...)`: it
answers 405 to methods the page does not take (a PUT or DELETE is never
served as a GET), sends anonymous users to the login page, and looks the
project up through `annotate.access.project_for`, so an outsider gets the
same 404 whether the project exists or not and a member without the role
gets 403.
"""
from __future__ import annotations

from functools import wraps

from django.contrib.auth.decorators import login_required
from django.views.decorators.http import require_http_methods

from annotate.access import Action, project_for

READ = ("GET", "HEAD")
FORM = ("GET", "HEAD", "POST")
WRITE = ("POST",)


def page_view(methods=READ):
    """A signed-in page that answers only `methods` (no project in its URL)."""
    def decorate(view):
        return login_required(require_http_methods(list(methods))(view))
    return decorate


def project_view(action: Action, methods=READ):
    """A signed-in page of one project (URL argument `pk`), called as `view(request, project, **kwargs)`."""
    def decorate(view):
        @wraps(view)
        def with_project(request, pk, **kwargs):
            return view(request, project_for(request.user, pk, action), **kwargs)
        return page_view(methods)(with_project)
    return decorate
