"""
``/_stasis``: stasis's own corner of the URL space, never proxied whatever the
method. Every request there passes :class:`~stasis.web.admin.access.AdminAccess`
first; then ``api/`` is the JSON API and anything else the web UI.
"""

from __future__ import annotations

from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request

from stasis.errors import NotFound
from stasis.web.admin.access import AdminAccess
from stasis.web.admin.answers import ErrorResource, send_error

__all__ = ["NO_UI", "AdminPages"]

#: The UI for a daemon built without one: every page a JSON 404.
NO_UI: IResource = ErrorResource(NotFound("no such page"))


class AdminPages(Resource):
    """
    The ``/_stasis`` resource: ``api/`` goes to ``api``, any other path to
    ``ui``, which sees itself mounted at ``/_stasis`` (its children named from there).
    """

    def __init__(self, access: AdminAccess, api: IResource, ui: IResource = NO_UI) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.access = access
        self.api = api
        self.ui = ui

    def getChildWithDefault(self, path: bytes, request: Request) -> IResource:
        refusal = self.access.refusal(request)
        if refusal is not None:
            return ErrorResource(refusal)
        if path == b"api":
            return self.api
        # The UI walks its own tree from this segment on.
        postpath, prepath = request.postpath, request.prepath
        if postpath is not None and prepath:
            postpath.insert(0, prepath.pop())
        return self.ui

    def render(self, request: Request) -> object:
        """``/_stasis`` itself (no slash): the UI's to answer (a redirect to ``/_stasis/``)."""
        refusal = self.access.refusal(request)
        if refusal is not None:
            send_error(request, refusal)
            return NOT_DONE_YET
        rendered: object = self.ui.render(request)
        return rendered
