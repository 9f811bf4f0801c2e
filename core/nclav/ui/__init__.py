"""The web dashboard: pages, assets and session cookies served from the one route table.

``nclav.ui.routes.register_dashboard(router, service)`` is the one call
``nclav.api.routes.build_router`` makes; ``nclav.ui.session`` holds the cookie and CSRF
checks, ``nclav.ui.models`` the JSON shapes, ``static/`` the page's files. Nothing is
imported here, so ``nclav.api.responses`` can read the models without an import cycle.
"""
